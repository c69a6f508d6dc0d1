"""``clearing stress`` and ``clearing risk``: load the ledger, build scenarios, run them
(``_runner``), print a table or JSON. The ledger's journal and snapshots are only read."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Final

from clearing.engine import EngineCore
from clearing.engine.money import format_e16
from clearing.errors import ScenarioFailed, UserError
from clearing.risk import _render as render
from clearing.risk._adequacy import LOSSES, Adequacy, Settings, assess
from clearing.risk._grid import run_grid
from clearing.risk._outcome import Outcome, parse_e16
from clearing.risk._runner import run_scenarios
from clearing.risk._shock import Move, Shock, describe_move, parse_shock, shocked_price_e8
from clearing.risk._source import Ledger, load_ledger, oracle_history
from clearing.risk._stats import Tail

__all__ = ["parse_duration_ns", "risk_command", "stress_command"]

_DURATION_RE: Final = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_NS_PER_UNIT: Final = {
    "ms": 10**6,
    "s": 10**9,
    "m": 60 * 10**9,
    "h": 3600 * 10**9,
    "d": 86400 * 10**9,
}


def parse_duration_ns(option: str, text: str) -> int:
    """``90s``, ``5m``, ``1h``, ``2d``, ``500ms`` -> nanoseconds (> 0)."""
    match = _DURATION_RE.fullmatch(text.strip())
    if match is None or int(match[1]) == 0:
        raise UserError(f"{option} {text!r}: expected a positive duration such as 30s, 5m, 1h, 1d")
    return int(match[1]) * _NS_PER_UNIT[match[2]]


def _jobs(requested: int | None) -> int:
    if requested is not None and requested < 1:
        raise UserError(f"--jobs {requested}: give 1 or more")
    return requested or os.cpu_count() or 1


def _marks(engine: EngineCore, seq: int) -> tuple[dict[str, int], frozenset[str]]:
    """Each market's mark, and every market's id (one pass over a large ledger, not two);
    a UserError when no market has a mark (nothing to move)."""
    markets = engine.summary().markets
    marks = {m.market: m.mark_e8 for m in markets if m.mark_e8 is not None}
    if not marks:
        raise UserError(
            f"the ledger at seq {seq} has no market with a mark price: nothing to shock "
            f"(is the journal empty?)"
        )
    return marks, frozenset(m.market for m in markets)


def _shock_moves(
    shocks: Sequence[Shock], marks: dict[str, int], known: frozenset[str]
) -> list[Move]:
    moves: dict[str, Move] = {}
    for shock in shocks:
        if shock.market not in known:
            raise UserError(
                f"--shock {shock.market}: no such market in the ledger; "
                f"markets: {', '.join(sorted(known))}"
            )
        if shock.market not in marks:
            raise UserError(f"--shock {shock.market}: the market has no mark price yet")
        if shock.market in moves:
            raise UserError(f"--shock {shock.market}: given twice; give one shock per market")
        moves[shock.market] = Move(shock.market, shocked_price_e8(marks[shock.market], shock.move))
    return sorted(moves.values(), key=lambda move: move.market)


def _failed(command: str, exc: ScenarioFailed) -> int:
    """A scenario the engine could not run is a bug, not a bad argument: one line, exit 1."""
    print(f"clearing {command}: failed: {exc}", file=sys.stderr)
    return 1


def _write_lines(path: str, lines: list[bytes]) -> None:
    try:
        with open(path, "wb") as out:
            out.writelines(line + b"\n" for line in lines)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror}") from exc


def stress_command(args: argparse.Namespace) -> int:
    if bool(args.shock) == args.grid:
        raise UserError("give one or more --shock MARKET=PCT%, or --grid (not both)")
    shocks = [parse_shock(text) for text in args.shock or ()]
    ledger = load_ledger(args.source, args.until, args.core, args.config)
    marks, known = _marks(ledger.engine, ledger.seq)
    if args.grid:
        try:
            print(run_grid(ledger, marks, _jobs(args.jobs), args.json))
        except ScenarioFailed as exc:
            return _failed("stress", exc)
        return 0
    moves = _shock_moves(shocks, marks, known)
    try:
        [outcome] = run_scenarios(
            ledger.engine, [moves], jobs=1, measure_fund=True, keep_events=bool(args.events)
        )
    except ScenarioFailed as exc:
        return _failed("stress", exc)
    if args.inputs:
        _write_lines(args.inputs, outcome.inputs)
    if args.events and outcome.events is not None:
        _write_lines(args.events, outcome.events)
    if args.json:
        print(json.dumps(_stress_json(args.source, ledger, moves, marks, outcome), indent=2))
    else:
        print(_stress_text(args.source, ledger, moves, marks, outcome))
    return 0


def _stress_json(
    source: str, ledger: Ledger, moves: list[Move], marks: dict[str, int], outcome: Outcome
) -> dict[str, Any]:
    by_market = {row.market: row for row in outcome.markets}
    return {
        "source": source,
        "seq": ledger.seq,
        "core": ledger.engine.core_name,
        "inputs": [raw.decode() for raw in outcome.inputs],
        "markets": [
            {
                "market": move.market,
                "mark": render.price(marks[move.market]),
                "shocked_mark": render.price(move.price_e8),
                **render.outcome_json(by_market[move.market]),
            }
            for move in moves
        ],
        "total": render.outcome_json(outcome.total),
        "fund_equity_before": format_e16(outcome.fund_equity_before_e16 or 0),
        "fund_equity_after": format_e16(outcome.fund_equity_after_e16 or 0),
    }


def _stress_text(
    source: str, ledger: Ledger, moves: list[Move], marks: dict[str, int], outcome: Outcome
) -> str:
    by_market = {row.market: row for row in outcome.markets}
    rows = [
        (
            [
                move.market,
                describe_move(marks[move.market], move.price_e8),
                f"{render.price(marks[move.market])} -> {render.price(move.price_e8)}",
            ],
            by_market[move.market],
        )
        for move in moves
    ]
    rows.append((["total", "", ""], outcome.total))
    before = outcome.fund_equity_before_e16 or 0
    after = outcome.fund_equity_after_e16 or 0
    held = len(outcome.inputs) - len(moves)
    return "\n".join(
        [
            f"stress of {source} at seq {ledger.seq} ({ledger.engine.core_name} core); "
            f"the ledger is not changed",
            "",
            render.outcome_table(rows, ["market", "move", "mark"]),
            "",
            f"insurance fund equity: {render.cash(before)} before, {render.cash(after)} after "
            f"({render.cash(after - before)})",
            f"engine inputs: {len(outcome.inputs)} oracle ticks"
            + (f" ({held} held by the oracle guard, then confirmed)" if held else ""),
        ]
    )


def risk_command(args: argparse.Namespace) -> int:
    settings = Settings(
        horizon_ns=parse_duration_ns("--horizon", args.horizon),
        step_ns=parse_duration_ns("--step", args.step) if args.step else None,
        window_ns=parse_duration_ns("--window", args.window) if args.window else None,
        scale=_scale(args.scale),
        limit=args.scenarios,
        seed=args.seed,
    )
    if args.scenarios < 1:
        raise UserError(f"--scenarios {args.scenarios}: give 1 or more")
    jobs = _jobs(args.jobs)
    ledger = load_ledger(args.source, args.until, args.core, args.config)
    if ledger.journal is None:
        raise UserError(
            f"{args.source} is a snapshot: it holds no oracle history; pass the journal "
            f"directory or kafka://HOST:PORT/TOPIC"
        )
    _marks(ledger.engine, ledger.seq)  # a UserError for a ledger with nothing to move
    ticks = list(oracle_history(ledger.journal, ledger.seq, ledger.config_path))
    try:
        adequacy = assess(ledger.engine, ticks, settings, jobs)
    except ScenarioFailed as exc:
        return _failed("risk", exc)
    if adequacy is None:
        raise UserError(
            f"the oracle history up to seq {ledger.seq} ({len(ticks)} stamped ticks) "
            f"is shorter than one --horizon {args.horizon}: use a shorter horizon or a "
            f"longer --window"
        )
    report = _risk_report(args, ledger, adequacy)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_risk_text(args.source, report))
    return 0


def _scale(text: str) -> Fraction:
    try:
        scale = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise UserError(f"--scale {text!r}: expected a positive number such as 1.5") from exc
    if scale <= 0:
        raise UserError(f"--scale {text!r}: expected a positive number such as 1.5")
    return scale


def _measures(tails: list[Tail]) -> dict[str, dict[str, Any]]:
    measured: dict[str, dict[str, Any]] = {}
    for result in tails:
        name = render.ratio_text(result.level * 100, 1) or ""
        measured[name.removesuffix(".0")] = {
            "var": format_e16(result.var),
            "es": format_e16(result.es),
            "tail_scenarios": result.tail_count,
            "var_e16": result.var,
            "es_e16": result.es,
        }
    return measured


def _risk_report(args: argparse.Namespace, ledger: Ledger, adequacy: Adequacy) -> dict[str, Any]:
    chosen, outcomes = adequacy.chosen, adequacy.outcomes
    worst = adequacy.worst()
    report: dict[str, Any] = {
        "source": args.source,
        "seq": ledger.seq,
        "core": ledger.engine.core_name,
        "horizon": args.horizon,
        "step": args.step or args.horizon,
        "window": args.window,
        "scale": str(_scale(args.scale)),
        "seed": args.seed,
        "scenarios": len(outcomes),
        "intervals_available": adequacy.intervals_available,
        "first_interval_start": render.iso_ts(chosen[0].start_ns),
        "last_interval_end": render.iso_ts(chosen[-1].end_ns),
        "fund_equity": format_e16(adequacy.fund_equity_e16),
    }
    for name in LOSSES:
        report[name] = _measures(adequacy.tails(name))
    report["coverage_ratio"] = render.ratio_text(adequacy.coverage("fund_draws"))
    report["equity_coverage_ratio"] = render.ratio_text(adequacy.coverage("fund_equity_loss"))
    report["scenarios_drawing_on_fund"] = sum(1 for d in adequacy.losses("fund_draws") if d)
    report["worst"] = {
        "interval_start": render.iso_ts(chosen[worst].start_ns),
        "interval_end": render.iso_ts(chosen[worst].end_ns),
        "inputs": [raw.decode() for raw in outcomes[worst].inputs],
        "total": render.outcome_json(outcomes[worst].total),
    }
    return report


def _risk_text(source: str, report: dict[str, Any]) -> str:
    rows = []
    for title, key in (
        ("fund draws", "fund_draws"),
        ("clawbacks + ADL", "clawback_and_adl"),
        ("bad debt", "bad_debt"),
        ("fund equity loss", "fund_equity_loss"),
    ):
        measured = report[key]
        rows.append(
            [
                title,
                render.cash(measured["99"]["var_e16"]),
                render.cash(measured["99"]["es_e16"]),
                render.cash(measured["99.9"]["var_e16"]),
                render.cash(measured["99.9"]["es_e16"]),
            ]
        )
    coverage, equity_coverage = report["coverage_ratio"], report["equity_coverage_ratio"]
    worst = report["worst"]
    return "\n".join(
        [
            f"fund adequacy of {source} at seq {report['seq']} ({report['core']} core): "
            f"{report['scenarios']} scenarios of {report['horizon']} "
            f"(step {report['step']}, {report['intervals_available']} intervals from "
            f"{report['first_interval_start']} to {report['last_interval_end']}), "
            f"scale {report['scale']}",
            "",
            render.table(["per scenario", "VaR 99%", "ES 99%", "VaR 99.9%", "ES 99.9%"], rows),
            "",
            f"insurance fund equity now: {render.cash(parse_e16(report['fund_equity']))}",
            "coverage (fund equity / ES 99.9% of fund draws): "
            + (coverage if coverage is not None else "unbounded (no scenario drew on the fund)"),
            "equity coverage (fund equity / ES 99.9% of its equity loss): "
            + (equity_coverage if equity_coverage is not None else "unbounded (it never fell)"),
            f"scenarios that drew on the fund: {report['scenarios_drawing_on_fund']}",
            f"worst scenario: {worst['interval_start']} to {worst['interval_end']}, "
            f"fund draws {render.cash(parse_e16(worst['total']['fund_draw']))}, "
            f"{worst['total']['accounts_liquidated']} accounts liquidated",
        ]
    )
