"""tools/bench_proof.py keeps working: a tiny run prints its three measurements."""

from __future__ import annotations

import json

import pytest

from tools.bench_proof import main


def test_bench_proof_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--accounts", "300", "--proofs", "20", "--ledger"]) == 0
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [result["bench"] for result in results] == ["tree", "verify", "ledger"]
    assert results[0]["accounts"] == 300 and results[0]["depth"] == 9
    assert results[1]["command_exit"] == 0  # the `clearing proof verify` process verified
    assert results[2]["accounts"] == 300
