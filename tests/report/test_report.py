"""``clearing report``: renders from a journal, every figure embedded, and its headline
numbers agree with what the journal itself recorded."""

from __future__ import annotations

import base64
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import Engine
from clearing.journal import LocalJournal, Record
from clearing.report import FIGURE_IDS, collect_journal, long_open_interest_e8
from tests.report.conftest import journal_of as _journal_of

ROOT = Path(__file__).resolve().parents[2]
_IMG = re.compile(
    r'<figure id="fig-([a-z-]+)"><img alt="[^"]*" src="data:image/png;base64,([^"]+)"'
)


@pytest.fixture(scope="module")
def report(journal: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("out") / "report.html"
    assert main(["report", str(journal), "-o", str(out), "-q"]) == 0
    return out.read_text(encoding="utf-8")


def _summary(page: str) -> dict[str, dict[str, object]]:
    start = page.index('<script type="application/json" id="report-summary">')
    return json.loads(page[page.index(">", start) + 1 : page.index("</script>", start)])


def _recorded_outputs(journal: Path) -> list[dict[str, str]]:
    """The output events as the journal recorded them, read without the report's code."""
    events = []
    with LocalJournal(journal, readonly=True) as log:
        for record in log.read():
            events += [json.loads(line) for line in record.outputs.splitlines()]
    return events


def test_every_figure_is_an_embedded_png(report: str) -> None:
    figures = dict(_IMG.findall(report))
    assert list(figures) == list(FIGURE_IDS)
    for data in figures.values():
        assert base64.b64decode(data).startswith(b"\x89PNG\r\n\x1a\n")
    # Self-contained: nothing is fetched from anywhere.
    assert "http://" not in report and "https://" not in report
    assert "<h2>Largest liquidations</h2>" in report and "<h2>Largest clawbacks</h2>" in report


def test_headline_numbers_match_the_recorded_outputs(journal: Path, report: str) -> None:
    recorded = _recorded_outputs(journal)

    def of(kind: str) -> list[dict[str, str]]:
        return [e for e in recorded if e["type"] == kind]

    def total(kind: str, field: str = "amount") -> Decimal:
        return sum((Decimal(e[field]) for e in of(kind)), Decimal(0))

    numbers = _summary(report)
    assert of("bad_debt")  # the fixture's crash reaches the last layer
    assert numbers["liquidations"]["events"] == len(of("liquidation"))
    assert Decimal(numbers["liquidations"]["fees_charged"]) == total("liquidation", "fee")
    assert numbers["fund_draws"]["events"] == len(of("fund_draw"))
    assert Decimal(numbers["fund_draws"]["amount"]) == total("fund_draw")
    assert numbers["clawbacks"]["events"] == len(of("clawback"))
    assert Decimal(numbers["clawbacks"]["amount"]) == total("clawback")
    assert numbers["bad_debt"]["events"] == len(of("bad_debt"))
    assert Decimal(numbers["bad_debt"]["amount"]) == total("bad_debt")
    assert numbers["bad_debt"]["unrecovered"] == numbers["bad_debt"]["amount"]
    assert numbers["oracle_ticks_held"] == len(of("oracle_held"))
    # The same numbers are on the page for people.
    assert f'<div class="v">{len(of("liquidation")):,}</div>' in report
    with LocalJournal(journal, readonly=True) as log:
        assert numbers["journal"]["head_hash"] == log.head_hash.hex()
        assert numbers["inputs"]["total"] == log.last_seq
    assert numbers["verification"]["records_with_outputs_verified"] == sum(
        1 for _ in {e["seq"] for e in recorded}
    )


def test_open_interest_samples_match_a_full_scan(journal: Path) -> None:
    # Sampled at every input: the running open interest equals a scan of the holders.
    data = collect_journal(str(journal), max_samples=10**9)
    engine = Engine()
    with LocalJournal(journal, readonly=True) as log:
        for i, record in enumerate(log.read()):
            engine.apply(record.payload)
            scan = long_open_interest_e8(engine.ledger)
            assert {m: data.sample_long_oi_e8[m][i] for m in scan} == scan, record.seq


def test_journal_without_timestamps_uses_seq_as_time(tmp_path: Path) -> None:
    lines = (ROOT / "docs/examples/worked-example.jsonl").read_bytes().splitlines()
    lines = [line for line in lines if line.strip()] + [b"not json", b'{"type":"teleport"}']
    journal = _journal_of(lines, tmp_path / "journal")
    out = tmp_path / "worked.html"
    assert main(["report", str(journal), "-o", str(out), "-q"]) == 0
    page = out.read_text(encoding="utf-8")
    numbers = _summary(page)
    assert numbers["time_axis"] == "seq"
    assert numbers["clawbacks"] == {"events": 1, "payers": 1, "amount": "30"}
    assert numbers["fund_draws"] == {"events": 1, "amount": "20"}
    # Bad inputs are counted, under bounded names.
    assert numbers["inputs"]["rejects"] == {"malformed": 1, "unknown_type": 1}
    assert numbers["inputs"]["by_type"]["malformed"] == 1
    assert numbers["inputs"]["by_type"]["unknown"] == 1
    assert len(_IMG.findall(page)) == len(FIGURE_IDS)


def test_a_journal_that_does_not_replay_gets_no_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "forged"
    with LocalJournal(journal) as log:
        log.append(
            [
                Record(1, "t", b'{"type":"withdraw","account":"a","amount":"1"}',
                       b'{"type":"withdrawal","seq":1,"account":"a","amount":"1"}\n'),
            ]
        )  # fmt: skip
    out = tmp_path / "r.html"
    assert main(["report", str(journal), "-o", str(out)]) == 2
    assert "does not replay" in capsys.readouterr().err
    assert not out.exists()


def test_missing_journal_is_a_user_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2
    assert "no journal segments" in capsys.readouterr().err


def test_a_journal_without_markets_still_renders_every_figure(tmp_path: Path) -> None:
    journal = _journal_of([b'{"type":"deposit","account":"a","amount":"5"}'], tmp_path / "j")
    out = tmp_path / "tiny.html"
    assert main(["report", str(journal), "-o", str(out), "-q"]) == 0
    page = out.read_text(encoding="utf-8")
    assert [fig for fig, _ in _IMG.findall(page)] == list(FIGURE_IDS)
    assert _summary(page)["liquidations"]["events"] == 0
