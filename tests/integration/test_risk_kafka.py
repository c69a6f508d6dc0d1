"""Fund risk of the journal topic (``kafka://``): ``clearing stress`` and ``clearing risk``
report on it what they report on a journal directory holding the same records."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.journal import LocalJournal
from tests.integration.test_daemon import TEST_TIMEOUT_S, setup_ledger
from tests.integration.test_journal_audit import append_to_journal, run_cli
from tests.risk.ledger import ledger_inputs

pytestmark = pytest.mark.kafka

UNTIL_SEQ = 120
COMMANDS = (
    ("stress", "--shock", "BTC-PERP=-25%", "--shock", "ETH-PERP=-15%"),
    ("stress", "--grid"),
    ("risk", "--horizon", "4s", "--step", "1s", "--scale", "12"),
)


def _report(stdout: str) -> dict[str, object]:
    """The JSON report less the source it names (the only field that may differ)."""
    report = json.loads(stdout)
    if isinstance(report, dict):
        report.pop("source", None)
    return report


async def test_fund_risk_of_the_journal_topic_equals_the_journal_directory(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        inputs = tmp_path / "inputs.jsonl"
        inputs.write_bytes(b"\n".join(ledger_inputs()) + b"\n")
        journal = tmp_path / "journal"
        assert main(["ingest", str(inputs), "--journal", str(journal)]) == 0
        with LocalJournal(str(journal), readonly=True) as log:
            records = list(log.read())
        assert len(records) > UNTIL_SEQ
        config = await setup_ledger(tmp_path, kafka_bootstrap, "risk")
        await append_to_journal(config, records)
        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        for command in COMMANDS:
            for until in ([], ["--until", str(UNTIL_SEQ)]):
                reports = []
                for source in (str(journal), topic):
                    argv = (command[0], source, *command[1:], *until, "--json", "--jobs", "1")
                    done = await run_cli(*argv)
                    assert done.returncode == 0, (argv, done.stderr)
                    reports.append(_report(done.stdout))
                assert reports[0] == reports[1], command
                assert reports[0]
        missing = await run_cli(
            "risk", f"kafka://{kafka_bootstrap}/no-such-topic", "--horizon", "4s"
        )
        assert missing.returncode == 2
        assert missing.stderr.count("\n") == 1, missing.stderr
