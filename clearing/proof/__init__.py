"""Proof of liabilities: a Merkle sum tree over every account's liability, the statement
the operator publishes, and the inclusion proof each account holder checks.

``_tree`` (the hashes and the tree) and ``_verify`` (checking a proof) are pure;
``_ledger`` reads the liabilities through the engine-core contract; ``_source`` opens a
journal or a snapshot; ``_files`` reads and writes a build directory; ``_command`` is
the CLI adapter. ``docs/proof-of-liabilities.md`` says what is proven and what is not.
"""

from clearing.proof._command import proof_command
from clearing.proof._documents import PathNode, Proof, Statement, decode_proof, decode_statement
from clearing.proof._ledger import LedgerLiabilities, ledger_liabilities
from clearing.proof._publish import make_proof, make_statement
from clearing.proof._tree import (
    EMPTY_HASHES,
    ENCODING,
    HASH_NAME,
    PADDING_HASH,
    Leaf,
    SumTree,
    account_salt,
    build_tree,
    leaf_hash,
    node_hash,
)
from clearing.proof._verify import ProofInvalid, Verified, verify_proof

__all__ = [
    "EMPTY_HASHES",
    "ENCODING",
    "HASH_NAME",
    "PADDING_HASH",
    "Leaf",
    "LedgerLiabilities",
    "PathNode",
    "Proof",
    "ProofInvalid",
    "Statement",
    "SumTree",
    "Verified",
    "account_salt",
    "build_tree",
    "decode_proof",
    "decode_statement",
    "leaf_hash",
    "ledger_liabilities",
    "make_proof",
    "make_statement",
    "node_hash",
    "proof_command",
    "verify_proof",
]
