"""The report's fund risk section: its figures are `clearing risk` and `clearing stress
--grid` on the same ledger, and it renders in headless Chromium like the rest of the page
(conftest.py's Chromium pass and test_rendered.py's checks, applied to the section's
figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from clearing.cli import main
from clearing.engine.state import INSURANCE_FUND
from clearing.errors import ScenarioFailed
from clearing.journal import LocalJournal
from clearing.report import FIGURE_IDS, FIGURE_IDS_V2, collect_journal, render_html
from clearing.report._collect import ReportData
from clearing.report._numbers import display_e16
from clearing.report._risk import (
    CHECKPOINT_SCENARIOS,
    RiskSection,
    collect_risk,
    read_history,
    round_duration_ns,
)
from clearing.report._risk_html import RISK_FIGURE_IDS, ratio
from clearing.risk._outcome import parse_e16
from clearing.risk._render import ratio_text
from clearing.risk._source import load_ledger
from tests.report.conftest import WINDOW_WIDTH_PX, assert_painted, render_in_chromium

CHECKPOINTS = 4
S = 10**9


@pytest.fixture(scope="module")
def journal(journal_v2: Path) -> Path:
    """The rules-version-2 journal (the demo's rules: ADL, partial steps, funding)."""
    return journal_v2


@pytest.fixture(scope="module")
def data(journal: Path) -> ReportData:
    history = read_history(str(journal))
    assert history.settings is not None
    return collect_journal(str(journal), episode_horizon_ns=history.settings.horizon_ns)


@pytest.fixture(scope="module")
def section(journal: Path, data: ReportData) -> RiskSection:
    """As ``clearing report`` computes it: the episode from the first replay."""
    return collect_risk(
        str(journal), CHECKPOINTS, read_history(str(journal)), data.fund_loss_episode
    )


def _cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert main(argv) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_round_durations() -> None:
    assert round_duration_ns(0) == S
    assert round_duration_ns(75 * S) == 60 * S
    assert round_duration_ns(3599 * S) == 1800 * S


def test_the_head_is_what_clearing_risk_says(
    journal: Path, section: RiskSection, capsys: pytest.CaptureFixture[str]
) -> None:
    assert section.horizon_ns > 0 and len(section.fund_draws_e16) > 100
    horizon, step = f"{section.horizon_ns // S}s", f"{section.step_ns // S}s"
    report = _cli_json(
        ["risk", str(journal), "--horizon", horizon, "--step", step, "--json"], capsys
    )
    assert report["seq"] == section.seq and report["scenarios"] == len(section.fund_draws_e16)
    for name, levels in section.tails_e16.items():
        expected = [(report[name][k]["var_e16"], report[name][k]["es_e16"]) for k in ("99", "99.9")]
        assert levels == expected, name
    assert ratio_text(section.coverage) == report["coverage_ratio"]
    assert ratio_text(section.equity_coverage) == report["equity_coverage_ratio"]


def test_a_checkpoint_is_what_clearing_risk_says_there(
    journal: Path, section: RiskSection, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = [p for p in section.coverage_over_time if p.seq != section.seq]
    assert earlier, "no checkpoint before the head had a horizon of history"
    point = earlier[-1]
    horizon, step = f"{section.horizon_ns // S}s", f"{section.step_ns // S}s"
    argv = ["risk", str(journal), "--until", str(point.seq), "--horizon", horizon]
    limit = str(CHECKPOINT_SCENARIOS)
    report = _cli_json([*argv, "--step", step, "--scenarios", limit, "--json"], capsys)
    assert report["scenarios"] == point.scenarios
    assert report["fund_draws"]["99.9"]["es_e16"] == point.es999_e16
    assert report["coverage_ratio"] == ratio_text(point.coverage)


def test_the_grid_is_what_clearing_stress_says(
    journal: Path, section: RiskSection, capsys: pytest.CaptureFixture[str]
) -> None:
    grid = _cli_json(["stress", str(journal), "--grid", "--json"], capsys)["grid"]
    markets = {row["market"] for row in grid}
    assert len(markets) >= 2 and len(section.grid) == len(grid) == 8 * len(markets)
    for row, expected in zip(section.grid, grid, strict=True):
        assert row.market == expected["market"]
        assert (row.liquidations, row.accounts) == (
            expected["liquidations"],
            expected["accounts_liquidated"],
        )
        assert row.fund_draw_e16 == expected["fund_draw_e16"]
        assert row.shared_e16 == expected["clawback_and_adl_e16"]
        assert row.bad_debt_e16 == expected["bad_debt_e16"]
        assert row.fund_equity_after_e16 == expected["fund_equity_after_e16"]


def test_the_backtest_is_what_clearing_risk_said_just_before_the_episode(
    journal: Path, section: RiskSection, capsys: pytest.CaptureFixture[str]
) -> None:
    test = section.backtest
    assert test is not None and test.scenarios > 100, "no back-test, or too little history"
    horizon, step = f"{section.horizon_ns // S}s", f"{section.step_ns // S}s"
    until = str(test.episode.start_seq)
    argv = ["risk", str(journal), "--until", until, "--horizon", horizon, "--step", step]
    report = _cli_json([*argv, "--json"], capsys)
    assert report["seq"] == test.episode.start_seq and report["scenarios"] == test.scenarios
    assert parse_e16(report["fund_equity"]) == test.fund_equity_e16
    for name, levels in test.tails_e16.items():
        expected = [(report[name][k]["var_e16"], report[name][k]["es_e16"]) for k in ("99", "99.9")]
        assert levels == expected, name
    assert ratio_text(test.coverage) == report["coverage_ratio"]
    assert ratio_text(test.equity_coverage) == report["equity_coverage_ratio"]


def test_the_backtest_actual_is_what_the_journal_recorded(
    journal: Path, section: RiskSection
) -> None:
    """Added up here from the recorded outputs, and the fund's equity at both ends from
    ledgers rebuilt by replay (clearing stress's loader)."""
    test = section.backtest
    assert test is not None
    start, end = test.episode.start_seq, test.episode.end_seq
    sums = dict.fromkeys(("fund_draw", "shared", "bad_debt", "paid_in", "liquidations"), 0)
    accounts: set[str] = set()
    with LocalJournal(str(journal), readonly=True) as reader:
        for record in reader.read(start + 1, end):
            payload = json.loads(record.payload)
            if payload["type"] in ("deposit", "withdraw") and payload["account"] == INSURANCE_FUND:
                sign = 1 if payload["type"] == "deposit" else -1
                sums["paid_in"] += sign * parse_e16(payload["amount"])
            for event in map(json.loads, record.outputs.splitlines()):
                kind = event["type"]
                if kind == "liquidation":
                    sums["liquidations"] += 1
                    accounts.add(event["account"])
                elif kind in ("fund_draw", "bad_debt"):
                    sums[kind] += parse_e16(event["amount"])
                elif kind in ("clawback", "adl"):
                    sums["shared"] += parse_e16(event["amount"])
    before = load_ledger(str(journal), start, "python").engine.summary().fund_equity_e16
    after = load_ledger(str(journal), end, "python").engine.summary().fund_equity_e16
    assert (test.fund_equity_e16, test.fund_equity_end_e16) == (before, after)
    assert test.paid_in_e16 == sums["paid_in"]
    assert (test.liquidations, test.accounts) == (sums["liquidations"], len(accounts))
    assert test.actual_e16 == {
        "fund_draws": sums["fund_draw"],
        "clawback_and_adl": sums["shared"],
        "bad_debt": sums["bad_debt"],
        "fund_equity_loss": max(0, before - (after - sums["paid_in"])),
    }
    # The first replay (Python core, report data) found the same fall as this replay.
    assert test.episode.loss_e16 == before - (after - sums["paid_in"]) > 0
    assert sums["liquidations"] > 0 and sums["shared"] > 0, "the crash is not in the episode"


def test_the_section_is_on_the_page_and_only_when_asked(
    section: RiskSection, data: ReportData
) -> None:
    assert 'id="fund-risk"' not in render_html(data)
    page = render_html(data, section)
    assert page.count('id="fund-risk"') == 1
    assert f"<b>{ratio(section.coverage)}</b>" in page
    assert page.count("<tr>") >= len(section.grid) + len(section.coverage_over_time) + 8
    test = section.backtest
    assert test is not None
    assert "<h3>Back-test: the journal's largest fund loss</h3>" in page
    assert f"actual, seq {test.episode.start_seq + 1:,}..{test.episode.end_seq:,}" in page
    assert display_e16(test.actual_e16["fund_equity_loss"]) in page


@pytest.fixture(scope="module")
def rendered(
    data: ReportData, section: RiskSection, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    page = render_html(data, section)
    return render_in_chromium(page, tmp_path_factory.mktemp("risk-rendered"))


def test_the_section_renders_its_plots_on_screen(rendered: dict[str, Any]) -> None:
    rects = {r["id"]: r for r in rendered["layout"]["rects"]}
    assert list(rects) == [*FIGURE_IDS, *FIGURE_IDS_V2, *RISK_FIGURE_IDS]
    shot: Image.Image = rendered["shot"]
    for fig_id in RISK_FIGURE_IDS:
        rect, embedded = rects[fig_id], rendered["embedded"][fig_id]
        assert (rect["natural_w"], rect["natural_h"]) == embedded.size
        assert rect["natural_w"] == 1000 and rect["natural_h"] >= 300, rect
        assert rect["w"] >= rect["natural_w"] and rect["x"] + rect["w"] <= WINDOW_WIDTH_PX
        assert_painted(shot, rect, embedded)


def test_a_failed_scenario_is_one_line_and_no_report(
    journal: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def fail(journal_dir: str, **_: object) -> RiskSection:
        raise ScenarioFailed("scenario 3: the child exited with status 70")

    monkeypatch.setattr("clearing.report._command.collect_risk", fail)
    out = tmp_path / "r.html"
    assert main(["report", str(journal), "-o", str(out), "--risk"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("clearing report: the fund risk section failed") and "--risk" in line
    assert not out.exists()


def test_the_section_is_on_the_page_only_with_risk(
    journal: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opt-in (its scenarios cost several times the rest of the report): the default page
    has no section and runs no scenario; --risk adds it."""
    calls: list[str] = []

    def counted(journal_dir: str, **kwargs: Any) -> RiskSection:
        calls.append(journal_dir)
        return collect_risk(journal_dir, 2, **kwargs)

    monkeypatch.setattr("clearing.report._command.collect_risk", counted)
    default, with_risk = tmp_path / "default.html", tmp_path / "risk.html"
    assert main(["report", str(journal), "-o", str(default), "-q"]) == 0
    assert not calls and 'id="fund-risk"' not in default.read_text(encoding="utf-8")
    assert main(["report", str(journal), "-o", str(with_risk), "-q", "--risk"]) == 0
    page = with_risk.read_text(encoding="utf-8")
    assert len(calls) == 1 and page.count('id="fund-risk"') == 1
    assert "<h3>Back-test: the journal's largest fund loss</h3>" in page
