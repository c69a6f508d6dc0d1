"""The Merkle sum tree: leaf commitments, node hashes, building, paths. Pure: no I/O.

Encoding ``clearing-pol/1`` (every hash is SHA-256; every sum a 256-bit unsigned
big-endian integer, so a negative or oversized sum cannot even be encoded):

- account leaf: ``H(0x00 || u32(len(id)) || id (UTF-8) || salt (32 bytes) || u256(liability))``
- padding leaf: ``H(0x02 || "clearing-pol/1 padding")``, sum 0, one public constant
- inner node:   ``H(0x01 || left hash || u256(left sum) || right hash || u256(right sum))``,
  sum = left sum + right sum

The tag bytes keep the three kinds apart (a leaf can never be passed off as a node, nor
padding as an account). An inner node hashes both children's sums, not only their total:
with only the total bound, an operator can move value between siblings and show each
user a smaller sibling sum (the flaw of Maxwell's original scheme). Leaves are ordered by
their hash, which depends on the account's secret salt, so a leaf's neighbours are
random accounts and its position says nothing about its id. The tree is padded to a
power of two on the right, so every subtree lying wholly beyond the last account is a
known constant (``EMPTY_HASHES``) that a verifier checks.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Final, NamedTuple

from clearing.heap import collector_paused

__all__ = [
    "EMPTY_HASHES",
    "ENCODING",
    "HASH_NAME",
    "MAX_LEAVES",
    "MAX_SUM",
    "PADDING_HASH",
    "SALT_BYTES",
    "Leaf",
    "SumTree",
    "account_salt",
    "build_tree",
    "leaf_hash",
    "node_hash",
    "sum_bytes",
    "tree_depth",
]

ENCODING: Final = "clearing-pol/1"
HASH_NAME: Final = "sha256"
SALT_BYTES: Final = 32
SUM_BYTES: Final = 32
# Sums are encoded in 32 bytes: anything larger (or negative) is refused, never wrapped.
MAX_SUM: Final = (1 << (8 * SUM_BYTES)) - 1
_LEAF_TAG: Final = b"\x00"
_NODE_TAG: Final = b"\x01"
_PADDING_TAG: Final = b"\x02"
_SALT_LABEL: Final = b"clearing-pol/1 salt\x00"
_SHA256_BLOCK: Final = 64
# Depth 63 is 9.2e18 leaves, far past any ledger; it bounds the constant table below.
_MAX_DEPTH: Final = 63
MAX_LEAVES: Final = 1 << _MAX_DEPTH

PADDING_HASH: Final = hashlib.sha256(_PADDING_TAG + b"clearing-pol/1 padding").digest()


def sum_bytes(amount: int) -> bytes:
    """A sum as the tree encodes it; ValueError if it is negative or too large."""
    if not 0 <= amount <= MAX_SUM:
        raise ValueError(f"sum {amount} is outside 0..2^256-1")
    return amount.to_bytes(SUM_BYTES, "big")


def node_hash(left_hash: bytes, left_sum: int, right_hash: bytes, right_sum: int) -> bytes:
    """An inner node's hash: it binds both children's hashes and both their sums."""
    return hashlib.sha256(
        _NODE_TAG + left_hash + sum_bytes(left_sum) + right_hash + sum_bytes(right_sum)
    ).digest()


def _empty_hashes() -> tuple[bytes, ...]:
    hashes = [PADDING_HASH]
    for _ in range(_MAX_DEPTH):
        hashes.append(node_hash(hashes[-1], 0, hashes[-1], 0))
    return tuple(hashes)


# EMPTY_HASHES[h]: the hash of a subtree of height h holding only padding (sum 0).
EMPTY_HASHES: Final = _empty_hashes()


def account_salt(seed: bytes, account_id: str) -> bytes:
    """The account's salt: HMAC-SHA256 of its id under the operator's secret seed, so a
    rebuild from the same journal and seed gives the same tree, and without the seed
    nobody can test a guessed (id, liability) against a leaf hash."""
    return hmac.digest(seed, _SALT_LABEL + account_id.encode(), "sha256")


def _salter(seed: bytes) -> Callable[[bytes], bytes]:
    """``account_salt`` for many ids (UTF-8 encoded) under one seed: HMAC computed from
    its two padded-key hash states, prepared once (RFC 2104). ``hmac.digest`` redoes the
    key set-up per call, which was half of the time of building a 1M-account tree."""
    key = hashlib.sha256(seed).digest() if len(seed) > _SHA256_BLOCK else seed
    key = key.ljust(_SHA256_BLOCK, b"\x00")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key) + _SALT_LABEL)
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))

    def salt_of(ident: bytes) -> bytes:
        inner_hash = inner.copy()
        inner_hash.update(ident)
        outer_hash = outer.copy()
        outer_hash.update(inner_hash.digest())
        return outer_hash.digest()

    return salt_of


def leaf_hash(account_id: str, salt: bytes, liability_e16: int) -> bytes:
    """An account leaf's hash: commits to the id, the salt and the liability."""
    ident = account_id.encode()
    return hashlib.sha256(
        _LEAF_TAG + len(ident).to_bytes(4, "big") + ident + salt + sum_bytes(liability_e16)
    ).digest()


