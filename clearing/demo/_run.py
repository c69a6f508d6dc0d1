"""``clearing demo``: run the simulated venue through the real sequencer, then report.

    simulator -> Sequencer.submit (engine + journal group commit, snapshots) -> live view
              -> clearing report (replay of the journal, verified) -> summary table

The journal and snapshots land in a directory of their own (``--dir``, or
``./clearing-demo-seed<N>``; an earlier run there is refused unless ``--force``), so
every ``clearing`` tool can be pointed at the result: ``clearing replay DIR/journal``,
``clearing journal info DIR/journal``, ``clearing report DIR``. A seed gives the same
journal, byte for byte: the same head hash on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from rich.console import Console
from rich.table import Table

from clearing.demo._live import REFRESH_S, LiveView, Tally
from clearing.demo._pace import PACE_S, Pacer, should_pace
from clearing.demo._sim import START_TS_NS, SimConfig, Simulator
from clearing.errors import UserError
from clearing.report import (
    collect_journal,
    display_e16,
    parse_scaled,
    plural,
    replay_sentence,
    save_report,
    summary,
)
from clearing.sequencer import Sequencer
from clearing.snapshot import default_snapshot_dir

__all__ = ["DemoOptions", "DemoResult", "demo_command", "run_demo"]

# Inputs per sequencer batch (one journal group commit each): small enough for the live
# view to move smoothly, large enough that the fsync per batch costs little.
BATCH_INPUTS: Final = 500
# A snapshot every 20k inputs: a default run leaves a few, to show recovery from them.
SNAPSHOT_EVERY_INPUTS: Final = 20_000
# Both ledger invariants every 10k inputs: a pass over the accounts, milliseconds here.
INVARIANT_CHECK_INPUTS: Final = 10_000
# Prometheus ledger gauges cost a pass over the positions: once a second is plenty.
METRICS_LEDGER_EVERY_S: Final = 1.0
# The demo's ledger runs the newest rules (SPEC §9), so it shows every rule: partial
# liquidation, ADL, funding and the fee split in the crash market, the capped clawback
# in the others.
DEMO_RULES: Final = 2


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 1
    accounts: int = 5_000
    duration_s: float = 3_600.0
    # When set, the run stops after exactly this many inputs (and is sized for it).
    events: int | None = None
    directory: str | None = None
    metrics_port: int | None = None
    live: bool = True
    # Replay the journal into report.html at the end (tests of the run alone skip it).
    report: bool = True
    # Replace an earlier run's journal and report in the directory instead of refusing.
    force: bool = False
    # Wall seconds to spread the run over (the live view on a terminal); None: full speed.
    pace_s: float | None = None

    def sim_config(self) -> SimConfig:
        if self.events is not None:
            return SimConfig.for_inputs(self.seed, self.accounts, self.events, DEMO_RULES)
        return SimConfig(self.seed, self.accounts, self.duration_s, rules_version=DEMO_RULES)


@dataclass(frozen=True)
class DemoResult:
    directory: str
    journal_dir: str
    # None when no HTML was written (skipped, or matplotlib missing).
    report_path: str | None
    inputs: int
    head_hash_hex: str
    run_s: float
    report_s: float
    # The report's headline numbers; None when the report was skipped.
    summary: dict[str, Any] | None


# What a demo run writes into its directory; ``--force`` removes exactly these, nothing else.
_DEMO_OUTPUTS: Final = ("journal", "report.html", "report.html.partial")
# What a demo's journal directory holds: segments, its lock file and the snapshots.
_JOURNAL_ENTRY_SUFFIXES: Final = (".seg", "LOCK", "snapshots")


def _default_name(seed: int) -> str:
    """The directory a run writes to when ``--dir`` is not given (the README names it)."""
    return f"clearing-demo-seed{seed}"


def _holds_a_run(directory: str) -> bool:
    return any(os.path.exists(os.path.join(directory, name)) for name in _DEMO_OUTPUTS)


def _remove_run(directory: str, shown: str) -> None:
    """Remove an earlier run's journal and report from ``directory`` (``--force``), after
    checking that the journal directory holds only what the demo writes."""

    journal_dir = os.path.join(directory, "journal")
    if os.path.isdir(journal_dir):
        foreign = [
            name for name in os.listdir(journal_dir) if not name.endswith(_JOURNAL_ENTRY_SUFFIXES)
        ]
        if foreign:
            names = ", ".join(sorted(foreign))
            raise UserError(
                f"{shown}/journal holds files a demo does not write ({names}); "
                "not removing it: pass another --dir"
            )
    try:
        for name in _DEMO_OUTPUTS:
            path = os.path.join(directory, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.lexists(path):
                os.remove(path)
    except OSError as exc:
        raise UserError(f"cannot remove the earlier run in {shown}: {exc.strerror}") from exc


def _prepare_directory(options: DemoOptions) -> str:
    """The run's directory, created; an earlier run there is an error unless ``force``.

    The default is always ``./clearing-demo-seed<N>`` (never a ``-2`` variant the README
    does not name): a second run with the same seed says so and names the two ways on.
    """
    given = options.directory
    shown = given if given is not None else f"./{_default_name(options.seed)}"
    directory = os.path.abspath(given if given is not None else shown)
    if _holds_a_run(directory):
        if not options.force:
            raise UserError(
                f"{shown} already holds a demo run; pass --force to replace it, or "
                f"--dir DIR to write elsewhere (inspect it with: clearing report {shown})"
            )
        _remove_run(directory, shown)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        if given is None:
            # A read-only working directory: the run still works, somewhere it can write.
            return tempfile.mkdtemp(prefix=f"{_default_name(options.seed)}-")
        raise UserError(f"cannot create {directory}: {exc.strerror}") from exc
    return directory


class _MetricsEndpoint:
    """The ops HTTP endpoint (/metrics /healthz /readyz) on a thread of its own.

    The demo loop is synchronous; the server gets its own event loop. The thread only
    serializes the registry; every metric is updated from the demo loop, between batches.
    """

    def __init__(self, port: int) -> None:
        from clearing.ops import Metrics, OpsServer

        # Simulated time: oracle ages and lags are measured against the inputs' ts.
        self.metrics = Metrics(now_ns=START_TS_NS)
        self._server = OpsServer(self.metrics, "127.0.0.1", port)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="demo-metrics", daemon=True)

    def start(self) -> str:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise UserError(f"cannot serve metrics: {self._error}") from self._error
        self.metrics.set_ready(True)
        self.metrics.set_invariant_ok(True)
        return f"{self._server.url}/metrics"

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.start())
        except OSError as exc:
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._server.stop())
        self._loop.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def run_demo(
    options: DemoOptions, console: Console | None = None, pacer: Pacer | None = None
) -> DemoResult:
    """Run the demo end to end; ``console`` gets the live view and messages.

    ``pacer`` (tests pass one with a fake clock) holds the run to ``options.pace_s``;
    by default one on the real clock when ``pace_s`` is set.
    """
    console = console or Console()
    config = options.sim_config()
    directory = _prepare_directory(options)
    journal_dir = os.path.join(directory, "journal")
    sim = Simulator(config)
    if pacer is None and options.pace_s is not None:
        pacer = Pacer(config.duration_s, sim.crash_at_s, options.pace_s, frame_s=REFRESH_S)
    console.print(
        f"clearing demo: seed {config.seed}, {config.accounts:,} accounts, "
        f"{config.duration_s / 60:.0f} simulated minutes (~{config.expected_inputs:,} inputs) "
        f"-> {directory}",
        soft_wrap=True,
    )
    sequencer, _ = Sequencer.open_local(
        journal_dir,
        default_snapshot_dir(journal_dir),
        snapshot_every_inputs=SNAPSHOT_EVERY_INPUTS,
        invariant_check_inputs=INVARIANT_CHECK_INPUTS,
        rules_version=config.rules_version,
    )
    tally = Tally()
    endpoint: _MetricsEndpoint | None = None
    view: LiveView | None = None
    last_draw = last_metrics = 0.0
    try:
        if options.metrics_port is not None:
            endpoint = _MetricsEndpoint(options.metrics_port)
            url = endpoint.start()
            console.print(f"Prometheus metrics while it runs: {url}", soft_wrap=True)
        if options.live:
            note = (
                f"paced to about {options.pace_s:.0f} s so it can be watched; --fast to skip"
                if pacer is not None
                else ""
            )
            view = LiveView(console, f"clearing demo · seed {config.seed}", note)
        started = time.perf_counter()
        if pacer is not None:
            pacer.start()
        batch: list[tuple[str, bytes]] = []
        for n, payload in enumerate(sim, start=1):
            # The source names the simulated stream and the input's place in it.
            batch.append((f"demo:seed={config.seed}:{n}", payload))
            # Paced, a batch ends at each frame as well, so the crash is drawn tick by tick.
            frame = pacer is not None and pacer.frame_due(sim.now_s)
            if len(batch) < BATCH_INPUTS and not frame:
                continue
            _submit(sequencer, batch, tally, endpoint, sim)
            batch = []
            if pacer is not None:
                pacer.wait(sim.now_s)
            now = time.perf_counter()
            if endpoint is not None and now - last_metrics >= METRICS_LEDGER_EVERY_S:
                last_metrics = now
                endpoint.metrics.update_ledger(sequencer.engine, _sim_ns(sim))
            # Paced, every frame is drawn: the schedule already spaces them.
            if view is not None and (pacer is not None or now - last_draw >= REFRESH_S):
                last_draw = now
                _draw(view, sim, tally, sequencer, now - started)
        if batch:
            _submit(sequencer, batch, tally, endpoint, sim)
        sequencer.check_invariants()
        if view is not None:
            _draw(view, sim, tally, sequencer, time.perf_counter() - started)
        head_hash_hex = sequencer.journal.head_hash.hex()
        inputs = sequencer.engine.seq
    finally:
        if view is not None:
            view.close()
        sequencer.close()
        if endpoint is not None:
            endpoint.stop()
    run_s = time.perf_counter() - started
    numbers = None
    report_path: str | None = None
    report_s = 0.0
    if options.report:
        with console.status("replaying the journal for the report..."):
            report_started = time.perf_counter()
            data = collect_journal(journal_dir)
            numbers = summary(data)
            if importlib.util.find_spec("matplotlib") is None:
                console.print(
                    "no HTML report: it needs matplotlib (pip install 'clearing[report]')"
                )
            else:
                report_path = os.path.join(directory, "report.html")
                save_report(data, report_path)
            report_s = time.perf_counter() - report_started
    return DemoResult(
        directory, journal_dir, report_path, inputs, head_hash_hex, run_s, report_s, numbers
    )


def _sim_ns(sim: Simulator) -> int:
    return START_TS_NS + int(sim.now_s * 1e9)


def _submit(
    sequencer: Sequencer,
    batch: list[tuple[str, bytes]],
    tally: Tally,
    endpoint: _MetricsEndpoint | None,
    sim: Simulator,
) -> None:
    first_seq = sequencer.engine.seq + 1
    outputs = sequencer.submit(batch)
    tally.observe(outputs)
    tally.observe_inputs(first_seq, [payload for _, payload in batch], outputs)
    if endpoint is not None:
        # One "topic" label for the whole demo: the per-input source would be a new label
        # value per input.
        inputs = [("demo", payload) for _, payload in batch]
        endpoint.metrics.observe_batch(inputs, first_seq, outputs, _sim_ns(sim))
        endpoint.metrics.set_journal_seq(sequencer.engine.seq)


def _draw(
    view: LiveView,
    sim: Simulator,
    tally: Tally,
    sequencer: Sequencer,
    elapsed_s: float,
) -> None:
    config = sim.config
    if config.max_inputs is not None:
        progress = sim.emitted / config.max_inputs
    else:
        progress = sim.now_s / config.duration_s
    view.show(
        progress=progress,
        clock=f"{_clock(sim.now_s)} / {_clock(config.duration_s)}",
        phase=sim.phase,
        inputs=sequencer.engine.seq,
        inputs_per_s=sequencer.engine.seq / elapsed_s if elapsed_s > 0 else 0.0,
        tally=tally,
        engine=sequencer.engine,
    )


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _summary_table(result: DemoResult, numbers: dict[str, Any]) -> Table:
    liq = numbers["liquidations"]
    fund = numbers["insurance_fund"]

    def amount(text: str, places: int = 2) -> str:
        return display_e16(parse_scaled(text, 16), places)

    table = Table(title="clearing demo: summary", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column()
    rejects = sum(numbers["inputs"]["rejects"].values())
    table.add_row("inputs", f"{result.inputs:,}", f"{rejects:,} rejected")
    table.add_row(
        "liquidations",
        f"{liq['events']:,}",
        f"{liq['accounts']:,} accounts, {amount(liq['notional'], 0)} notional",
    )
    v2 = numbers.get("rules_v2")
    if v2 is None:
        fee_detail = "liquidation fees to the fund"
    else:
        pool_e16 = sum(
            parse_scaled(split["to_fee_pool"], 16) for split in v2["liquidation_fees"].values()
        )
        fee_detail = f"liquidation fees, {display_e16(pool_e16)} of them to the fee pool"
    table.add_row(
        "fee income",
        amount(liq["fees_charged"]),
        f"{fee_detail}; fee pool {amount(numbers['fee_pool'])}",
    )
    table.add_row(
        "fund draws",
        amount(numbers["fund_draws"]["amount"]),
        plural(numbers["fund_draws"]["events"], "draw"),
    )
    table.add_row(
        "clawbacks",
        amount(numbers["clawbacks"]["amount"]),
        f"{numbers['clawbacks']['events']:,} debits from "
        f"{numbers['clawbacks']['payers']:,} accounts",
    )
    table.add_row(
        "bad debt",
        amount(numbers["bad_debt"]["amount"]),
        plural(numbers["bad_debt"]["events"], "event"),
    )
    if v2 is not None:
        _rules_v2_rows(table, v2, amount)
    ratio = numbers["fund_to_open_interest"]
    table.add_row(
        "final fund",
        amount(fund["final_equity"]),
        "equity; fund / open interest " + ("n/a" if ratio is None else f"{float(ratio):.2%}"),
    )
    table.add_row(
        "fund deposits",
        amount(fund["deposited"]),
        f"{plural(fund['deposits'], 'deposit')}; fund before top-ups "
        f"{amount(fund['equity_before_top_ups'])}, lowest {amount(fund['lowest_sampled_equity'])}",
    )
    verification = numbers["verification"]
    table.add_row(
        "invariants",
        "OK" if verification["invariants_ok"] else "FAILED",
        "journal replayed from seq 1: "
        + replay_sentence(
            result.inputs,
            verification["records_with_outputs_verified"],
            verification["records_with_unrecorded_outputs"],
        ),
    )
    table.add_row("journal head", result.head_hash_hex[:16], "the same for every run of this seed")
    table.add_row(
        "time",
        f"{result.run_s:.1f} s",
        f"{result.inputs / result.run_s:,.0f} inputs/s; report {result.report_s:.1f} s",
    )
    return table


def _rules_v2_rows(table: Table, v2: dict[str, Any], amount: Callable[[str], str]) -> None:
    """What only rules version 2 did (SPEC §9): ADL, partial steps, funding."""
    adl = v2["adl"]
    table.add_row(
        "deleveraging",
        amount(adl["amount"]),
        f"{plural(adl['events'], 'ADL hand-over')} from {plural(adl['accounts'], 'account')}",
    )
    partial = v2["partial_steps"]
    table.add_row(
        "partial steps",
        f"{partial['events']:,}",
        f"liquidation steps that closed a part, on {plural(partial['accounts'], 'account')}",
    )
    paid = v2["funding_paid"]
    total_e16 = sum(parse_scaled(value, 16) for value in paid.values())
    table.add_row(
        "funding",
        display_e16(total_e16),
        "paid by the paying side in " + ", ".join(sorted(paid)) if paid else "none",
    )


def demo_command(args: argparse.Namespace) -> int:
    if args.accounts < 50:
        raise UserError("--accounts must be at least 50")
    if args.events is not None and args.events < 1_000:
        raise UserError("--events must be at least 1000 (the setup alone takes more)")
    if args.duration is not None and args.duration < 120:
        raise UserError("--duration must be at least 120 simulated seconds")
    live = not args.no_live and sys.stdout.isatty()
    options = DemoOptions(
        seed=args.seed,
        accounts=args.accounts,
        duration_s=3_600.0 if args.duration is None else args.duration,
        events=args.events,
        directory=args.dir,
        force=args.force,
        metrics_port=args.metrics_port,
        live=live,
        pace_s=PACE_S if should_pace(live=live, fast=args.fast) else None,
    )
    console = Console()
    try:
        result = run_demo(options, console)
    except KeyboardInterrupt:
        console.print("interrupted: the journal holds every batch submitted so far")
        return 130
    if result.summary is not None:
        console.print(_summary_table(result, result.summary))
    # Paths in full, never wrapped or cut, so they can be copied.
    console.print(f"journal: {result.journal_dir}", soft_wrap=True)
    if result.report_path is not None:
        console.print(f"report:  {result.report_path}", soft_wrap=True)
        # The fund risk section costs ~25 s of CPU, so the demo's page leaves it out.
        console.print(
            f"fund risk (is the insurance fund big enough?): clearing report "
            f"{result.journal_dir} -o risk-report.html --risk",
            soft_wrap=True,
        )
    return 0
