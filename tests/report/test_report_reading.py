"""The report as an exchange's risk officer reads it: deposits to the fund are events with
amounts, every panel says what it shows and in which unit, the time axes line up, nothing
is clipped, and the wording of signs and counts cannot be misread."""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.journal import LocalJournal
from clearing.report import collect_journal, render_html, replay_sentence, summary
from clearing.report._collect import ReportData
from clearing.report._figures import FIGURE_IDS, MONEY_UNIT, Axis, figures, time_bin

FUND = "insurance-fund"
# Figures whose x axis is time (or seq): they must line up when stacked on the page.
TIME_FIGURES = (
    "marks",
    "fund-equity",
    "fund-to-oi",
    "open-interest",
    "liquidations-by-time",
    "waterfall-over-time",
)


@pytest.fixture(scope="module")
def data(journal: Path) -> ReportData:
    return collect_journal(str(journal))


@pytest.fixture(scope="module")
def drawn(data: ReportData) -> dict[str, object]:
    return {fig_id: draw() for fig_id, draw in figures(data, Axis(data)).items()}


@pytest.fixture(scope="module")
def page(data: ReportData) -> str:
    return render_html(data)


def _fund_deposits_in(journal: Path) -> list[tuple[int, Decimal]]:
    """Deposits to the fund as the journal recorded the inputs, read without the report."""
    found = []
    with LocalJournal(journal, readonly=True) as log:
        for record in log.read():
            entry = json.loads(record.payload)
            if entry.get("type") == "deposit" and entry.get("account") == FUND:
                found.append((record.seq, Decimal(str(entry["amount"]))))
    return found


def test_fund_deposits_are_events_with_amounts(journal: Path, data: ReportData, page: str) -> None:
    deposits = _fund_deposits_in(journal)
    assert len(deposits) == 2  # the seed capital and the top-up after the crash
    fund = summary(data)["insurance_fund"]
    listed = fund["deposit_events"]
    assert [(e["seq"], Decimal(e["amount"])) for e in listed] == deposits
    final, deposited = Decimal(fund["final_equity"]), Decimal(fund["deposited"])
    assert deposited == sum(amount for _, amount in deposits)
    assert Decimal(fund["equity_before_top_ups"]) == final - deposited
    # The fund fell below zero and was rescued: the page says both, with the amounts.
    assert Decimal(fund["lowest_sampled_equity"]) < 0
    assert '<div class="k">fund before top-ups</div>' in page
    assert '<h3 id="fund-deposits">Deposits to the insurance fund</h3>' in page
    for _, amount in deposits:
        assert f'<td class="num">+{amount:,.2f}</td>' in page
    # Each deposit is labelled with its amount on the fund plot.
    (ax, _) = drawn_axes(data, "fund-equity")
    labels = [t.get_text() for t in ax.texts]
    for _, amount in deposits:
        assert f"deposit +{amount:,.0f}" in labels
    assert "equity without deposits" in [line.get_label() for line in ax.lines]


def drawn_axes(data: ReportData, fig_id: str) -> list[object]:
    return list(figures(data, Axis(data))[fig_id]().axes)


def test_every_panel_has_axis_labels_and_units(drawn: dict[str, object]) -> None:
    assert list(drawn) == list(FIGURE_IDS)
    for fig_id, figure in drawn.items():
        axes = figure.axes  # type: ignore[attr-defined]
        for ax in axes:
            if not ax.get_visible() or not ax.axison:
                continue
            if fig_id != "deficit-coverage":  # one horizontal bar: no y scale to label
                assert ax.get_ylabel(), f"{fig_id}: a panel without a y label"
            label = ax.get_ylabel() + ax.get_xlabel()
            assert f"({MONEY_UNIT}" in label or "(%)" in label, f"{fig_id}: no unit in {label!r}"
        assert axes[-1].get_xlabel(), f"{fig_id}: no x label"


