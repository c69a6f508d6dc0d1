"""The fuzz run: feeds ``testkit.hostile``'s cases through an engine core and checks each
one (the CLI is ``tools/fuzz_inputs.py``; the checks are listed in its docstring)."""

from __future__ import annotations

import gc
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgspec

from clearing.engine import REJECT_REASONS, encode_output, make_engine
from testkit.hostile import (
    Case,
    HostileGenerator,
    StreamModel,
    check_outcome,
    known_bug,
    state_bytes,
)

__all__ = ["MIB", "FuzzReport", "current_rss_bytes", "peak_rss_bytes", "run_fuzz"]

MIB = 1024 * 1024


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


@dataclass
class FuzzReport:
    inputs: int = 0
    seconds: float = 0.0
    bytes_fed: int = 0
    largest_input: int = 0
    crashes: int = 0
    mismatches: int = 0
    state_changed_by_reject: int = 0
    rejects_state_checked: int = 0
    invariant_failures: int = 0
    known_bug_hits: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[str] = field(default_factory=Counter)
    by_reason: Counter[str] = field(default_factory=Counter)
    outputs_by_type: Counter[str] = field(default_factory=Counter)
    slowest: list[tuple[float, str, int]] = field(default_factory=list)  # (s, kind, bytes)
    failures: list[str] = field(default_factory=list)  # first few, for the report
    rss_samples: list[tuple[int, int]] = field(default_factory=list)  # (inputs, bytes)
    peak_rss: int = 0
    rss_growth: int = 0

    @property
    def rate(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def ok(self, max_rss_growth: int) -> bool:
        return (
            self.crashes == 0
            and self.mismatches == 0
            and self.state_changed_by_reject == 0
            and self.invariant_failures == 0
            and self.rss_growth <= max_rss_growth
        )

    def summary(self) -> str:
        lines = [
            f"inputs: {self.inputs:,} in {self.seconds:.1f} s ({self.rate:,.0f} inputs/s), "
            f"{self.bytes_fed / MIB:,.1f} MiB fed, largest input {self.largest_input:,} bytes",
            f"crashes={self.crashes} mismatches={self.mismatches} "
            f"state_changed_by_reject={self.state_changed_by_reject} "
            f"invariant_failures={self.invariant_failures}",
            f"rejects state-checked (dump_state before == after): {self.rejects_state_checked:,}",
            "known engine bugs hit (not counted as mismatches): "
            + (", ".join(f"{b}={n:,}" for b, n in sorted(self.known_bug_hits.items())) or "none"),
            "rejects by reason: "
            + ", ".join(f"{r}={self.by_reason.get(r, 0):,}" for r in REJECT_REASONS),
            "other outputs: "
            + ", ".join(
                f"{t}={n:,}" for t, n in sorted(self.outputs_by_type.items()) if t != "reject"
            ),
            "inputs by kind: " + ", ".join(f"{k}={n:,}" for k, n in sorted(self.by_kind.items())),
            "slowest inputs: "
            + ", ".join(f"{k} {b:,} B {s * 1000:.0f} ms" for s, k, b in self.slowest[:5]),
            f"peak RSS {self.peak_rss / MIB:.1f} MiB; RSS after each epoch (MiB): "
            + " ".join(f"{r / MIB:.0f}" for _, r in self.rss_samples),
            f"RSS growth after the first epoch: {self.rss_growth / MIB:+.1f} MiB",
        ]
        lines.extend(f"FAILURE: {f}" for f in self.failures[:20])
        return "\n".join(lines)


_any_json = msgspec.json.Decoder()


def run_fuzz(
    count: int,
    seed: int,
    *,
    epoch: int = 5_000,
    oversized_every: int = 10_000,
    state_check_every: int = 1,
    failures_dir: str | None = None,
    progress: Callable[[FuzzReport], None] | None = None,
    core: str = "python",
) -> FuzzReport:
    """Feed ``count`` generated inputs through the engine (on the named core) and check
    each one."""
    rng = random.Random(seed)
    report = FuzzReport()
    started = time.perf_counter()
    done = 0
    epoch_no = 0
    while done < count:
        epoch_no += 1
        engine = make_engine(core)
        model = StreamModel(rng)
        gen = HostileGenerator(rng, model)
        before: bytes | None = None  # state bytes, valid while nothing was accepted
        rejects_seen = 0
        cases: Iterator[Case] = iter(gen.genesis())
        n_in_epoch = min(epoch, count - done)
        for index in range(n_in_epoch):
            case = next(cases, None)
            if case is None:
                # Counted over the whole run (epochs may be shorter than the interval).
                big = oversized_every and (done + index + 1) % oversized_every == 0
                case = gen.oversized() if big else gen.next_case()
            report.by_kind[case.kind] += 1
            report.bytes_fed += len(case.raw)
            report.largest_input = max(report.largest_input, len(case.raw))
            if before is None:
                before = state_bytes(engine)
            t0 = time.perf_counter()
            try:
                outputs = engine.apply(case.raw)
            except Exception as exc:  # a crash: record it, rebuild, go on
                report.crashes += 1
                _record_failure(report, failures_dir, seed, done + index, case, f"crash {exc!r}")
                engine, before = make_engine(core), None
                continue
            elapsed = time.perf_counter() - t0
            if elapsed > 0.05:
                report.slowest.append((elapsed, case.kind, len(case.raw)))
                report.slowest.sort(reverse=True)
                del report.slowest[10:]
            problem = check_outcome(case, engine.seq, outputs)
            for event in outputs:
                tag = type(event).__name__
                report.outputs_by_type[tag] += 1
                try:
                    _any_json.decode(encode_output(event))
                except Exception as exc:
                    problem = f"output does not encode to JSON: {exc!r}"
            bug = known_bug(case, problem) if problem is not None else None
            if bug is not None:
                report.known_bug_hits[bug] += 1
            elif problem is not None:
                report.mismatches += 1
                _record_failure(report, failures_dir, seed, done + index, case, problem)
            rejected = bool(outputs) and type(outputs[0]).__name__ == "Reject"
            if rejected:
                report.by_reason[outputs[0].reason] += 1  # type: ignore[union-attr]
                rejects_seen += 1
                if rejects_seen % state_check_every == 0:
                    report.rejects_state_checked += 1
                    if state_bytes(engine) != before:
                        report.state_changed_by_reject += 1
                        _record_failure(
                            report, failures_dir, seed, done + index, case, "reject changed state"
                        )
                        before = None
            else:
                before = None
            if index % 1000 == 999:
                try:
                    engine.check_invariants()
                except Exception as exc:
                    report.invariant_failures += 1
                    report.failures.append(f"invariants at input {done + index}: {exc}")
        try:
            engine.check_invariants()
        except Exception as exc:
            report.invariant_failures += 1
            report.failures.append(f"invariants at end of epoch {epoch_no}: {exc}")
        done += n_in_epoch
        report.inputs = done
        del engine, gen, model, cases
        gc.collect()
        report.rss_samples.append((done, current_rss_bytes()))
        report.seconds = time.perf_counter() - started
        if progress is not None:
            progress(report)
    report.peak_rss = peak_rss_bytes()
    if len(report.rss_samples) > 1:
        baseline = report.rss_samples[0][1]
        report.rss_growth = max(r for _, r in report.rss_samples) - baseline
    report.seconds = time.perf_counter() - started
    return report


def _record_failure(
    report: FuzzReport, directory: str | None, seed: int, index: int, case: Case, why: str
) -> None:
    text = f"seed {seed} input #{index} kind {case.kind}: {why}; raw {case.raw[:160]!r}"
    if len(report.failures) < 100:
        report.failures.append(text)
    if directory:
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, f"seed{seed}-{index}.bin"), "wb") as f:
            f.write(case.raw)
