"""``clearing proof build | extract | verify``: the adapters between the terminal and the
tree. Exit codes: 0 done (verify: the proof verified), 1 the proof does not verify,
2 usage or file errors (a ``UserError``, printed by ``clearing.cli`` as one line).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Final

import msgspec

from clearing.errors import UserError
from clearing.proof._documents import Statement, decimal_e16, decode_proof, decode_statement
from clearing.proof._files import (
    PROOFS_FILE,
    STATEMENT_FILE,
    TreeFile,
    write_build,
    write_document,
    write_proofs,
)
from clearing.proof._ledger import ledger_liabilities
from clearing.proof._publish import make_proof, make_statement
from clearing.proof._source import open_ledger
from clearing.proof._tree import build_tree
from clearing.proof._verify import ProofInvalid, verify_proof

__all__ = ["proof_command"]

EXIT_VERIFIED: Final = 0
EXIT_NOT_VERIFIED: Final = 1
# A seed shorter than this is guessable, and a guessed seed unmasks every account.
MIN_SEED_BYTES: Final = 16


def proof_command(args: argparse.Namespace) -> int:
    if args.proof_command == "build":
        return _build(args)
    if args.proof_command == "extract":
        return _extract(args)
    return _verify(args)


def _read_seed(path: str) -> bytes:
    try:
        with open(path, "rb") as seed_file:
            seed = seed_file.read()
    except OSError as exc:
        raise UserError(f"cannot read the seed file {path}: {exc.strerror}") from exc
    mode = os.stat(path).st_mode
    if mode & 0o077:
        print(
            f"clearing proof: warning: the seed file {path} can be read by other users "
            f"(mode {mode & 0o777:04o}): anyone holding it can test guesses of balances "
            f"against the tree; chmod 600 {path}",
            file=sys.stderr,
        )
    if len(seed) < MIN_SEED_BYTES:
        raise UserError(
            f"the seed file {path} holds {len(seed)} bytes; give at least {MIN_SEED_BYTES} "
            f"random ones (e.g. head -c 32 /dev/urandom > {path}) and keep it secret"
        )
    return seed


def _build(args: argparse.Namespace) -> int:
    seed = _read_seed(args.seed_file)
    ledger_at = open_ledger(args.source, args.until, args.core, args.config)
    try:
        ledger = ledger_liabilities(ledger_at.engine)
    except ValueError as exc:
        raise UserError(f"the ledger's state cannot be read: {exc}") from exc
    if not ledger.liabilities:
        raise UserError(f"the ledger at seq {ledger.seq} has no accounts: nothing to prove")
    tree = build_tree(seed, ledger.liabilities)
    statement = make_statement(tree, ledger, ledger_at.chain_hash)
    # The first and last leaves' proofs must verify before anything is written: a check
    # of the whole pipeline (tree, statement, proof documents) on the real data.
    for index in {0, len(tree.leaves) - 1}:
        verify_proof(make_proof(statement, tree, tree.leaves[index], index), statement)
    try:
        write_build(args.output, tree, statement)
        if args.proofs:
            write_proofs(os.path.join(args.output, PROOFS_FILE), statement, tree)
    except OSError as exc:
        raise UserError(f"cannot write to {args.output}: {exc}") from exc
    if not args.quiet:
        print(
            f"proof of liabilities at seq {statement.seq}: {statement.account_count} accounts, "
            f"total {statement.total_liabilities}, root {statement.root_hash}; "
            f"statement in {os.path.join(args.output, STATEMENT_FILE)}",
            file=sys.stderr,
        )
    return 0


def _read_statement(path: str) -> Statement:
    try:
        with open(path, "rb") as statement_file:
            return decode_statement(statement_file.read())
    except OSError as exc:
        raise UserError(f"cannot read the statement {path}: {exc.strerror}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UserError(f"{path} is not a proof-of-liabilities statement: {exc}") from exc


def _extract(args: argparse.Namespace) -> int:
    statement = _read_statement(os.path.join(args.directory, STATEMENT_FILE))
    try:
        tree = TreeFile(args.directory, statement)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read the tree in {args.directory}: {exc}") from exc
    try:
        if args.all:
            output = args.output or os.path.join(args.directory, PROOFS_FILE)
            write_proofs(output, statement, tree)
            return 0
        found = tree.find(args.account)
        if found is None:
            raise UserError(f"account {args.account!r} is not in the tree in {args.directory}")
        proof = make_proof(statement, tree, *found)
        try:
            verify_proof(proof, statement)  # never hand out a proof that does not verify
        except ProofInvalid as exc:
            raise UserError(f"the build in {args.directory} is damaged: {exc}") from exc
        if args.output:
            write_document(args.output, proof)
        else:
            sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(proof)) + b"\n")
        return 0
    except OSError as exc:
        raise UserError(f"cannot extract from {args.directory}: {exc}") from exc
    finally:
        tree.close()


def _verify(args: argparse.Namespace) -> int:
    statement = _read_statement(args.statement)
    try:
        with open(args.proof, "rb") as proof_file:
            proof = decode_proof(proof_file.read())
    except OSError as exc:
        raise UserError(f"cannot read the proof {args.proof}: {exc.strerror}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise UserError(f"{args.proof} is not a proof of liabilities: {exc}") from exc
    try:
        verified = verify_proof(proof, statement)
    except ProofInvalid as exc:
        print(f"NOT VERIFIED: {exc}")
        return EXIT_NOT_VERIFIED
    print(
        f"VERIFIED: account {verified.account!r} with liability "
        f"{decimal_e16(verified.liability_e16)} is included in root {verified.root_hash} "
        f"(total liabilities {decimal_e16(verified.total_e16)}, seq {verified.seq})"
    )
    return EXIT_VERIFIED
