"""The two documents a proof of liabilities publishes: the statement and one account's proof.

Both are JSON. Amounts are exact integers of 1e-16 cash units written as decimal strings
(``*_e16``: a JSON number that large loses digits in many JSON readers), each with a
plain decimal beside it for people. Hashes are lowercase hex. Neither document carries a
timestamp, so a rebuild from the same journal and seed writes the same bytes.
"""

from __future__ import annotations

import msgspec

__all__ = [
    "FundFigures",
    "PathNode",
    "Proof",
    "Statement",
    "amount_pairs",
    "decimal_e16",
    "decode_proof",
    "decode_statement",
]


class FundFigures(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The insurance fund at the statement's seq."""

    equity_e16: str  # cash plus positions at the marks; may be negative
    equity: str
    cash_e16: str
    cash: str


class Statement(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the operator publishes: the root and total, and where in the journal."""

    encoding: str  # "clearing-pol/1": the leaf and node encoding (clearing.proof._tree)
    hash_function: str  # "sha256"
    root_hash: str
    total_liabilities_e16: str  # the root's sum: every account's max(0, equity)
    total_liabilities: str
    account_count: int  # accounts in the tree: every non-system account
    tree_depth: int
    seq: int  # the journal seq the ledger is taken at
    journal_chain_hash: str  # the journal's chain hash at that seq
    insurance_fund: FundFigures
    fee_pool_cash_e16: str
    fee_pool_cash: str
    bad_debt_cash_e16: str  # <= 0: losses nobody covered
    bad_debt_cash: str


class PathNode(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A sibling on the way to the root: its hash and its sum, nothing else."""

    hash: str
    sum_e16: str


class Proof(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One account's inclusion proof. ``path[0]`` is the leaf's sibling; ``leaf_index``
    says on which side each sibling lies (bit ``l`` set: the sibling is on the left)."""

    encoding: str
    hash_function: str
    root_hash: str
    seq: int
    journal_chain_hash: str
    account_count: int
    account: str
    salt: str
    liability_e16: str
    liability: str
    leaf_index: int
    path: list[PathNode]


def decode_statement(data: bytes) -> Statement:
    """A statement from its JSON bytes; msgspec.ValidationError/DecodeError if malformed."""
    return msgspec.json.decode(data, type=Statement)


def decode_proof(data: bytes) -> Proof:
    """A proof from its JSON bytes; msgspec.ValidationError/DecodeError if malformed."""
    return msgspec.json.decode(data, type=Proof)


def decimal_e16(amount_e16: int) -> str:
    """The plain decimal beside an ``*_e16`` amount: no trailing zeros (``"30.6"``).

    The same text as ``clearing.engine.money.format_e16`` (a test holds them equal); kept
    here so that checking a proof needs nothing of the ledger's packages."""
    sign = "-" if amount_e16 < 0 else ""
    whole, frac = divmod(abs(amount_e16), 10**16)
    return f"{sign}{whole}" + (f".{frac:016d}".rstrip("0") if frac else "")


def amount_pairs(document: Statement | Proof) -> list[tuple[str, str, str]]:
    """Every ``(name, e16 integer text, decimal text)`` pair the document carries."""
    if isinstance(document, Proof):
        return [("liability", document.liability_e16, document.liability)]
    fund = document.insurance_fund
    return [
        ("total_liabilities", document.total_liabilities_e16, document.total_liabilities),
        ("insurance_fund.equity", fund.equity_e16, fund.equity),
        ("insurance_fund.cash", fund.cash_e16, fund.cash),
        ("fee_pool_cash", document.fee_pool_cash_e16, document.fee_pool_cash),
        ("bad_debt_cash", document.bad_debt_cash_e16, document.bad_debt_cash),
    ]