def test_time_axes_of_stacked_figures_line_up(drawn: dict[str, object]) -> None:
    edges = set()
    for fig_id in TIME_FIGURES:
        figure = drawn[fig_id]
        width_in = figure.get_figwidth()  # type: ignore[attr-defined]
        for ax in figure.axes:  # type: ignore[attr-defined]
            box = ax.get_position()
            # Plot-area edges in inches from the left, and the x range shown.
            edges.add((round(box.x0 * width_in, 3), round(box.x1 * width_in, 3), ax.get_xlim()))
    assert len(edges) == 1, edges


def test_fund_to_open_interest_is_never_clipped(data: ReportData, drawn: dict[str, object]) -> None:
    (ax,) = drawn["fund-to-oi"].axes  # type: ignore[attr-defined]
    low, high = ax.get_ylim()
    ys = [y for line in ax.lines for y in line.get_ydata() if not math.isnan(y)]
    assert ys and low <= min(ys) and max(ys) <= high
    # The ratio is not drawn at all while open interest is tiny, and the plot says so.
    ratio_line = ax.lines[0]
    assert math.isnan(ratio_line.get_ydata()[1])
    assert any("not drawn" in t.get_text() for t in ax.texts)


def test_positions_taken_over_are_labelled_as_a_signed_net_figure(
    drawn: dict[str, object],
) -> None:
    _, ax_positions = drawn["fund-equity"].axes  # type: ignore[attr-defined]
    title = ax_positions.get_title()
    assert "net value" in title and "longs positive, shorts negative" in title


def test_liquidation_volume_states_its_bin_width(
    data: ReportData, drawn: dict[str, object]
) -> None:
    width, words = time_bin(Axis(data))
    assert words == "15 s"  # 15 simulated minutes in round bins of at most TIME_BINS
    axes = drawn["liquidations-by-time"].axes  # type: ignore[attr-defined]
    assert f"per {words} bin" in axes[0].get_title()
    # One filled panel per market that had liquidations, bars exactly one bin wide.
    assert [ax.get_ylabel().split("\n")[0] for ax in axes] == sorted(
        {r.market for r in data.liquidations}
    )
    for ax in axes:
        assert all(math.isclose(p.get_width(), width, rel_tol=1e-6) for p in ax.patches)


def test_round_bin_widths() -> None:
    class _Fake:
        def __init__(self, by_time: bool, span: float) -> None:
            self.by_time, self.start, self.end = by_time, 0.0, span

    day = 1.0
    assert time_bin(_Fake(True, day / 24)) == (60 / 86_400, "1 min")  # type: ignore[arg-type]
    assert time_bin(_Fake(True, day))[1] == "30 min"  # type: ignore[arg-type]
    assert time_bin(_Fake(False, 53_752.0)) == (1_000.0, "1,000 inputs")  # type: ignore[arg-type]
    assert time_bin(_Fake(False, 30.0)) == (1.0, "1 input")  # type: ignore[arg-type]
    assert time_bin(_Fake(False, 900.0)) == (20.0, "20 inputs")  # type: ignore[arg-type]


def test_qty_closed_sign_is_explained(page: str) -> None:
    assert '<th class="num">position closed</th>' in page
    assert "positive for a long" in page and "negative for a short" in page
    cells = re.findall(r'<td class="num">(-?[\d,.]+) \((long|short)\)</td>', page)
    assert cells
    for qty, side in cells:
        assert (side == "long") == (not qty.startswith("-"))


def test_replay_counts_are_not_misleading(data: ReportData, page: str) -> None:
    sentence = replay_sentence(data.inputs, data.verified_records, data.unrecorded_outputs)
    assert sentence == (
        f"all {data.inputs:,} inputs re-applied; the {data.verified_records:,} that recorded "
        f"outputs got byte-identical ones, the other "
        f"{data.inputs - data.verified_records:,} recorded none and produced none"
    )
    assert "records compared" not in page
    assert sentence in page
    assert replay_sentence(10, 3, 2).endswith("; 2 produced outputs the journal did not record")


def test_cli_line_rounds_bad_debt_like_the_page(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(journal), "-o", str(tmp_path / "r.html")]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    exact = Decimal(summary(collect_journal(str(journal)))["bad_debt"]["amount"])
    assert exact != round(exact, 2)  # the exact figure has more than two decimals
    assert f"bad debt {round(exact, 2):,.2f} (" in line
