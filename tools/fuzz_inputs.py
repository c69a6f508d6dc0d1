"""Hostile-input fuzzer: feed the engine millions of bad (and some good) inputs.

Every input is generated from one ``random.Random(seed)`` together with the outcome the SPEC
requires for it (a set of allowed reject reasons, ``"ok"`` for acceptance, or ``None`` when
only "never crash, at most one clean reject" can be said, e.g. for random byte flips). For
each input the runner checks:

* the engine does not raise (a crash is recorded with the input and the run goes on);
* a rejected input gives exactly one ``reject`` output, with the input's ``seq`` and a reason
  among SPEC §3's codes, and it is the reason the generator expected;
* a rejected input leaves the state byte-identical (``dump_state`` with ``seq`` set aside),
  for every reject by default (``--state-check-every`` samples instead);
* every output encodes to valid JSON; the ledger invariants hold every 1,000 inputs;
* memory is bounded: RSS is sampled (after a ``gc``) at every epoch boundary and must not grow
  past ``--max-rss-growth-mib`` after the first epoch.

The engine is replaced by a fresh one every ``--epoch`` inputs so that ``dump_state`` stays
cheap; the generator then starts a new world (markets, deposits) too.

Hostile kinds: malformed JSON (truncations, bad syntax, byte flips, random bytes), non-objects,
NaN/Infinity literals, invalid UTF-8, lone surrogate escapes, BOMs, deep nesting, unknown or
missing types, wrong field types, missing/null fields, floats, huge numbers and huge digit
strings, oversized messages (1-4 MiB), duplicate keys, fill_id replays, out-of-order inputs
(a market used before it exists), verbatim replays, reserved accounts, self trades and
withdrawals without cash; valid inputs (with unknown fields, odd whitespace, unicode ids)
are mixed in.

    python tools/fuzz_inputs.py --count 1000000 --seed 1          # the full run (~minutes)
    python tools/fuzz_inputs.py --count 30000 --seed 7 --oversized-every 3000   # CI-sized

Exit status 0 only with zero crashes, zero expectation mismatches, zero state changes by a
reject and bounded memory. The generators and the hostile catalogue live in
``testkit/hostile.py`` (shared with the tests and the simulator), the run in
``testkit/fuzz.py``; this file is the command line over them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# Runnable from a checkout without an install: the repo root holds clearing/ and testkit/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from testkit.fuzz import MIB, FuzzReport, current_rss_bytes, peak_rss_bytes, run_fuzz
from testkit.hostile import (
    FUND,
    OK,
    Case,
    HostileGenerator,
    StreamModel,
    check_outcome,
    known_bug,
    state_bytes,
    valid_case,
)

__all__ = [
    "FUND",
    "OK",
    "Case",
    "FuzzReport",
    "HostileGenerator",
    "StreamModel",
    "check_outcome",
    "current_rss_bytes",
    "known_bug",
    "peak_rss_bytes",
    "run_fuzz",
    "state_bytes",
    "valid_case",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000, help="inputs to generate")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--epoch", type=int, default=5_000, help="inputs per fresh engine")
    parser.add_argument(
        "--oversized-every", type=int, default=10_000, help="one 1-4 MiB input every N (0: none)"
    )
    parser.add_argument(
        "--state-check-every",
        type=int,
        default=1,
        help="compare dump_state before/after every Nth reject (1: every reject)",
    )
    parser.add_argument("--max-rss-growth-mib", type=float, default=64.0)
    parser.add_argument("--failures-dir", help="write every failing input here")
    parser.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    parser.add_argument(
        "--core", choices=("python", "native"), default="python", help="engine core to fuzz"
    )
    args = parser.parse_args(argv)

    last = [time.perf_counter()]

    def progress(report: FuzzReport) -> None:
        if time.perf_counter() - last[0] > 10:
            last[0] = time.perf_counter()
            print(
                f"  {report.inputs:,} inputs, {report.rate:,.0f}/s, crashes={report.crashes}, "
                f"mismatches={report.mismatches}, RSS {current_rss_bytes() / MIB:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )

    report = run_fuzz(
        args.count,
        args.seed,
        epoch=args.epoch,
        oversized_every=args.oversized_every,
        state_check_every=args.state_check_every,
        failures_dir=args.failures_dir,
        progress=progress,
        core=args.core,
    )
    print(f"fuzz_inputs seed={args.seed} count={args.count} core={args.core}")
    print(report.summary())
    limit = int(args.max_rss_growth_mib * MIB)
    ok = report.ok(limit)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "seed": args.seed,
                    "inputs": report.inputs,
                    "seconds": report.seconds,
                    "inputs_per_s": report.rate,
                    "crashes": report.crashes,
                    "mismatches": report.mismatches,
                    "known_bug_hits": dict(report.known_bug_hits),
                    "state_changed_by_reject": report.state_changed_by_reject,
                    "rejects_state_checked": report.rejects_state_checked,
                    "by_reason": dict(report.by_reason),
                    "by_kind": dict(report.by_kind),
                    "outputs_by_type": dict(report.outputs_by_type),
                    "peak_rss_bytes": report.peak_rss,
                    "rss_growth_bytes": report.rss_growth,
                    "rss_samples": report.rss_samples,
                    "ok": ok,
                },
                f,
                indent=1,
            )
    print("RESULT: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
