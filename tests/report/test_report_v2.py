"""The report's rules-version-2 sections (SPEC §9): what they collect is exactly what the
engine emitted, and they appear only for a version-2 journal."""

from __future__ import annotations

import json
import re
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clearing.engine import Engine
from clearing.journal import LocalJournal
from clearing.report import FIGURE_IDS, FIGURE_IDS_V2, collect_journal, render_html
from clearing.report._collect import ReportData

_SUMMARY = re.compile(r'<script type="application/json" id="report-summary">(.*?)</script>', re.S)
_IMG = re.compile(r'<figure id="fig-([a-z-]+)"><img alt="[^"]*" src="data:image/png;base64,')


@pytest.fixture(scope="module")
def data_v2(journal_v2: Path) -> ReportData:
    return collect_journal(str(journal_v2))


@pytest.fixture(scope="module")
def events_v2(journal_v2: Path) -> list[Any]:
    """The outputs of a fresh version-2 engine over the journal's inputs."""
    engine = Engine(rules_version=2)
    with LocalJournal(str(journal_v2), readonly=True) as journal:
        return [event for record in journal.read() for event in engine.apply(record.payload)]


def _of(events: list[Any], tag: str) -> list[Any]:
    return [e for e in events if e.__struct_config__.tag == tag]


def _summary(page: str) -> dict[str, Any]:
    found = re.search(
        r'<script type="application/json" id="report-summary">(.*?)</script>', page, re.S
    )
    assert found
    return json.loads(found.group(1))  # type: ignore[no-any-return]


def test_the_collected_rows_are_the_engine_events(
    data_v2: ReportData, events_v2: list[Any]
) -> None:
    v2 = data_v2.rules_v2
    assert v2 is not None and data_v2.rules_version == 2
    adl = _of(events_v2, "adl")
    assert adl, "the fixture's crash deleverages nobody: the test checks nothing"
    assert [(r.seq, r.account, r.market, r.cause) for r in v2.adl] == [
        (e.seq, e.account, e.market, e.cause) for e in adl
    ]
    assert sum(r.amount_e16 for r in v2.adl) == sum(Decimal(e.amount) for e in adl) * 10**16
    funding = _of(events_v2, "funding")
    assert funding and [(r.seq, r.market, r.rate) for r in v2.funding] == [
        (e.seq, e.market, e.rate) for e in funding
    ]
    # Every funding input was accepted, and is counted under its own type.
    assert data_v2.inputs_by_type["funding"] == len(funding)
    liquidations = _of(events_v2, "liquidation")
    fund = Counter[str]()
    pool = Counter[str]()
    for e in liquidations:
        fund[e.market] += int(Decimal(e.fund_fee) * 10**16)
        pool[e.market] += int((Decimal(e.fee) - Decimal(e.fund_fee)) * 10**16)
    assert dict(v2.fund_fee_e16) == dict(fund)
    assert {m: a for m, a in v2.pool_fee_e16.items() if a} == {m: a for m, a in pool.items() if a}
    assert sum(pool.values()) > 0, "no fee went to the pool: the split is not exercised"


def test_partial_steps_are_the_liquidations_that_left_a_part_or_were_repeated(
    data_v2: ReportData, events_v2: list[Any]
) -> None:
    v2 = data_v2.rules_v2
    assert v2 is not None and v2.partial_steps
    per_input = Counter((e.seq, e.account, e.market) for e in _of(events_v2, "liquidation"))
    for step in v2.partial_steps:
        # Either the account held the rest after the input, or a full step followed.
        assert step.left_e8 != 0 or per_input[step.seq, step.account, step.market] == 2
        # The same sign as the position it came from: a step never flips a position.
        assert step.left_e8 == 0 or (step.left_e8 > 0) == (step.qty_e8 > 0)


def test_samples_hold_the_volatility_and_share_of_every_market(data_v2: ReportData) -> None:
    v2 = data_v2.rules_v2
    assert v2 is not None
    samples = len(data_v2.sample_seq)
    assert set(v2.sample_volatility_e16) == set(data_v2.markets) == set(v2.sample_fund_share_e8)
    assert all(len(v) == samples for v in v2.sample_volatility_e16.values())
    assert all(len(v) == samples for v in v2.sample_fund_share_e8.values())
    # The crash market's tiers move its share; the others keep the default (all to the fund).
    assert len(set(v2.sample_fund_share_e8["SOL-PERP"])) >= 2
    assert set(v2.sample_fund_share_e8["BTC-PERP"]) == {10**8}


def test_the_v2_page_has_its_sections_figures_and_numbers(data_v2: ReportData) -> None:
    page = render_html(data_v2)
    for anchor in ("rules-v2", "adl", "partial-liquidation", "funding", "fee-split"):
        assert f'id="{anchor}"' in page
    assert [fig for fig in _IMG.findall(page)] == [*FIGURE_IDS, *FIGURE_IDS_V2]
    numbers = _summary(page)
    v2 = data_v2.rules_v2
    assert v2 is not None
    assert numbers["rules_version"] == 2
    assert numbers["rules_v2"]["adl"]["events"] == len(v2.adl)
    assert numbers["rules_v2"]["partial_steps"]["events"] == len(v2.partial_steps)
    assert set(numbers["rules_v2"]["funding_paid"]) == {r.market for r in v2.funding}


def test_a_version_1_page_has_none_of_them(journal: Path) -> None:
    data = collect_journal(str(journal))
    assert data.rules_version == 1 and data.rules_v2 is None
    page = render_html(data)
    assert 'id="rules-v2"' not in page
    assert [fig for fig in _IMG.findall(page)] == list(FIGURE_IDS)
    numbers = _summary(page)
    assert numbers["rules_version"] == 1 and "rules_v2" not in numbers
