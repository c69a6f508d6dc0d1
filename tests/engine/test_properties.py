"""Property tests on long random streams: invariants, determinism, no crash, clean rejects."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearing.engine import Engine, encode_output, load_engine
from clearing.engine.persist import dump_state

ACCOUNTS = [*"abcdeabcdeabcde", "insurance-fund", "fee-pool", "bad-debt"]
MARKETS = ["BTC", "ETH", "SOL"]


def _dec(low: int, high: int, places: int = 2) -> st.SearchStrategy[str]:
    scale = 10**places
    return st.integers(low * scale, high * scale).map(
        lambda v: str(v // scale) + (f".{v % scale:0{places}d}" if v % scale else "")
    )


_market = st.builds(
    lambda m, mmr, extra, fee, guard: {
        "type": "market",
        "market": m,
        "mmr": f"0.{mmr:02d}",
        "imr": f"0.{mmr + extra:02d}",
        "liq_fee": f"0.{fee:02d}",
        **({"max_oracle_move": guard} if guard else {}),
    },
    st.sampled_from(MARKETS),
    st.integers(1, 30),
    st.integers(0, 40),
    st.integers(0, 5),
    st.sampled_from([None, "0.1", "0.3"]),
)
_deposit = st.builds(
    lambda a, x: {"type": "deposit", "account": a, "amount": x},
    st.sampled_from(ACCOUNTS),
    _dec(1, 2000),
)
_withdraw = st.builds(
    lambda a, x: {"type": "withdraw", "account": a, "amount": x},
    st.sampled_from(ACCOUNTS),
    _dec(1, 1000),
)
_fill = st.builds(
    lambda i, m, p, q, b, s, bf, sf: {
        "type": "fill",
        "fill_id": f"f{i}",
        "market": m,
        "price": p,
        "qty": q,
        "buyer": b,
        "seller": s,
        "buyer_fee": bf,
        "seller_fee": sf,
    },
    st.integers(0, 60),
    st.sampled_from(MARKETS),
    _dec(50, 150),
    _dec(1, 30, 3),
    st.sampled_from(ACCOUNTS),
    st.sampled_from(ACCOUNTS),
    _dec(-1, 2),
    _dec(0, 2),
)
_oracle = st.builds(
    lambda m, p: {"type": "oracle", "market": m, "price": p},
    st.sampled_from(MARKETS),
    _dec(20, 200),
)
_levels = st.lists(st.tuples(_dec(40, 160), _dec(1, 10)).map(list), max_size=4)
_book = st.builds(
    lambda m, b, a: {"type": "book", "market": m, "bids": b, "asks": a},
    st.sampled_from(MARKETS),
    _levels,
    _levels,
)
_garbage = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b'{"type":"deposit","account":"a","amount":1.5}',
            b'{"type":"oracle","market":"BTC","price":NaN}',
            b'{"type":"nope"}',
            b"[1,2]",
            b'{"type":"fill","fill_id":"x","market":"BTC","price":"1","qty":"1",'
            b'"buyer":"a","seller":"a"}',
        ]
    ),
)

_input = st.one_of(
    _market,
    _deposit,
    _deposit,
    _withdraw,
    _fill,
    _fill,
    _fill,
    _oracle,
    _oracle,
    _book,
).map(lambda obj: json.dumps(obj).encode())
_GENESIS = [
    json.dumps(
        {"type": "market", "market": m, "imr": "0.1", "mmr": "0.05", "liq_fee": "0.01"}
    ).encode()
    for m in MARKETS
] + [json.dumps({"type": "deposit", "account": a, "amount": "300"}).encode() for a in "abcde"]
streams = st.lists(
    st.one_of(_input, _input, _input, _input, _input, _input, _input, _input, _garbage),
    min_size=1,
    max_size=150,
).map(lambda lines: _GENESIS + lines)


def _replay(lines: list[bytes]) -> bytes:
    engine = Engine()
    out = b"".join(encode_output(e) + b"\n" for line in lines for e in engine.apply(line))
    return out + json.dumps(engine.state()).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_invariants_hold_after_every_input(lines: list[bytes]) -> None:
    engine = Engine()
    for line in lines:
        before = dump_state(engine)
        outputs = engine.apply(line)
        engine.check_invariants()
        if any(e.__struct_config__.tag == "reject" for e in outputs):
            # A rejected input changes nothing but the input counter.
            assert len(outputs) == 1
            restored = load_engine(before)
            restored.seq += 1
            assert dump_state(restored) == dump_state(engine)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_replay_is_deterministic(lines: list[bytes]) -> None:
    assert _replay(lines) == _replay(lines)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.integers(0, 150))
def test_snapshot_then_continue_equals_uninterrupted(lines: list[bytes], cut: int) -> None:
    whole = Engine()
    whole_out = [encode_output(e) for line in lines for e in whole.apply(line)]
    first = Engine()
    out = [encode_output(e) for line in lines[:cut] for e in first.apply(line)]
    resumed = load_engine(dump_state(first))
    resumed.check_invariants()  # the bulk-built index is complete and exact
    out += [encode_output(e) for line in lines[cut:] for e in resumed.apply(line)]
    assert out == whole_out
    assert dump_state(resumed) == dump_state(whole)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_and_never_change_state(raw: bytes) -> None:
    engine = Engine()
    for line in (
        b'{"type":"market","market":"BTC","imr":"0.1","mmr":"0.05","liq_fee":"0.01"}',
        b'{"type":"deposit","account":"a","amount":"100"}',
    ):
        engine.apply(line)
    before = engine.state()
    outputs = engine.apply(raw)
    assert all(e.__struct_config__.tag in {"reject", "withdrawal", "oracle_held"} for e in outputs)
    if outputs and outputs[0].__struct_config__.tag == "reject":
        assert engine.state() == before


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(
                st.sampled_from(["type", "market", "amount", "x"]), children, max_size=4
            )
        ),
        max_leaves=12,
    )
)
def test_arbitrary_json_values_never_crash(value: object) -> None:
    engine = Engine()
    raw = json.dumps(value).encode()
    outputs = engine.apply(raw)
    assert all(e.__struct_config__.tag in {"reject", "withdrawal"} for e in outputs)


def _replay_with(lines: list[bytes], liquidation_scan: bool) -> bytes:
    engine = Engine(liquidation_scan=liquidation_scan)
    out = b"".join(encode_output(e) + b"\n" for line in lines for e in engine.apply(line))
    engine.check_invariants()  # includes the index consistency check
    return out + json.dumps(engine.state()).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams)
def test_liquidation_index_matches_full_scan(lines: list[bytes]) -> None:
    """The threshold index never misses an account the full scan would liquidate."""
    assert _replay_with(lines, liquidation_scan=False) == _replay_with(lines, liquidation_scan=True)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(-(10**12), 10**12),
    st.integers(1, 10**10).flatmap(lambda q: st.sampled_from([q, -q])),
    st.integers(1, 10**8),
    st.integers(1, 10**13),
)
def test_threshold_is_the_exact_liquidation_boundary(
    cash_e16: int, qty_e8: int, mmr_e8: int, mark_e8: int
) -> None:
    from clearing.engine.state import threshold_e8

    liquidatable = cash_e16 * 10**8 + mark_e8 * qty_e8 * 10**8 < abs(qty_e8) * mark_e8 * mmr_e8
    bound = threshold_e8(cash_e16, qty_e8, mmr_e8)
    assert liquidatable == (mark_e8 <= bound if qty_e8 > 0 else mark_e8 >= bound)


def _reference_nesting_depth(raw: bytes) -> int:
    """Maximum bracket depth outside strings, byte by byte: the oracle for _too_deep."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return deepest


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from([b"[", b"]", b"{", b"}", b'"', b"a", b",", b":", b"1"]),
        max_size=300,
    ).map(b"".join)
)
def test_nesting_check_matches_the_byte_by_byte_scan(raw: bytes) -> None:
    from clearing.engine.events import MAX_NESTING_DEPTH, _too_deep

    deep = _reference_nesting_depth(raw) > MAX_NESTING_DEPTH
    if raw.count(b'"') % 2 == 0:
        assert _too_deep(raw) == deep
    else:
        # An unclosed string (malformed JSON anyway) may only make the fast check stricter.
        assert _too_deep(raw) or not deep


def test_nesting_check_respects_escaped_quotes() -> None:
    from clearing.engine.events import _too_deep

    inside = b'{"x":"' + b'\\"[' * 100 + b'"}'
    assert not _too_deep(inside)
    assert _too_deep(b'{"x":"\\\\",' + b"[" * 70 + b"]" * 70 + b"}")
