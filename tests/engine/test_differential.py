"""Differential tests: the production engine against the independent reference model.

``clearing.engine.run_jsonl`` (whole ``.jsonl`` content in, events and state out) must agree
with ``tests.engine.reference.reference_run`` on every SPEC field of every output event and on
the final state, for long random streams that reach liquidations, the oracle guard, fund draws,
clawbacks, bad debt and every reject reason.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.engine.reference import reference_run
from tests.engine.strategies import input_streams, join

# The fields fixed by SPEC §6 for each output type; anything else is the implementer's choice.
SPEC_FIELDS: dict[str, tuple[str, ...]] = {
    "liquidation": ("account", "market", "qty", "proceeds", "mark", "fee"),
    "fund_draw": ("account", "amount"),
    "clawback": ("account", "amount", "cause"),
    "bad_debt": ("account", "amount"),
    "withdrawal": ("account", "amount"),
    "oracle_held": ("market", "price"),
    "reject": ("reason",),
}
_MISSING = "<missing>"


def comparable(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Project each event on ``type``, ``seq`` and its SPEC fields (unknown types: all)."""
    out = []
    for ev in events:
        fields = SPEC_FIELDS.get(ev.get("type", _MISSING))
        if fields is None:
            out.append(dict(ev))
        else:
            keys = ("type", "seq", *fields)
            out.append({k: ev.get(k, _MISSING) for k in keys})
    return out


