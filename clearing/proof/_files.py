"""The build directory: what ``clearing proof build`` writes and ``extract`` reads.

- ``statement.json``: the statement, to publish.
- ``tree.bin``: every node that covers an account, level by level from the leaves
  (``TREE_MAGIC``, u64 account count, u8 depth, then per level ``ceil(n / 2^l)`` nodes
  of 32 hash bytes + 32 sum bytes): any proof is read from it with ``depth`` seeks.
- ``leaves.jsonl``: the leaves in tree order, ``[account, salt hex, liability e16]``
  a line. With ``tree.bin`` this is the operator's private material: it names accounts.
- ``proofs.jsonl`` (``build --proofs``, or ``extract --all``): every account's proof,
  one a line, in tree order. At 1M accounts it is about 2 GB, hence optional.

Each file is written to a temporary name and renamed, so a crash never leaves half a file
under the real name.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections.abc import Iterator
from typing import BinaryIO, Final

import msgspec

from clearing.proof._documents import Proof, Statement
from clearing.proof._publish import make_proof
from clearing.proof._tree import EMPTY_HASHES, Leaf, SumTree

__all__ = [
    "LEAVES_FILE",
    "PROOFS_FILE",
    "STATEMENT_FILE",
    "TREE_FILE",
    "TreeFile",
    "write_build",
    "write_document",
    "write_proofs",
]

STATEMENT_FILE: Final = "statement.json"
TREE_FILE: Final = "tree.bin"
LEAVES_FILE: Final = "leaves.jsonl"
PROOFS_FILE: Final = "proofs.jsonl"
TREE_MAGIC: Final = b"clearing-pol/1 tree\n"
_NODE_BYTES: Final = 64
_HEADER_BYTES: Final = len(TREE_MAGIC) + 8 + 1
_leaf_row = msgspec.json.Decoder(tuple[str, str, str])


def _level_sizes(account_count: int, depth: int) -> list[int]:
    return [-(-account_count // (1 << level)) for level in range(depth + 1)]


def _replace_from(path: str, write: object) -> None:
    temporary = path + ".tmp"
    with open(temporary, "wb") as out:
        write(out)  # type: ignore[operator]
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def write_document(path: str, document: Statement | Proof) -> None:
    text = msgspec.json.format(msgspec.json.encode(document)) + b"\n"
    _replace_from(path, lambda out: out.write(text))


def write_build(directory: str, tree: SumTree, statement: Statement) -> None:
    """The statement, the tree and the leaves into ``directory`` (created if missing);
    an earlier build's proofs there are removed."""
    os.makedirs(directory, exist_ok=True)
    # A proofs file of an earlier build would not verify against the new statement.
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(directory, PROOFS_FILE))
    _replace_from(os.path.join(directory, TREE_FILE), lambda out: _write_tree(out, tree))
    _replace_from(os.path.join(directory, LEAVES_FILE), lambda out: _write_leaves(out, tree))
    write_document(os.path.join(directory, STATEMENT_FILE), statement)


def _write_tree(out: BinaryIO, tree: SumTree) -> None:
    out.write(TREE_MAGIC + len(tree.leaves).to_bytes(8, "big") + bytes([tree.depth]))
    for hashes, sums in zip(tree.hashes, tree.sums, strict=True):
        out.write(b"".join(h + s.to_bytes(32, "big") for h, s in zip(hashes, sums, strict=True)))


def _write_leaves(out: BinaryIO, tree: SumTree) -> None:
    encode = msgspec.json.encode
    for leaf in tree.leaves:
        out.write(encode((leaf.account_id, leaf.salt.hex(), str(leaf.liability_e16))) + b"\n")


def write_proofs(path: str, statement: Statement, tree: SumTree | TreeFile) -> int:
    """Every account's proof into ``path``, one JSON document a line; how many."""
    encode = msgspec.json.encode

    def write(out: BinaryIO) -> None:
        for index, leaf in enumerate(tree.iter_leaves()):
            out.write(encode(make_proof(statement, tree, leaf, index)) + b"\n")

    _replace_from(path, write)
    return statement.account_count


class TreeFile:
    """A build directory's ``tree.bin`` (memory-mapped) and ``leaves.jsonl``, read on
    demand. Raises ValueError when the files do not fit each other or ``statement``."""

    def __init__(self, directory: str, statement: Statement) -> None:
        self._leaves_path = os.path.join(directory, LEAVES_FILE)
        with open(os.path.join(directory, TREE_FILE), "rb") as tree_file:
            size_bytes = os.fstat(tree_file.fileno()).st_size
            if size_bytes < _HEADER_BYTES:
                raise ValueError(f"{TREE_FILE} is too short to be a tree")
            self._map = mmap.mmap(tree_file.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._sizes = self._check(statement, size_bytes)
        except ValueError:
            self._map.close()
            raise
        self._offsets = [_HEADER_BYTES]
        for size in self._sizes:
            self._offsets.append(self._offsets[-1] + _NODE_BYTES * size)

    def _check(self, statement: Statement, size_bytes: int) -> list[int]:
        """The level sizes, once the header, the size and the root fit ``statement``."""
        header = self._map[:_HEADER_BYTES]
        count = int.from_bytes(header[len(TREE_MAGIC) : -1], "big")
        depth = header[-1]
        sizes = _level_sizes(count, depth)
        if (
            not header.startswith(TREE_MAGIC)
            or (count, depth) != (statement.account_count, statement.tree_depth)
            or size_bytes != _HEADER_BYTES + _NODE_BYTES * sum(sizes)
        ):
            raise ValueError(f"{TREE_FILE} does not belong to {STATEMENT_FILE} beside it")
        root = self._map[size_bytes - _NODE_BYTES : size_bytes]
        if (root[:32].hex(), str(int.from_bytes(root[32:], "big"))) != (
            statement.root_hash,
            statement.total_liabilities_e16,
        ):
            raise ValueError(f"the root in {TREE_FILE} is not the one in {STATEMENT_FILE}")
        return sizes

    def close(self) -> None:
        self._map.close()

    def node(self, level: int, index: int) -> tuple[bytes, int]:
        if index >= self._sizes[level]:
            return EMPTY_HASHES[level], 0
        start = self._offsets[level] + _NODE_BYTES * index
        return self._map[start : start + 32], int.from_bytes(
            self._map[start + 32 : start + _NODE_BYTES], "big"
        )

    def iter_leaves(self) -> Iterator[Leaf]:
        with open(self._leaves_path, "rb") as rows:
            for line in rows:
                account_id, salt, liability = _leaf_row.decode(line)
                # The leaf hash is not stored: a proof carries what it is made of instead.
                yield Leaf(b"", account_id, bytes.fromhex(salt), int(liability))

    def find(self, account_id: str) -> tuple[Leaf, int] | None:
        """The account's leaf and its index in tree order, or None."""
        needle = msgspec.json.encode(account_id)
        with open(self._leaves_path, "rb") as rows:
            for index, line in enumerate(rows):
                # A cheap prefix test first: decoding 1M rows to find one is slow.
                if line.startswith(b"[" + needle + b","):
                    account, salt, liability = _leaf_row.decode(line)
                    return Leaf(b"", account, bytes.fromhex(salt), int(liability)), index
        return None
