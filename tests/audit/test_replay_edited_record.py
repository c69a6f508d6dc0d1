"""`clearing replay` of a journal whose record was edited by someone who also fixed up the
record's CRC: only the hash chain can tell, and the replay must say so and fail, on both
cores (the native one scans and verifies frames itself)."""

from __future__ import annotations

import os
from pathlib import Path

import crc32c
import msgspec
import pytest

from clearing.cli import main
from clearing.engine.native import native_available
from tests.journal.helpers import FRAME_HEADER_BYTES, read_segment, segment_paths

CORES = ["python", "native"] if native_available() or os.environ.get("CI") else ["python"]

INPUTS = b"".join(
    line + b"\n"
    for line in (
        b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"1000"}',
        b'{"type":"deposit","account":"b","amount":"1000"}',
        b'{"type":"fill","fill_id":"f1","market":"M","price":"100","qty":"5","buyer":"a",'
        b'"seller":"b"}',
        b'{"type":"oracle","market":"M","price":"90"}',
    )
)


def _journal_with_edited_deposit(tmp_path: Path) -> Path:
    """Ingest INPUTS, then make a's deposit 9000 instead of 1000 and fix the frame's CRC."""
    source = tmp_path / "inputs.jsonl"
    source.write_bytes(INPUTS)
    journal = tmp_path / "journal"
    assert main(["ingest", str(source), "--journal", str(journal)]) == 0
    segment = segment_paths(journal)[0]
    _, _, frames = read_segment(segment)
    target = next(f for f in frames if b'"account":"a"' in f.payload)
    data = bytearray(Path(segment).read_bytes())
    body_at = target.offset + FRAME_HEADER_BYTES
    fields = msgspec.msgpack.decode(bytes(data[body_at : target.end]))
    fields[2] = fields[2].replace(b'"1000"', b'"9000"')
    body = msgspec.msgpack.encode(fields)
    assert len(body) == target.end - body_at  # same length: only the chain can tell
    data[body_at : target.end] = body
    data[body_at - 4 : body_at] = crc32c.crc32c(body).to_bytes(4, "big")
    Path(segment).write_bytes(bytes(data))
    return journal


@pytest.mark.parametrize("core", CORES)
def test_replay_refuses_an_edited_record_with_a_fixed_crc(
    core: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = _journal_with_edited_deposit(tmp_path)
    capsys.readouterr()
    state = tmp_path / "state.json"
    code = main(["replay", str(journal), "--state", str(state), "-q", "--core", core])
    err = capsys.readouterr().err
    assert code != 0
    assert "chain" in err and err.count("\n") == 1, err
    assert not state.exists() or b'"9000"' not in state.read_bytes()
