"""The embedded mode's output sink (``clearing ingest --events``) across a kill -9.

The journal and the ledger come back exact after a kill (tests/audit covers that); this is
about the events file, the embedded mode's sink for output events."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from clearing.cli import main

from .conftest import realistic_lines

ROOT = Path(__file__).resolve().parents[2]

# Run `clearing ingest`, dying like kill -9 (no finally, no flush) right after the third
# batch is journaled and acknowledged, before its output events reach the events file.
_KILLED_INGEST = """
import os, sys
from clearing.cli import main
from clearing.sequencer import Sequencer
real = Sequencer.submit
calls = [0]
def submit(self, inputs):
    out = real(self, inputs)
    calls[0] += 1
    if calls[0] == 3:
        os._exit(137)
    return out
Sequencer.submit = submit
main(sys.argv[1:])
"""


def test_ingest_events_file_survives_a_kill(tmp_path: Path) -> None:
    stream = tmp_path / "in.jsonl"
    stream.write_bytes(b"".join(line + b"\n" for line in realistic_lines(300, seed=9)))
    journal, events = tmp_path / "journal", tmp_path / "events.jsonl"
    args = ["ingest", str(stream), "--journal", str(journal), "--events", str(events)]
    args += ["--batch", "40"]
    killed = subprocess.run([sys.executable, "-c", _KILLED_INGEST, *args], cwd=ROOT, check=False)
    assert killed.returncode == 137
    assert main(args) == 0  # resumes after line 120
    expected = tmp_path / "expected.jsonl"
    assert main(["replay", str(stream), "--rules", "1", "--events", str(expected), "-q"]) == 0
    assert events.read_bytes() == expected.read_bytes()
