"""The native journal replay loop (``Core.replay_frames`` behind ``clearing replay DIR``)
against the per-record loop and the Python core: the same events, state, messages and
exit codes, on journals with deferred and refused inputs, damage, and recorded outputs
that diverge."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import Engine
from clearing.engine.native import NativeEngine, native_available
from clearing.journal import LocalJournal, Record
from clearing.sequencer import _replay as replay_loop
from clearing.sequencer import encode_outputs
from tools.gen_events import generate

pytestmark = pytest.mark.skipif(
    not native_available() or not NativeEngine().replays_frames,
    reason="needs the native core with replay_frames",
)

ROOT = Path(__file__).resolve().parents[2]

# Inputs the fast parser defers (escapes, invalid fields, bad JSON) or the core refuses
# (Python writes those rejects), among ordinary ones.
ODD = [
    b'{"type":"deposit","account":"a\\u0031","amount":"5"}',
    b"not json",
    b'{"type":"deposit","account":"fee-pool","amount":"1"}',
    b'{"type":"fill","fill_id":"x1","market":"NOPE","price":"1","qty":"1","buyer":"a1","seller":"a2"}',
    b'{"type":"withdraw","account":"a3","amount":"99999999"}',
    b'{"type":"withdraw","account":"nobody","amount":"1"}',
    b'{"type":"oracle","market":"M0","price":"1.5e3"}',
    b'{"type":"deposit","account":"a4","amount":"-1"}',
    b'{"type":"fill","fill_id":"x2","market":"M0","price":"1","qty":"1","buyer":"a5","seller":"a5"}',
]


def _inputs() -> list[bytes]:
    lines = list(generate(2_500, 150, 3, seed=11))
    for i, odd in enumerate(ODD):
        lines.insert(300 + 211 * i, odd)
    fill = next(line for line in lines if b'"fill"' in line and b"fill_id" in line)
    lines.insert(1900, fill)  # a duplicate fill: refused
    worked = (ROOT / "docs/examples/worked-example.jsonl").read_bytes().split(b"\n")
    return lines + [line for line in worked if line.strip()]


def _journal(path: Path, wrong_outputs: frozenset[int] = frozenset()) -> None:
    """Journal the inputs with the Python core's outputs (or wrong ones at some seqs)."""
    engine = Engine()
    records = []
    for seq, raw in enumerate(_inputs(), start=1):
        outputs = encode_outputs(engine.apply(raw))
        if seq in wrong_outputs:
            outputs = b'{"type":"bogus"}\n'
        records.append(Record(seq, f"file:inputs.jsonl:{seq}", raw, outputs))
    with LocalJournal(str(path), segment_bytes=64 * 1024) as journal:
        for i in range(0, len(records), 97):
            journal.append(records[i : i + 97])


def _replay(
    journal: Path, tmp: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, bytes, bytes, str]:
    events, state = tmp / "out.events", tmp / "out.state"
    for path in (events, state):
        if path.exists():
            path.unlink()
    capsys.readouterr()
    code = main(["replay", str(journal), "--events", str(events), "--state", str(state), *extra])
    err = capsys.readouterr().err
    return (
        code,
        events.read_bytes(),
        state.read_bytes() if state.exists() else b"",
        err,
    )


def _three_ways(
    journal: Path,
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *extra: str,
) -> tuple[int, bytes, bytes, str]:
    """Replay on the native loop, the per-record native loop and the Python core; all
    three must agree; return what they gave."""
    native = _replay(journal, tmp, capsys, "--core", "native", *extra)
    with monkeypatch.context() as patch:
        patch.setattr(NativeEngine, "replays_frames", property(lambda self: False))
        per_record = _replay(journal, tmp, capsys, "--core", "native", *extra)
    python = _replay(journal, tmp, capsys, "--core", "python", *extra)
    assert native == per_record
    assert native == python
    return native


@pytest.mark.parametrize("batch", [1, 5, 1024])
def test_native_loop_matches_per_record_loop_and_python_core(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    batch: int,
) -> None:
    monkeypatch.setattr(replay_loop, "WINDOW_BATCH_RECORDS", batch)
    journal = tmp_path / "journal"
    _journal(journal)
    assert len(os.listdir(journal)) > 3  # several segments
    code, events, _, err = _three_ways(journal, tmp_path, capsys, monkeypatch)
    assert code == 0 and b'"reject"' in events and b'"liquidation"' in events, err
    # Every odd input but the escaped deposit is rejected, and so is the repeated fill.
    assert events.count(b'"reject"') == len(ODD)
    for until in ("1", "777", "2000"):
        code, events, _, _ = _three_ways(journal, tmp_path, capsys, monkeypatch, "--until", until)
        assert code == 0


def test_native_loop_reports_the_same_divergences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replay_loop, "WINDOW_BATCH_RECORDS", 64)
    journal = tmp_path / "journal"
    # 301: a deferred input (its reject is written by Python); others applied natively.
    _journal(journal, frozenset({40, 301, 1500, 1501}))
    code, _, _, err = _three_ways(journal, tmp_path, capsys, monkeypatch)
    assert code == 1
    assert "DIVERGED: 4 record(s)" in err and "first divergence at seq 40 " in err
    code, _, _, err = _three_ways(
        journal, tmp_path, capsys, monkeypatch, "--no-verify-outputs", "-q"
    )
    assert code == 0 and err == ""


def test_native_loop_stops_at_damage_as_the_reader_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = tmp_path / "journal"
    _journal(journal)
    segments = sorted(p for p in os.listdir(journal) if p.endswith(".seg"))
    middle = journal / segments[1]
    data = bytearray(middle.read_bytes())
    data[len(data) // 2] ^= 0x40
    middle.write_bytes(bytes(data))
    code, events, _, err = _three_ways(journal, tmp_path, capsys, monkeypatch)
    assert code == 1 and "journal is corrupt" in err and "CRC" in err
    assert events  # the records before the damage were replayed and written


def _recover(journal: Path, core: str, until: int | None = None) -> tuple[bytes, int, str]:
    from clearing.audit.replay import encode_state
    from clearing.sequencer import RecoveryError, recover

    with LocalJournal(str(journal), readonly=True) as log:
        try:
            result = recover(None, log, until_seq=until, core=core)
        except RecoveryError as exc:
            return b"", 0, f"{type(exc).__name__}: {exc}"
        return encode_state(result.engine), result.replayed, ""


def test_native_recovery_loop_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(replay_loop, "WINDOW_BATCH_RECORDS", 50)
    journal = tmp_path / "journal"
    _journal(journal)
    forged = tmp_path / "forged"
    _journal(forged, frozenset({301, 1234}))
    for path, until in ((journal, None), (journal, 999), (forged, None), (forged, 300)):
        native = _recover(path, "native", until)
        with monkeypatch.context() as patch:
            patch.setattr(NativeEngine, "replays_frames", property(lambda self: False))
            per_record = _recover(path, "native", until)
        python = _recover(path, "python", until)
        assert native == per_record == python
        if path == forged and until is None:
            assert native[2].startswith("OutputDivergence: journal seq 301:")
        else:
            assert native[1] == until or native[1] > 2000
