"""Benchmark of the proof of liabilities (issue 21): building the sum tree, verifying a proof.

    python tools/bench_proof.py                         # 1M accounts (the issue's size)
    python tools/bench_proof.py --accounts 20000        # a smoke run
    python tools/bench_proof.py --ledger                # also from a real 1M-account ledger

Three measurements, each printed as one JSON line:
- ``tree``: ``build_tree`` over N synthetic (id, liability) pairs (salts, leaf hashes, the
  sort by leaf hash, every inner node). Target: <= 10 s at 1M accounts.
- ``verify``: ``verify_proof`` of proofs decoded from their JSON bytes, per proof
  (median and p99 over many), plus one ``clearing proof verify`` process end to end.
  Target: <= 10 ms per proof.
- ``ledger`` (``--ledger``): a 1M-account ledger (``tools/bench.py``'s one-market
  population, on the native core when installed), then the liabilities read through the
  engine contract, the tree, and the build directory written: the whole of
  ``clearing proof build`` after the replay.

Timings use time.perf_counter (wall) and, for the tree, time.process_time (this process's
CPU time: on a shared machine the wall time also counts the time spent waiting for a
core). Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import msgspec  # noqa: E402

from clearing.heap import settle_heap  # noqa: E402
from clearing.proof import (  # noqa: E402
    Statement,
    SumTree,
    build_tree,
    decode_proof,
    ledger_liabilities,
    make_proof,
    make_statement,
    verify_proof,
)
from clearing.proof._files import write_build, write_document  # noqa: E402

SEED = b"benchmark seed, not a secret...."
E16 = 10**16


def _synthetic(accounts: int) -> list[tuple[str, int]]:
    rng = random.Random(accounts)
    return [(f"acct-{i:07d}", rng.randrange(0, 10**8) * E16 // 1000) for i in range(accounts)]


def _statement_of(tree: SumTree) -> Statement:
    from clearing.engine import LedgerFigures
    from clearing.proof import LedgerLiabilities

    figures = LedgerFigures(len(tree.leaves), 0, 0, 0, 0, [], 0, 0)
    return make_statement(tree, LedgerLiabilities(1, [], figures), b"\x00" * 32)


def bench_tree(accounts: int) -> tuple[dict[str, object], SumTree]:
    pairs = _synthetic(accounts)
    settle_heap()
    started, started_cpu = time.perf_counter(), time.process_time()
    tree = build_tree(SEED, pairs)
    elapsed_s = time.perf_counter() - started
    cpu_s = time.process_time() - started_cpu
    result = {"bench": "tree", "accounts": accounts, "depth": tree.depth, "build_s": elapsed_s}
    return {**result, "build_cpu_s": cpu_s}, tree


def bench_verify(tree: SumTree, proofs: int) -> dict[str, object]:
    statement = _statement_of(tree)
    rng = random.Random(1)
    encoded = []
    for _ in range(proofs):
        index = rng.randrange(len(tree.leaves))
        encoded.append(msgspec.json.encode(make_proof(statement, tree, tree.leaves[index], index)))
    samples_ms = []
    for raw in encoded:
        started = time.perf_counter()
        verify_proof(decode_proof(raw), statement)
        samples_ms.append((time.perf_counter() - started) * 1000)
    samples_ms.sort()
    with tempfile.TemporaryDirectory() as tmp:
        proof_path, statement_path = os.path.join(tmp, "p.json"), os.path.join(tmp, "s.json")
        (Path(proof_path)).write_bytes(encoded[0])
        write_document(statement_path, statement)
        command = [sys.executable, "-m", "clearing.cli", "proof", "verify", proof_path]
        started = time.perf_counter()
        done = subprocess.run(
            [*command, "--statement", statement_path], capture_output=True, check=False
        )
        process_ms = (time.perf_counter() - started) * 1000
    return {
        "bench": "verify",
        "accounts": len(tree.leaves),
        "proofs": proofs,
        "path_levels": statement.tree_depth,
        "median_ms": statistics.median(samples_ms),
        "p99_ms": samples_ms[int(0.99 * (len(samples_ms) - 1))],
        "max_ms": samples_ms[-1],
        "command_ms": process_ms,
        "command_exit": done.returncode,
    }


def bench_ledger(accounts: int) -> dict[str, object]:
    from tools.bench import build_population

    started = time.perf_counter()
    engine = build_population(accounts, False, core="auto")
    population_s = time.perf_counter() - started
    settle_heap()
    started = time.perf_counter()
    ledger = ledger_liabilities(engine)
    liabilities_s = time.perf_counter() - started
    started = time.perf_counter()
    tree = build_tree(SEED, ledger.liabilities)
    tree_s = time.perf_counter() - started
    statement = make_statement(tree, ledger, b"\x00" * 32)
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        write_build(tmp, tree, statement)
        write_s = time.perf_counter() - started
    return {
        "bench": "ledger",
        "core": engine.core_name,
        "accounts": len(ledger.liabilities),
        "population_s": population_s,
        "liabilities_s": liabilities_s,
        "tree_s": tree_s,
        "write_s": write_s,
        "build_after_replay_s": liabilities_s + tree_s + write_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=2_000, help="proofs verified")
    parser.add_argument("--ledger", action="store_true", help="also from a real ledger")
    args = parser.parse_args(argv)
    tree_result, tree = bench_tree(args.accounts)
    print(json.dumps(tree_result), flush=True)
    print(json.dumps(bench_verify(tree, args.proofs)), flush=True)
    del tree
    if args.ledger:
        print(json.dumps(bench_ledger(args.accounts)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
