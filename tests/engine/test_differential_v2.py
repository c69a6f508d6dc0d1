"""Rules version 2: the Python core against the independent reference model, byte for byte.

Random version-2 streams (``strategies_v2``) run through ``Engine(rules_version=2)`` one
input at a time, with the ledger invariants and the liquidation index checked after every
input, and through ``reference_v2``; every output event (all fields: version 2 fixes
``fund_fee``, ``adl`` and ``funding`` too) and the final state must agree. The final
state also survives a snapshot round trip unchanged.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, event, given, settings

from clearing.engine import Engine, encode_output, iter_jsonl_lines, load_engine
from clearing.engine.persist import dump_state, state_rules_version
from tests.engine.reference_v2 import reference_run_v2
from tests.engine.strategies import join
from tests.engine.strategies_v2 import input_streams_v2

# Reject details are each implementation's own words; everything else must match.
_IMPLEMENTER_FIELDS = ("detail", "input_type", "fill_id", "account", "market")


def _comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for ev in events:
        if ev["type"] == "reject":
            ev = {k: v for k, v in ev.items() if k not in _IMPLEMENTER_FIELDS}
        out.append(ev)
    return out


def run_checked(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any], Engine]:
    """Run the Python core under version 2, checking invariants after every input."""
    engine = Engine(rules_version=2)
    events: list[dict[str, Any]] = []
    for _, line in iter_jsonl_lines(data):
        for out in engine.apply(line):
            events.append(msgspec.json.decode(encode_output(out)))
        engine.check_invariants()
    return events, engine.state(), engine


def assert_same_v2(lines: list[bytes]) -> list[dict[str, Any]]:
    data = join(lines)
    want_events, want_state = reference_run_v2(lines)
    got_events, got_state, engine = run_checked(data)
    want, got = _comparable(want_events), _comparable(got_events)
    if want != got:
        i = next(
            (i for i, (w, g) in enumerate(zip(want, got, strict=False)) if w != g),
            min(len(want), len(got)),
        )
        pytest.fail(
            f"event #{i} differs\n  reference: {want[i : i + 4]}\n  engine:    {got[i : i + 4]}"
        )
    assert got_state == want_state
    snapshot = dump_state(engine)
    assert state_rules_version(snapshot) == 2
    reloaded = load_engine(snapshot, "python")
    assert reloaded.state() == got_state
    assert dump_state(reloaded) == snapshot
    return want_events


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines=input_streams_v2())
def test_python_core_matches_reference_v2(lines: list[bytes]) -> None:
    events = assert_same_v2(lines)
    for kind in sorted({e["type"] for e in events}):
        event(kind)
    if any(e["type"] == "liquidation" and e["fund_fee"] != e["fee"] for e in events):
        event("fee split")
    steps = [(e["seq"], e["account"], e["market"]) for e in events if e["type"] == "liquidation"]
    if len(steps) != len(set(steps)):
        event("several steps of one account in one input")
    adl = {(e["seq"], e["cause"], e["market"]) for e in events if e["type"] == "adl"}
    if len(adl) != len({(seq, cause) for seq, cause, _ in adl}):
        event("adl passes over several markets")
    claws = {(e["seq"], e["cause"]) for e in events if e["type"] == "clawback"}
    if claws & {(seq, cause) for seq, cause, _ in adl}:
        event("adl then clawback for one account")
    if any(e["type"] == "adl" and e["amount"] == "0" for e in events):
        event("adl paying 0")
    seqs = {e["seq"] for e in events if e["type"] == "funding"}
    if any(e["type"] == "liquidation" and e["seq"] in seqs for e in events):
        event("funding liquidated")


def _replay_bytes(lines: list[bytes], liquidation_scan: bool) -> bytes:
    engine = Engine(liquidation_scan=liquidation_scan, rules_version=2)
    out = [raw for line in lines if line.strip(b" \t\r") for raw in engine.apply_encoded(line)]
    return b"\n".join(out) + dump_state(engine)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines=input_streams_v2(max_events=80))
def test_full_scan_baseline_agrees_under_v2(lines: list[bytes]) -> None:
    """The liquidation index (default) and the full scan of every holder find the same
    accounts under version 2's steps, ADL trades and funding."""
    assert _replay_bytes(lines, liquidation_scan=False) == _replay_bytes(
        lines, liquidation_scan=True
    )
