"""The statement and the proofs of a built tree, as documents. Pure: no I/O."""

from __future__ import annotations

from typing import Protocol

from clearing.proof._documents import FundFigures, PathNode, Proof, Statement, decimal_e16
from clearing.proof._ledger import LedgerLiabilities
from clearing.proof._tree import ENCODING, HASH_NAME, Leaf, SumTree

__all__ = ["NodeSource", "make_proof", "make_statement"]


class NodeSource(Protocol):
    """Anything that answers a node's hash and sum: the tree in memory, or its file."""

    def node(self, level: int, index: int) -> tuple[bytes, int]: ...


def make_statement(tree: SumTree, ledger: LedgerLiabilities, chain_hash: bytes) -> Statement:
    figures = ledger.figures
    return Statement(
        encoding=ENCODING,
        hash_function=HASH_NAME,
        root_hash=tree.root_hash.hex(),
        total_liabilities_e16=str(tree.total_e16),
        total_liabilities=decimal_e16(tree.total_e16),
        account_count=len(tree.leaves),
        tree_depth=tree.depth,
        seq=ledger.seq,
        journal_chain_hash=chain_hash.hex(),
        insurance_fund=FundFigures(
            equity_e16=str(figures.fund_equity_e16),
            equity=decimal_e16(figures.fund_equity_e16),
            cash_e16=str(figures.fund_cash_e16),
            cash=decimal_e16(figures.fund_cash_e16),
        ),
        fee_pool_cash_e16=str(figures.fee_pool_cash_e16),
        fee_pool_cash=decimal_e16(figures.fee_pool_cash_e16),
        bad_debt_cash_e16=str(figures.bad_debt_cash_e16),
        bad_debt_cash=decimal_e16(figures.bad_debt_cash_e16),
    )


def make_proof(statement: Statement, nodes: NodeSource, leaf: Leaf, leaf_index: int) -> Proof:
    """The inclusion proof of ``leaf``, at ``leaf_index`` in tree order."""
    path = []
    for level in range(statement.tree_depth):
        sibling_hash, sibling_sum = nodes.node(level, (leaf_index >> level) ^ 1)
        path.append(PathNode(sibling_hash.hex(), str(sibling_sum)))
    return Proof(
        encoding=statement.encoding,
        hash_function=statement.hash_function,
        root_hash=statement.root_hash,
        seq=statement.seq,
        journal_chain_hash=statement.journal_chain_hash,
        account_count=statement.account_count,
        account=leaf.account_id,
        salt=leaf.salt.hex(),
        liability_e16=str(leaf.liability_e16),
        liability=decimal_e16(leaf.liability_e16),
        leaf_index=leaf_index,
        path=path,
    )