def tree_depth(leaf_count: int) -> int:
    """Levels above the leaves: the smallest d with 2^d >= leaf_count (0 for 0 or 1)."""
    return max(0, leaf_count - 1).bit_length()


# Leaf fields by position: itemgetter in C is faster than the NamedTuple properties.
_BY_HASH: Final = operator.itemgetter(0)
_BY_LIABILITY: Final = operator.itemgetter(3)


class Leaf(NamedTuple):
    """One account's place in the tree (the hash first: leaves sort by it)."""

    hash: bytes
    account_id: str
    salt: bytes
    liability_e16: int


class SumTree(NamedTuple):
    """The built tree. ``hashes[l]`` / ``sums[l]`` hold level ``l`` (0 = the leaves, in
    tree order) up to its last node that covers an account; beyond that every node of
    level ``l`` is ``EMPTY_HASHES[l]`` with sum 0."""

    leaves: list[Leaf]
    hashes: list[list[bytes]]
    sums: list[list[int]]

    @property
    def depth(self) -> int:
        return len(self.hashes) - 1

    @property
    def root_hash(self) -> bytes:
        return self.hashes[-1][0] if self.hashes[-1] else EMPTY_HASHES[0]

    @property
    def total_e16(self) -> int:
        return self.sums[-1][0] if self.sums[-1] else 0

    def node(self, level: int, index: int) -> tuple[bytes, int]:
        """Hash and sum of node ``index`` of ``level`` (padding beyond the accounts)."""
        if index < len(self.hashes[level]):
            return self.hashes[level][index], self.sums[level][index]
        return EMPTY_HASHES[level], 0

    def iter_leaves(self) -> Iterator[Leaf]:
        return iter(self.leaves)


def build_tree(seed: bytes, liabilities: Iterable[tuple[str, int]]) -> SumTree:
    """The sum tree over ``(account id, liability e16)`` pairs (ids unique, liabilities
    >= 0), leaves ordered by leaf hash. ``leaf_hash`` and ``account_salt``, inlined."""
    with collector_paused():
        return _build(seed, liabilities)


def _build(seed: bytes, liabilities: Iterable[tuple[str, int]]) -> SumTree:
    salt_of = _salter(seed)
    sha256 = hashlib.sha256
    make_leaf = tuple.__new__  # Leaf(...) runs Python code per call; this does not
    leaves: list[Leaf] = []
    for account_id, liability_e16 in liabilities:
        if not 0 <= liability_e16 <= MAX_SUM:
            raise ValueError(f"account {account_id!r}: liability {liability_e16} out of range")
        ident = account_id.encode()
        salt = salt_of(ident)
        commitment = sha256(
            b"".join(
                (
                    _LEAF_TAG,
                    len(ident).to_bytes(4, "big"),
                    ident,
                    salt,
                    liability_e16.to_bytes(32, "big"),
                )
            )
        ).digest()
        leaves.append(make_leaf(Leaf, (commitment, account_id, salt, liability_e16)))
    # By hash alone (two leaves never share one: the ids differ). A key is 2.5x faster
    # than comparing the tuples, which tests each first element for equality first.
    leaves.sort(key=_BY_HASH)
    hashes = [list(map(_BY_HASH, leaves))]
    sums = [list(map(_BY_LIABILITY, leaves))]
    for level in range(tree_depth(len(leaves))):
        parent_hashes, parent_sums = _parent_level(hashes[-1], sums[-1], level)
        hashes.append(parent_hashes)
        sums.append(parent_sums)
    tree = SumTree(leaves, hashes, sums)
    sum_bytes(tree.total_e16)  # the root's sum must be encodable too
    return tree


def _parent_level(
    hashes: list[bytes], sums: list[int], level: int
) -> tuple[list[bytes], list[int]]:
    """The level above ``level``: one node per pair, the last one padded if unpaired."""
    if len(hashes) % 2:
        hashes = [*hashes, EMPTY_HASHES[level]]
        sums = [*sums, 0]
    encoded = [amount.to_bytes(SUM_BYTES, "big") for amount in sums]  # raises if < 0
    sha256 = hashlib.sha256
    tag = _NODE_TAG
    parent_hashes = [
        sha256(b"".join((tag, hashes[i], encoded[i], hashes[i + 1], encoded[i + 1]))).digest()
        for i in range(0, len(hashes), 2)
    ]
    parent_sums = [sums[i] + sums[i + 1] for i in range(0, len(sums), 2)]
    return parent_hashes, parent_sums
