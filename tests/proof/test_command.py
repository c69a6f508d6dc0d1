"""``clearing proof build | extract | verify`` end to end on a real journal and snapshot."""

from __future__ import annotations

import json
import os
from decimal import Decimal, localcontext
from pathlib import Path

import pytest

from clearing.cli import main
from clearing.engine import Engine, native_available
from clearing.engine.margin import equity_e16
from clearing.journal import LocalJournal, hash_at
from clearing.proof import decode_proof, decode_statement
from clearing.proof._documents import decimal_e16
from clearing.snapshot import list_snapshots
from tools.gen_events import generate

ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT_EVERY = 1_000
BUILD = ("proof", "build", "-o", "{out}")


@pytest.fixture(scope="module")
def journal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3k-input journal with liquidations (the SPEC's worked example at its end) and
    snapshots every 1000 inputs."""
    tmp = tmp_path_factory.mktemp("proof")
    inputs = tmp / "inputs.jsonl"
    lines = list(generate(3_000, 200, 3, seed=11))
    lines += (ROOT / "docs/examples/worked-example.jsonl").read_bytes().split(b"\n")
    inputs.write_bytes(b"\n".join(lines) + b"\n")
    directory = tmp / "journal"
    args = ["ingest", str(inputs), "--journal", str(directory)]
    assert main([*args, "--batch", "500", "--snapshot-every", str(SNAPSHOT_EVERY)]) == 0
    return directory


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seed") / "seed"
    path.write_bytes(bytes(range(32)))
    path.chmod(0o600)
    return path


def _build(source: Path, out: Path, seed: Path, *extra: str) -> int:
    return main(["proof", "build", str(source), "-o", str(out), "--seed-file", str(seed), *extra])


def _verify(proof: Path, statement: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["proof", "verify", str(proof), "--statement", str(statement)])
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    return code, out.strip()


@pytest.fixture(scope="module")
def built(journal: Path, seed: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("built") / "out"
    assert _build(journal, out, seed, "--proofs", "-q") == 0
    return out


def test_build_then_verify_every_account(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    statement = built / "statement.json"
    lines = (built / "proofs.jsonl").read_bytes().splitlines()
    assert len(lines) == decode_statement(statement.read_bytes()).account_count
    for line in lines[:25]:
        proof = tmp_path / "proof.json"
        proof.write_bytes(line)
        code, out = _verify(proof, statement, capsys)
        assert code == 0 and out.startswith("VERIFIED: account")


def test_extract_gives_the_same_proof_as_the_build(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from_build = {decode_proof(line).account: line for line in (built / "proofs.jsonl").open("rb")}
    out = tmp_path / "alice.json"
    assert main(["proof", "extract", str(built), "--account", "alice", "-o", str(out)]) == 0
    assert decode_proof(out.read_bytes()) == decode_proof(from_build["alice"])
    assert _verify(out, built / "statement.json", capsys)[0] == 0
    all_out = tmp_path / "all.jsonl"
    assert main(["proof", "extract", str(built), "--all", "-o", str(all_out)]) == 0
    assert all_out.read_bytes() == (built / "proofs.jsonl").read_bytes()


def test_statement_figures_match_an_independent_replay(built: Path, journal: Path) -> None:
    """The total is the sum of max(0, E) over non-system accounts, computed here from
    the Python core's own ledger objects (not through the §8 document the build reads)."""
    statement = decode_statement((built / "statement.json").read_bytes())
    with LocalJournal(str(journal), readonly=True) as log:
        engine = Engine(rules_version=log.rules_version)
        for record in log.read():
            engine.apply_encoded(record.payload)
        chain_hash = hash_at(log, log.last_seq)
    ledger = engine.ledger
    floored = [
        max(0, equity_e16(account, ledger.markets))
        for account in ledger.accounts.values()
        if not account.is_system
    ]
    assert int(statement.total_liabilities_e16) == sum(floored)
    assert statement.account_count == len(floored)
    assert (statement.seq, statement.journal_chain_hash) == (engine.seq, chain_hash.hex())
    assert int(statement.insurance_fund.cash_e16) == ledger.fund.cash_e16
    assert int(statement.insurance_fund.equity_e16) == equity_e16(ledger.fund, ledger.markets)
    assert int(statement.fee_pool_cash_e16) == ledger.fee_pool.cash_e16
    assert int(statement.bad_debt_cash_e16) == ledger.bad_debt.cash_e16
    assert ledger.fee_pool.cash_e16 != 0 and ledger.fund.cash_e16 != 0  # not all trivially 0


def test_rebuild_is_byte_identical_and_core_independent(
    built: Path, journal: Path, seed: Path, tmp_path: Path
) -> None:
    cores = ["python", "native"] if native_available() else ["python"]
    for core in cores:
        again = tmp_path / core
        assert _build(journal, again, seed, "--core", core, "-q") == 0
        for name in ("statement.json", "tree.bin", "leaves.jsonl"):
            assert (again / name).read_bytes() == (built / name).read_bytes(), (core, name)


def test_a_rebuild_removes_the_earlier_builds_proofs(
    journal: Path, seed: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    assert _build(journal, out, seed, "--proofs", "-q") == 0
    assert (out / "proofs.jsonl").exists()
    assert _build(journal, out, seed, "--until", "1000", "-q") == 0
    assert not (out / "proofs.jsonl").exists()


def test_other_seed_other_root_same_total(
    built: Path, journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_seed = tmp_path / "seed"
    other_seed.write_bytes(b"another secret seed, 32 bytes...")
    other_seed.chmod(0o644)
    assert _build(journal, tmp_path / "out", other_seed, "-q") == 0
    warning = capsys.readouterr().err
    assert "can be read by other users (mode 0644)" in warning
    assert warning.count("\n") == 1
    mine = decode_statement((built / "statement.json").read_bytes())
    theirs = decode_statement((tmp_path / "out/statement.json").read_bytes())
    assert theirs.root_hash != mine.root_hash
    assert theirs.total_liabilities_e16 == mine.total_liabilities_e16


def test_until_matches_the_snapshot_at_that_seq(journal: Path, seed: Path, tmp_path: Path) -> None:
    snapshot = list_snapshots(str(journal / "snapshots"))[0]
    with LocalJournal(str(journal), readonly=True) as log:
        assert 0 < snapshot.journal_seq < log.last_seq
    until = tmp_path / "until"
    from_snapshot = tmp_path / "snapshot"
    assert _build(journal, until, seed, "--until", str(snapshot.journal_seq), "-q") == 0
    assert _build(Path(snapshot.path), from_snapshot, seed, "-q") == 0
    statement = (until / "statement.json").read_bytes()
    assert statement == (from_snapshot / "statement.json").read_bytes()
    assert decode_statement(statement).seq == snapshot.journal_seq


def test_a_proof_from_another_seq_does_not_verify(
    built: Path, journal: Path, seed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    earlier = tmp_path / "earlier"
    assert _build(journal, earlier, seed, "--until", "1500", "-q") == 0
    proof = tmp_path / "proof.json"
    account = json.loads((earlier / "leaves.jsonl").read_bytes().splitlines()[0])[0]
    assert main(["proof", "extract", str(earlier), "--account", account, "-o", str(proof)]) == 0
    code, out = _verify(proof, built / "statement.json", capsys)
    assert code == 1
    assert out.startswith("NOT VERIFIED: the proof is for another statement: its seq is 1500")


def test_tampered_proof_file_exits_1(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    document = json.loads((built / "proofs.jsonl").read_bytes().splitlines()[0])
    raised = int(document["liability_e16"]) + 1
    document["liability_e16"], document["liability"] = str(raised), decimal_e16(raised)
    proof = tmp_path / "proof.json"
    proof.write_text(json.dumps(document))
    code, out = _verify(proof, built / "statement.json", capsys)
    assert code == 1
    assert out.startswith("NOT VERIFIED: the path does not lead to the statement's root")


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["proof", "verify", "{missing}", "--statement", "{statement}"], "cannot read the proof"),
        (["proof", "verify", "{garbage}", "--statement", "{statement}"], "is not a proof"),
        (["proof", "verify", "{proof}", "--statement", "{garbage}"], "is not a proof-of-"),
        (["proof", "extract", "{built}", "--account", "nobody"], "'nobody' is not in the tree"),
        ([*BUILD, "{journal}", "--seed-file", "{short}"], "at least 16"),
        ([*BUILD, "{missing}", "--seed-file", "{seed}"], "no such"),
        ([*BUILD, "{empty}", "--seed-file", "{seed}"], "is not a journal: it is empty"),
        (
            [*BUILD, "{snapshot}", "--seed-file", "{seed}", "--config", "{seed}"],
            "kafka:// sources only",
        ),
        ([*BUILD, "kafka://no-port/x", "--seed-file", "{seed}"], "is not HOST:PORT"),
        ([*BUILD, "{garbage}", "--seed-file", "{seed}"], "cannot load snapshot"),
        ([*BUILD, "{journal}", "--seed-file", "{seed}", "--until", "9e9"], "invalid int"),
        ([*BUILD, "{journal}", "--seed-file", "{seed}", "--until", "99999"], "outside the journal"),
        ([*BUILD, "{snapshot}", "--seed-file", "{seed}", "--until", "5"], "needs a journal"),
    ],
)
def test_usage_and_file_errors_exit_2_with_one_line(
    argv: list[str],
    says: str,
    built: Path,
    journal: Path,
    seed: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "garbage").write_bytes(b"{not json")
    (tmp_path / "empty").mkdir()
    (tmp_path / "short").write_bytes(b"tiny")
    (tmp_path / "short").chmod(0o600)
    proof = tmp_path / "proof.json"
    proof.write_bytes((built / "proofs.jsonl").read_bytes().splitlines()[0])
    names = {
        "missing": tmp_path / "missing",
        "empty": tmp_path / "empty",
        "statement": built / "statement.json",
        "garbage": tmp_path / "garbage",
        "proof": proof,
        "built": built,
        "journal": journal,
        "out": tmp_path / "out",
        "short": tmp_path / "short",
        "seed": seed,
        "snapshot": list_snapshots(str(journal / "snapshots"))[0].path,
    }
    argv = [arg.format(**{key: str(value) for key, value in names.items()}) for arg in argv]
    from_argparse = False
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors: the usage, then one line
        code, from_argparse = exit_.code, True
    captured = capsys.readouterr()
    assert code == 2
    *usage, last = captured.err.strip().split("\n")
    assert says in last
    assert bool(usage) == from_argparse
    assert not usage or usage[0].startswith("usage:")
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out").exists()


def test_extract_refuses_a_damaged_build(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for name in ("statement.json", "tree.bin", "leaves.jsonl"):
        (damaged / name).write_bytes((built / name).read_bytes())
    rows = (damaged / "leaves.jsonl").read_bytes().splitlines()
    account, salt, liability = json.loads(rows[0])
    rows[0] = json.dumps([account, salt, str(int(liability) + 1)]).encode()
    (damaged / "leaves.jsonl").write_bytes(b"\n".join(rows) + b"\n")
    assert main(["proof", "extract", str(damaged), "--account", account]) == 2
    assert "is damaged: the path does not lead" in capsys.readouterr().err
    tree = bytearray((built / "tree.bin").read_bytes())
    tree[-1] ^= 1  # the root's sum
    (damaged / "tree.bin").write_bytes(bytes(tree))
    assert main(["proof", "extract", str(damaged), "--account", account]) == 2
    assert "the root in tree.bin is not the one in statement.json" in capsys.readouterr().err
    (damaged / "tree.bin").write_bytes(bytes(tree[:10]))
    assert main(["proof", "extract", str(damaged), "--account", account]) == 2
    assert "tree.bin is too short" in capsys.readouterr().err
    (damaged / "tree.bin").write_bytes(bytes(tree[:-64]))
    assert main(["proof", "extract", str(damaged), "--account", account]) == 2
    assert "tree.bin does not belong to statement.json" in capsys.readouterr().err


def test_total_equals_the_floored_equities_of_the_replayed_state(
    built: Path, journal: Path, tmp_path: Path
) -> None:
    """The same total from the SPEC §8 state `clearing replay` writes, in Decimal."""
    state_path = tmp_path / "state.json"
    replay = ["replay", str(journal), "--state", str(state_path), "--events", os.devnull]
    assert main([*replay, "-q"]) == 0
    state = json.loads(state_path.read_bytes())
    with localcontext() as exact:
        exact.prec = 80  # no rounding anywhere below
        marks = {market: Decimal(info["mark"] or 0) for market, info in state["markets"].items()}
        total = Decimal(0)
        for account, holding in state["accounts"].items():
            if account in ("insurance-fund", "fee-pool", "bad-debt"):
                continue
            equity = Decimal(holding["cash"]) + sum(
                (Decimal(qty) * marks[market] for market, qty in holding["positions"].items()),
                Decimal(0),
            )
            total += max(Decimal(0), equity)
        statement = decode_statement((built / "statement.json").read_bytes())
        assert Decimal(statement.total_liabilities_e16) == total.scaleb(16)
        assert Decimal(statement.total_liabilities) == total
