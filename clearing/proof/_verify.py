"""Checking one account's proof against a published statement. Pure: no I/O.

Every check that fails is reported as one sentence saying what is wrong; the first one
found wins. A proof verifies only if it is for this statement (same encoding, root, seq
and chain hash), its leaf is recomputed from the account's own id, salt and liability,
every sum on the path is a non-negative 256-bit integer, every sibling lying wholly in
the padding is the padding constant with sum 0, and the walk up ends exactly at the
statement's root hash and total.
"""

from __future__ import annotations

import re
from typing import Final, NamedTuple

from clearing.errors import ProofInvalid
from clearing.proof._documents import Proof, Statement, amount_pairs, decimal_e16
from clearing.proof._tree import (
    EMPTY_HASHES,
    ENCODING,
    HASH_NAME,
    MAX_LEAVES,
    MAX_SUM,
    SALT_BYTES,
    leaf_hash,
    node_hash,
    tree_depth,
)

__all__ = ["ProofInvalid", "Verified", "verify_proof"]

_INTEGER_RE: Final = re.compile(r"-?[0-9]{1,80}")
_HEX_RE: Final = re.compile(r"[0-9a-f]*")


class Verified(NamedTuple):
    """A proof that verified: the facts it establishes."""

    account: str
    liability_e16: int
    root_hash: str
    total_e16: int
    seq: int


def verify_proof(proof: Proof, statement: Statement) -> Verified:
    """Check ``proof`` against ``statement``; ProofInvalid (one line) if it fails."""
    _check_same_statement(proof, statement)
    liability_e16 = _amount(proof.liability_e16, "the account's liability")
    salt = _hex(proof.salt, "the salt", SALT_BYTES)
    node = leaf_hash(proof.account, salt, liability_e16)
    total_e16 = liability_e16
    index = proof.leaf_index
    for level, sibling in enumerate(proof.path):
        sibling_hash = _hex(sibling.hash, f"the level {level} sibling's hash", 32)
        sibling_sum = _amount(sibling.sum_e16, f"the level {level} sibling's sum")
        sibling_index = (index >> level) ^ 1
        if sibling_index << level >= proof.account_count and (
            sibling_hash != EMPTY_HASHES[level] or sibling_sum != 0
        ):
            raise ProofInvalid(
                f"the level {level} sibling lies past the last account but is not the "
                f"padding constant with sum 0"
            )
        if (index >> level) & 1:
            node = node_hash(sibling_hash, sibling_sum, node, total_e16)
        else:
            node = node_hash(node, total_e16, sibling_hash, sibling_sum)
        total_e16 += sibling_sum
        if total_e16 > MAX_SUM:
            raise ProofInvalid(f"the level {level + 1} node's sum exceeds 2^256-1")
    if node.hex() != statement.root_hash:
        raise ProofInvalid(
            f"the path does not lead to the statement's root: it gives {node.hex()}, the "
            f"statement has {statement.root_hash[:80]!r}"
        )
    statement_total = _amount(statement.total_liabilities_e16, "the statement's total")
    if total_e16 != statement_total:
        raise ProofInvalid(
            f"the path sums to {total_e16} e16 but the statement's total is {statement_total!r:.80}"
        )
    return Verified(proof.account, liability_e16, statement.root_hash, total_e16, statement.seq)


def _check_same_statement(proof: Proof, statement: Statement) -> None:
    for name, value in (("proof", proof), ("statement", statement)):
        if value.encoding != ENCODING or value.hash_function != HASH_NAME:
            raise ProofInvalid(
                f"the {name} uses encoding {value.encoding!r} with {value.hash_function!r}; "
                f"this verifier knows only {ENCODING!r} with {HASH_NAME!r}"
            )
        _check_decimals(name, value)
    for field in ("seq", "journal_chain_hash", "account_count", "root_hash"):
        mine, theirs = getattr(proof, field), getattr(statement, field)
        if mine != theirs:
            # repr: a value read from a file may hold anything, newlines included, and
            # the verdict stays one line
            raise ProofInvalid(
                f"the proof is for another statement: its {field} is {mine!r:.80}, the "
                f"statement's is {theirs!r:.80}"
            )
    if not 1 <= statement.account_count <= MAX_LEAVES:
        raise ProofInvalid(
            f"the statement's account count {statement.account_count} is outside 1..2^63"
        )
    depth = tree_depth(statement.account_count)
    if statement.tree_depth != depth:
        raise ProofInvalid(
            f"the statement's tree depth {statement.tree_depth} does not fit its "
            f"{statement.account_count} accounts (expected {depth})"
        )
    if len(proof.path) != depth:
        raise ProofInvalid(f"the path has {len(proof.path)} levels; the tree has {depth}")
    if not 0 <= proof.leaf_index < proof.account_count:
        raise ProofInvalid(
            f"leaf index {proof.leaf_index} is outside the {proof.account_count} accounts"
        )


def _check_decimals(name: str, document: Proof | Statement) -> None:
    """The decimals written for people must say what the exact amounts say."""
    for field, exact, decimal in amount_pairs(document):
        if _INTEGER_RE.fullmatch(exact) is None or decimal_e16(int(exact)) != decimal:
            raise ProofInvalid(
                f"the {name}'s {field} reads {decimal[:40]!r} but its exact amount is "
                f"{exact[:80]!r} e16"
            )


def _amount(text: str, what: str) -> int:
    if _INTEGER_RE.fullmatch(text) is None:
        raise ProofInvalid(f"{what} {text[:40]!r} is not an integer of e16 units")
    amount = int(text)
    if amount < 0:
        raise ProofInvalid(f"{what} is negative ({amount}): no node of a sum tree may be")
    if amount > MAX_SUM:
        raise ProofInvalid(f"{what} exceeds 2^256-1")
    return amount


def _hex(text: str, what: str, size: int) -> bytes:
    if len(text) != 2 * size or _HEX_RE.fullmatch(text) is None:
        raise ProofInvalid(f"{what} is not {size} bytes of lowercase hex")
    return bytes.fromhex(text)
