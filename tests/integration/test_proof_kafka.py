"""Issue 21: a proof of liabilities built from the journal topic (``kafka://``) is the
one built from a journal directory holding the same records, byte for byte."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.journal import LocalJournal
from tests.integration.test_daemon import TEST_TIMEOUT_S, setup_ledger
from tests.integration.test_journal_audit import append_to_journal, run_cli
from tools.gen_events import generate

pytestmark = pytest.mark.kafka

UNTIL_SEQ = 500


async def test_proof_from_the_journal_topic_equals_the_journal_directory(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(4 * TEST_TIMEOUT_S):
        inputs = tmp_path / "inputs.jsonl"
        inputs.write_bytes(b"\n".join(generate(800, 80, 2, seed=21)) + b"\n")
        journal = tmp_path / "journal"
        assert main(["ingest", str(inputs), "--journal", str(journal)]) == 0
        with LocalJournal(str(journal), readonly=True) as log:
            records = list(log.read())
        config = await setup_ledger(tmp_path, kafka_bootstrap, "proof")
        await append_to_journal(config, records)
        seed = tmp_path / "seed"
        seed.write_bytes(b"a secret seed of thirty-two byte")
        seed.chmod(0o600)
        topic = f"kafka://{kafka_bootstrap}/{config.topics.journal}"
        for until in ([], ["--until", str(UNTIL_SEQ)]):
            built = []
            for source in (str(journal), topic):
                out = tmp_path / f"out-{len(until)}-{len(built)}"
                done = await run_cli(
                    "proof", "build", source, "-o", str(out), "--seed-file", str(seed), *until
                )
                assert done.returncode == 0, done.stderr
                built.append((out / "statement.json").read_bytes())
            assert built[0] == built[1]
        missing = await run_cli(
            "proof", "build", f"kafka://{kafka_bootstrap}/no-such-topic", "-o",
            str(tmp_path / "x"), "--seed-file", str(seed),
        )  # fmt: skip
        assert missing.returncode == 2
        assert missing.stderr.count("\n") == 1, missing.stderr