def _run_engine(data: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from clearing.engine import run_jsonl

    events, state = run_jsonl(data)
    return list(events), state


def assert_same(lines: list[bytes], data: bytes) -> list[dict[str, Any]]:
    """Fail unless engine and reference agree; return the reference events."""
    want_events, want_state = reference_run(lines)
    got_events, got_state = _run_engine(data)
    want, got = comparable(want_events), comparable(got_events)
    if want != got:
        i = next(
            (i for i, (w, g) in enumerate(zip(want, got, strict=False)) if w != g),
            min(len(want), len(got)),
        )
        near = want[i] if i < len(want) else got[i]
        seq = near.get("seq")
        kept = [line for line in lines if line.strip(b" \t\r")]
        cause = kept[seq - 1][:300] if isinstance(seq, int) and 0 < seq <= len(kept) else None
        pytest.fail(
            f"event #{i} differs (input seq {seq}: {cause!r})\n"
            f"  reference: {want[i] if i < len(want) else '<none>'}\n"
            f"  engine:    {got[i] if i < len(got) else '<none>'}\n"
            f"  reference events from there: {want[i : i + 6]}\n"
            f"  engine events from there:    {got[i : i + 6]}"
        )
    if want_state != got_state:
        diffs = _state_diff(want_state, got_state)
        pytest.fail("final state differs:\n  " + "\n  ".join(diffs[:20]))
    return want_events


def _state_diff(want: Any, got: Any, path: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict):
        out = []
        for key in sorted(set(want) | set(got)):
            out += _state_diff(want.get(key, _MISSING), got.get(key, _MISSING), f"{path}/{key}")
        return out
    return [] if want == got else [f"{path}: reference {want!r}, engine {got!r}"]


def _label(events: list[dict[str, Any]]) -> None:
    for kind in sorted(
        {e["type"] if e["type"] != "reject" else f"reject:{e['reason']}" for e in events}
    ):
        event(kind)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(lines=input_streams(max_events=200), trailing_newline=st.booleans())
def test_engine_matches_reference(lines: list[bytes], trailing_newline: bool) -> None:
    data = join(lines) if trailing_newline else b"\n".join(lines)
    _label(assert_same(lines, data))


# ---------------------------------------------------------------------------------------------
# hand-made scenarios: each aims at one rule (the reference decides the expected outcome)

Obj = dict[str, Any]


def mk(name: str, imr: str = "0.1", mmr: str = "0.05", liq_fee: str = "0", **kw: Any) -> Obj:
    return {"type": "market", "market": name, "imr": imr, "mmr": mmr, "liq_fee": liq_fee, **kw}


def dep(account: str, amount: str) -> Obj:
    return {"type": "deposit", "account": account, "amount": amount}


def fill(fid: str, m: str, p: str, q: str, b: str, s: str, **kw: Any) -> Obj:
    return {
        "type": "fill",
        "fill_id": fid,
        "market": m,
        "price": p,
        "qty": q,
        "buyer": b,
        "seller": s,
        **kw,
    }


def tick(m: str, p: str) -> Obj:
    return {"type": "oracle", "market": m, "price": p}


def book(m: str, bids: list[list[str]] | None = None, asks: list[list[str]] | None = None) -> Obj:
    o: Obj = {"type": "book", "market": m}
    if bids is not None:
        o["bids"] = bids
    if asks is not None:
        o["asks"] = asks
    return o


SCENARIOS: dict[str, list[Obj]] = {
    "fee_half_even": [
        mk("M", imr="1", mmr="1", liq_fee="0.5"),
        mk("N", imr="1", mmr="1", liq_fee="0.5"),
        dep("z", "100"),
        dep("x", "1"),
        dep("y", "1"),
        book("M", bids=[["2.00000001", "1"]]),
        book("N", bids=[["2.00000003", "1"]]),
        fill("1", "M", "2", "1", "x", "z"),
        fill("2", "N", "2", "1", "y", "z"),
    ],
    "largest_remainder_tie": [
        mk("M"),
        dep("b", "100"),
        dep("c", "100"),
        dep("d", "100"),
        dep("x", "30.00000001"),
        fill("1", "M", "100", "1", "x", "d"),
        fill("2", "M", "100", "1", "x", "c"),
        fill("3", "M", "100", "1", "x", "b"),
        tick("M", "80"),
    ],
    "order_by_ratio_and_book_consumption": [
        mk("M"),
        dep("x", "10"),
        dep("y", "8"),
        dep("z", "1000"),
        fill("1", "M", "100", "1", "x", "z"),
        fill("2", "M", "100", "1", "y", "z"),
        book("M", bids=[["90", "1"]]),
        tick("M", "91"),
    ],
    "both_sides_bankrupt": [
        mk("M"),
        dep("x", "10"),
        dep("y", "10"),
        dep("z", "1000"),
        dep("w", "1000"),
        dep("insurance-fund", "15"),
        fill("1", "M", "100", "1", "x", "z"),
        fill("2", "M", "100", "1", "w", "y"),
        fill("3", "M", "100", "1", "y", "x", buyer_fee="20", seller_fee="20"),
    ],
    "ratio_tie_goes_to_smaller_id": [
        mk("M"),
        dep("b", "10"),
        dep("a", "10"),
        dep("z", "1000"),
        fill("1", "M", "100", "1", "b", "z"),
        fill("2", "M", "100", "1", "a", "z"),
        book("M", bids=[["90", "1"]]),
        tick("M", "91"),
    ],
    "short_beyond_asks_crossed": [
        mk("M", liq_fee="0.01"),
        dep("x", "10"),
        dep("z", "1000"),
        fill("1", "M", "100", "2", "z", "x"),
        book("M", bids=[["120", "5"]], asks=[["104", "0.5"], ["103", "0.5"], ["110", "0.25"]]),
        tick("M", "104.5"),
    ],
    "params_change_liquidates": [
        mk("M"),
        dep("x", "20"),
        dep("z", "1000"),
        fill("1", "M", "100", "2", "x", "z"),
        tick("M", "100"),
        mk("M", imr="0.2", mmr="0.15"),
    ],
    "fill_moves_mark_of_third_party": [
        mk("M"),
        dep("x", "6"),
        dep("z", "1000"),
        dep("w", "1000"),
        fill("1", "M", "100", "1", "x", "z"),
        fill("2", "M", "94", "1", "w", "z"),
    ],
    "clawback_only_held_markets": [
        mk("M"),
        mk("N"),
        dep("x", "10"),
        dep("b", "1000"),
        dep("c", "1000"),
        fill("1", "M", "100", "1", "x", "b"),
        fill("2", "N", "10", "10", "b", "c"),
        tick("N", "20"),
        tick("M", "80"),
    ],
    "flip_k": [
        mk("M"),
        dep("x", "30"),
        dep("b", "1000"),
        dep("c", "1000"),
        fill("1", "M", "100", "1", "c", "b"),
        fill("2", "M", "90", "3", "b", "c"),
        fill("3", "M", "100", "3", "x", "c"),
        tick("M", "95"),
        tick("M", "88"),
    ],
    "guard_held_then_confirmed_liquidates": [
        mk("M", max_oracle_move="0.1"),
        dep("x", "10"),
        dep("z", "1000"),
        fill("1", "M", "100", "1", "x", "z"),
        tick("M", "100"),
        tick("M", "50"),
        fill("2", "M", "50", "1", "z", "w"),
        tick("M", "52"),
    ],
    "multi_position_fee_cap": [
        mk("M", liq_fee="0.05"),
        mk("N", liq_fee="0.05"),
        dep("x", "12"),
        dep("z", "1000"),
        fill("1", "M", "100", "1", "x", "z"),
        fill("2", "N", "100", "1", "x", "z"),
        tick("M", "95"),
        tick("N", "95"),
    ],
    "clawed_account_then_liquidated": [
        mk("M"),
        mk("N"),
        dep("x", "10"),
        dep("b", "25"),
        dep("c", "1000"),
        fill("1", "M", "100", "1", "x", "b"),
        fill("2", "N", "100", "2", "b", "c"),
        tick("N", "89"),
        tick("M", "60"),
    ],
    "fund_trades_and_withdraw_margin": [
        mk("M"),
        dep("insurance-fund", "50"),
        dep("x", "100"),
        fill("1", "M", "100", "5", "insurance-fund", "x"),
        {"type": "withdraw", "account": "x", "amount": "700"},
        {"type": "withdraw", "account": "x", "amount": "50.00000001"},
        {"type": "withdraw", "account": "x", "amount": "50"},
        {"type": "withdraw", "account": "x", "amount": "1"},
    ],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_engine_matches_reference_on_scenarios(name: str) -> None:
    lines = _lines(*SCENARIOS[name])
    assert_same(lines, join(lines))


# ---------------------------------------------------------------------------------------------
# edge inputs: validation corners, including the choices listed at the top of reference.py

_DEP = b'{"type":"deposit","account":"a","amount":"1"'
_MKT = b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}'
_GUARDED = (
    b'{"type":"market","market":"M","imr":"0.1","mmr":"0.05","liq_fee":"0","max_oracle_move":"0.1"}'
)
_FUNDED = [
    _MKT,
    b'{"type":"deposit","account":"a","amount":"100"}',
    b'{"type":"deposit","account":"b","amount":"1000"}',
]
_FILL = (
    b'{"type":"fill","fill_id":"f1","market":"M","price":"100","qty":"1","buyer":"a","seller":"b"'
)


def _nest(depth: int) -> bytes:
    return _DEP + b',"x":' + b"[" * depth + b"]" * depth + b"}"


EDGE_INPUTS: dict[str, list[bytes]] = {
    "null optional max_oracle_move": [_MKT[:-1] + b',"max_oracle_move":null}'],
    "null optional fee": [*_FUNDED, _FILL + b',"buyer_fee":null}'],
    "null optional bids": [_MKT, b'{"type":"book","market":"M","bids":null}'],
    "null ts": [_DEP + b',"ts":null}'],
    "negative ts": [_DEP + b',"ts":-5}'],
    "ts int64 bounds": [
        _DEP + b',"ts":9223372036854775807}',
        _DEP + b',"ts":-9223372036854775808}',
    ],
    "ts beyond int64": [
        _DEP + b',"ts":9223372036854775808}',
        _DEP + b',"ts":-9223372036854775809}',
    ],
    "ts wrong types": [_DEP + b',"ts":"5"}', _DEP + b',"ts":5.0}', _DEP + b',"ts":true}'],
    "type not a string": [b'{"type":5}', b'{"type":null}', b'{"type":["deposit"]}', b"{}"],
    "duplicate keys: last wins": [
        b'{"type":"deposit","account":"a","amount":"x","amount":"5"}',
        b'{"type":"deposit","account":"a","amount":"5","amount":"x"}',
        b'{"type":"nope","account":"a","amount":"5","type":"deposit"}',
    ],
    "nesting 64 ok, 65 malformed": [_nest(63), _nest(64), _nest(100_000)],
    "unpaired surrogate": [
        b'{"type":"deposit","account":"\\ud800","amount":"1"}',
        _DEP + b',"x":"\\udfff"}',
        b'{"type":"deposit","account":"\\ud83d\\ude00","amount":"1"}',
    ],
    "not UTF-8": [
        b'{"type":"deposit","account":"\xff","amount":"1"}',
        b"\xef\xbb\xbf" + _DEP + b"}",
    ],
    "NaN and Infinity": [
        _DEP + b',"x":NaN}',
        b'{"type":"deposit","account":"a","amount":Infinity}',
    ],
    "floats": [b'{"type":"deposit","account":"a","amount":1.0}', _DEP + b',"x":1e999}'],
    "bounds": [
        b'{"type":"deposit","account":"a","amount":"1000000000000000"}',
        b'{"type":"deposit","account":"a","amount":1000000000000000}',
        b'{"type":"deposit","account":"a","amount":"1000000000000000.00000001"}',
        b'{"type":"deposit","account":"a","amount":1000000000000001}',
        b'{"type":"deposit","account":"a","amount":"007.50"}',
        b'{"type":"deposit","account":"a","amount":"-0"}',
        b'{"type":"deposit","account":"a","amount":"1.123456789"}',
    ],
    "huge integer literals": [
        b'{"type":"deposit","account":"a","amount":' + b"9" * 5000 + b"}",
        b'{"type":"deposit","account":"a","amount":-' + b"9" * 4301 + b"}",
        _DEP + b',"ts":' + b"9" * 5000 + b"}",
        b'{"type":' + b"9" * 5000 + b"}",
        _DEP + b',"x":' + b"9" * 5000 + b"}",
    ],
    "huge decimal strings": [
        b'{"type":"deposit","account":"a","amount":"' + b"9" * 5000 + b'"}',
        b'{"type":"deposit","account":"a","amount":"0.' + b"0" * 5000 + b'1"}',
    ],
    "fill ids": [
        *_FUNDED,
        _FILL.replace(b'"f1"', b"7") + b"}",
        _FILL.replace(b'"f1"', b'""') + b"}",
        _FILL.replace(b'"b"', b'"a"') + b"}",
        _FILL + b"}",
        _FILL + b"}",
        _FILL.replace(b'"M"', b'"N"') + b"}",
    ],
    "first failure wins": [
        _MKT,
        b'{"type":"book","market":"Q","bids":[["x","1"]]}',
        b'{"type":"fill","fill_id":"f1","market":"Q","price":"1","qty":"1","buyer":"a",'
        b'"seller":"b","buyer_fee":"x"}',
        b'{"type":"fill","fill_id":"f1","market":"Q","price":"1","qty":"1","buyer":"fee-pool",'
        b'"seller":"fee-pool"}',
        b'{"type":"fill","fill_id":"f1","market":"M","price":"1","qty":"1","buyer":"fee-pool",'
        b'"seller":"fee-pool"}',
        b'{"type":"fill","fill_id":"f1","market":"M","price":"1","qty":"1",'
        b'"buyer":"insurance-fund","seller":"insurance-fund"}',
        b'{"type":"withdraw","account":"insurance-fund","amount":"1"}',
        b'{"type":"withdraw","account":"nobody","amount":"1"}',
        b'{"type":"deposit","account":"bad-debt","amount":"1"}',
    ],
    "book shapes": [
        _MKT,
        b'{"type":"book","market":"M","bids":[["1","1","1"]]}',
        b'{"type":"book","market":"M","bids":[{"0":"1"}]}',
        b'{"type":"book","market":"M","asks":[["1","0"]]}',
        b'{"type":"book","market":"M","bids":[],"asks":[]}',
    ],
    "market params": [
        b'{"type":"market","market":"M","imr":1,"mmr":1,"liq_fee":"-0"}',
        b'{"type":"market","market":"M","imr":"0.5","mmr":"0.6","liq_fee":0}',
        b'{"type":"market","market":"M","imr":1,"mmr":1,"liq_fee":1}',
        b'{"type":"market","market":"","imr":1,"mmr":1,"liq_fee":0}',
        b'{"type":"market","market":"M","imr":1,"mmr":1,"liq_fee":0,"max_oracle_move":0}',
    ],
    "guard: held tick, fills move an unticked mark, market event clears": [
        _GUARDED,
        *_FUNDED[1:],
        _FILL + b"}",
        b'{"type":"oracle","market":"M","price":"200"}',
        _FILL.replace(b"f1", b"f2").replace(b'"100"', b'"190"', 1) + b"}",
        b'{"type":"oracle","market":"M","price":"205"}',
        b'{"type":"oracle","market":"M","price":"100"}',
        _GUARDED,
        b'{"type":"oracle","market":"M","price":"300"}',
    ],
    "blank lines": [b" ", _DEP + b"}", b"\t\r", b"", b'{"type":"x"}', b"\x0b", b"\xc2\xa0"],
}


@pytest.mark.parametrize("name", sorted(EDGE_INPUTS))
def test_engine_matches_reference_on_edge_inputs(name: str) -> None:
    lines = EDGE_INPUTS[name]
    assert_same(lines, join(lines))


# ---------------------------------------------------------------------------------------------
# the reference model itself


def _lines(*objs: dict[str, Any]) -> list[bytes]:
    return [json.dumps(o).encode() for o in objs]


WORKED_EXAMPLE = _lines(
    {"type": "market", "market": "BTC-PERP", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"},
    {"type": "deposit", "account": "alice", "amount": "100"},
    {"type": "deposit", "account": "bob", "amount": "1000"},
    {"type": "deposit", "account": "insurance-fund", "amount": "20"},
    {"type": "oracle", "market": "BTC-PERP", "price": "100"},
    {
        "type": "fill",
        "fill_id": "f1",
        "market": "BTC-PERP",
        "price": "100",
        "qty": "10",
        "buyer": "alice",
        "seller": "bob",
    },
    {"type": "oracle", "market": "BTC-PERP", "price": "85"},
)


def test_reference_reproduces_spec_worked_example() -> None:
    events, state = reference_run(WORKED_EXAMPLE)
    assert events == [
        {
            "type": "liquidation",
            "seq": 7,
            "account": "alice",
            "market": "BTC-PERP",
            "qty": "10",
            "proceeds": "850",
            "mark": "85",
            "fee": "0",
        },
        {"type": "fund_draw", "seq": 7, "account": "alice", "amount": "20"},
        {"type": "clawback", "seq": 7, "account": "bob", "amount": "30", "cause": "alice"},
    ]
    assert state == {
        "accounts": {
            "alice": {"cash": "0", "positions": {}},
            "bob": {"cash": "1970", "positions": {"BTC-PERP": "-10"}},
            "insurance-fund": {"cash": "-850", "positions": {"BTC-PERP": "10"}},
            "fee-pool": {"cash": "0", "positions": {}},
            "bad-debt": {"cash": "0", "positions": {}},
        },
        "markets": {"BTC-PERP": {"mark": "85"}},
    }


def test_engine_reproduces_spec_worked_example() -> None:
    assert_same(WORKED_EXAMPLE, join(WORKED_EXAMPLE))


def test_reference_liquidation_duplicate_and_held_tick() -> None:
    lines = _lines(
        {
            "type": "market",
            "market": "M",
            "imr": "0.5",
            "mmr": "0.5",
            "liq_fee": "0.001",
            "max_oracle_move": "0.1",
        },
        {"type": "deposit", "account": "a", "amount": "1"},
        {"type": "deposit", "account": "b", "amount": 1000},
        {
            "type": "fill",
            "fill_id": "1",
            "market": "M",
            "price": "10",
            "qty": "1",
            "buyer": "a",
            "seller": "b",
        },
        {
            "type": "fill",
            "fill_id": "1",
            "market": "M",
            "price": "10",
            "qty": "1",
            "buyer": "b",
            "seller": "a",
        },
        {"type": "oracle", "market": "M", "price": "5"},
        {"type": "oracle", "market": "M", "price": "5.5"},
    )
    events, state = reference_run(lines)
    # the fill sets the mark to 10 and leaves a at E = 1 < MM = 5: closed at the mark (no
    # book), fee 0.01 paid from the 1 left; the duplicate changes nothing; 5 is held against
    # the fill's mark and 5.5 confirms it (|5.5 - 5| <= 0.1 * 5)
    assert [(e["type"], e["seq"]) for e in events] == [
        ("liquidation", 4),
        ("reject", 5),
        ("oracle_held", 6),
    ]
    assert events[0]["proceeds"] == "10"
    assert events[0]["fee"] == "0.01"
    assert events[1]["reason"] == "duplicate_fill"
    assert state["accounts"]["a"] == {"cash": "0.99", "positions": {}}
    assert state["accounts"]["insurance-fund"] == {"cash": "-9.99", "positions": {"M": "1"}}
    assert state["markets"]["M"] == {"mark": "5.5"}


def test_reference_book_walk() -> None:
    lines = _lines(
        {"type": "market", "market": "M", "imr": "0.1", "mmr": "0.05", "liq_fee": "0"},
        {"type": "deposit", "account": "x", "amount": "10"},
        {"type": "deposit", "account": "y", "amount": "1000"},
        {
            "type": "fill",
            "fill_id": "1",
            "market": "M",
            "price": "10",
            "qty": "2",
            "buyer": "x",
            "seller": "y",
        },
        {"type": "book", "market": "M", "bids": [["9", "0.25"], ["8", "0.25"], ["9", "0.25"]]},
        {"type": "oracle", "market": "M", "price": "5"},
    )
    events, state = reference_run(lines)
    # 0.5 at 9, 0.25 at 8, and the 1.25 beyond the depth at the worst level walked (8)
    assert events[0]["type"] == "liquidation"
    assert events[0]["proceeds"] == "16.5"
    assert state["accounts"]["insurance-fund"]["positions"] == {"M": "2"}


def test_reference_largest_remainder_and_rounding() -> None:
    from fractions import Fraction

    from tests.engine.reference import UNIT, _largest_remainder, fmt, round8

    parts = _largest_remainder(10 * UNIT, {"b": Fraction(1), "c": Fraction(1), "a": Fraction(1)})
    assert parts == {"a": 4 * UNIT, "b": 3 * UNIT, "c": 3 * UNIT}
    assert round8(Fraction("0.000000005")) == 0
    assert round8(Fraction("0.000000015")) == Fraction("0.00000002")
    assert fmt(Fraction("-30.60")) == "-30.6"
    assert fmt(Fraction(0)) == "0"
    assert fmt(Fraction(10**20)) == "100000000000000000000"
