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
from clearing.errors import ScenarioFailed
from clearing.report import FIGURE_IDS, collect_journal, render_html
from clearing.report._risk import RiskSection, collect_risk, round_duration_ns
from clearing.report._risk_html import RISK_FIGURE_IDS, ratio
from clearing.risk._render import ratio_text
from tests.report.conftest import WINDOW_WIDTH_PX, assert_painted, render_in_chromium

CHECKPOINTS = 4
S = 10**9


@pytest.fixture(scope="module")
def section(journal: Path) -> RiskSection:
    return collect_risk(str(journal), checkpoints=CHECKPOINTS)


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
    report = _cli_json([*argv, "--step", step, "--scenarios", "100", "--json"], capsys)
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


def test_the_section_is_on_the_page_and_only_when_asked(
    journal: Path, section: RiskSection
) -> None:
    data = collect_journal(str(journal))
    assert 'id="fund-risk"' not in render_html(data)
    page = render_html(data, section)
    assert page.count('id="fund-risk"') == 1
    assert f"<b>{ratio(section.coverage)}</b>" in page
    assert page.count("<tr>") >= len(section.grid) + len(section.coverage_over_time) + 4


@pytest.fixture(scope="module")
def rendered(
    journal: Path, section: RiskSection, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    page = render_html(collect_journal(str(journal)), section)
    return render_in_chromium(page, tmp_path_factory.mktemp("risk-rendered"))


def test_the_section_renders_its_plots_on_screen(rendered: dict[str, Any]) -> None:
    rects = {r["id"]: r for r in rendered["layout"]["rects"]}
    assert list(rects) == [*FIGURE_IDS, *RISK_FIGURE_IDS]
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
    def fail(journal_dir: str) -> RiskSection:
        raise ScenarioFailed("scenario 3: the child exited with status 70")

    monkeypatch.setattr("clearing.report._command.collect_risk", fail)
    out = tmp_path / "r.html"
    assert main(["report", str(journal), "-o", str(out)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("clearing report: the fund risk section failed") and "--no-risk" in line
    assert not out.exists()
