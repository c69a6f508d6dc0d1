"""Hypothesis strategies for rules version 2 streams (SPEC §9).

Built on version 1's streams (``strategies.input_streams``): every ``market`` line may get
§9's fields (partial steps, ``adl``, fee shares, volatility tiers and weight), ``funding``
lines are spliced in at random places, and a few lines carry a bad §9 field. The version-1
generator already reaches liquidations, fund draws, clawbacks and bad debt; with these
additions the same streams reach partial steps, ADL passes, tier switches and funding
that liquidates.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from tests.engine.strategies import Draw, Raw, dumps, input_streams, wire

LIQ_STEPS = (Decimal(1), Decimal("0.5"), Decimal("0.25"), Decimal("0.1"), Decimal("0.33333333"))
SHARES = (Decimal(0), Decimal("0.25"), Decimal("0.5"), Decimal("0.9"), Decimal(1))
# sigma per tick: 2% is calm, 20% a crash; the streams' oracle moves span both.
SIGMAS = (Decimal("0.01"), Decimal("0.03"), Decimal("0.08"), Decimal("0.2"), Decimal("0.5"))
LAMBDAS = (Decimal("0.05"), Decimal("0.3"), Decimal(1), Decimal("0.00000001"))
RATES = (
    Decimal(0),
    Decimal("0.0001"),
    Decimal("-0.0001"),
    Decimal("0.00000003"),
    Decimal("-0.00000007"),
    Decimal("0.05"),
    Decimal("-0.2"),
    Decimal("0.99999999"),
)
# Bad values per new field: out of range, wrong type, null, float.
_BAD_V2 = {
    "liq_step": ("0", "1.5", "-0.1", None, Raw("0.5"), [1]),
    "loss_policy": ("ADL", "", None, 1, ["adl"]),
    "fund_share": ("1.00000001", "-1", None, True),
    "vol_tiers": ([[0, "0.5"]], [["0.1", "2"]], [["0.2", "1"], ["0.1", "1"]], [["0.1"]], "x"),
    "vol_lambda": ("0", "2", None, Raw("1e-2")),
}


def _v2_fields(draw: Draw) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if draw(st.integers(0, 2)):
        fields["liq_step"] = wire(draw, draw(st.sampled_from(LIQ_STEPS)))
    if draw(st.booleans()):
        fields["loss_policy"] = draw(st.sampled_from(("adl", "clawback", "adl")))
    if draw(st.booleans()):
        fields["fund_share"] = wire(draw, draw(st.sampled_from(SHARES)))
    if draw(st.booleans()):
        sigmas = sorted(draw(st.sets(st.sampled_from(SIGMAS), max_size=3)))
        fields["vol_tiers"] = [
            [wire(draw, sigma), wire(draw, draw(st.sampled_from(SHARES)))] for sigma in sigmas
        ]
    if draw(st.booleans()):
        fields["vol_lambda"] = wire(draw, draw(st.sampled_from(LAMBDAS)))
    return fields


def _funding(draw: Draw, markets: list[str]) -> dict[str, Any]:
    market = draw(st.sampled_from(markets)) if draw(st.integers(0, 15)) else "nowhere"
    return {"type": "funding", "market": market, "rate": wire(draw, draw(st.sampled_from(RATES)))}


def _bad_funding(draw: Draw, markets: list[str]) -> dict[str, Any]:
    obj = _funding(draw, markets)
    key, value = draw(
        st.sampled_from(
            (
                ("rate", "1"),
                ("rate", "-1"),
                ("rate", None),
                ("rate", Raw("0.01")),
                ("market", ""),
                ("market", None),
            )
        )
    )
    obj[key] = value
    if draw(st.integers(0, 3)) == 0:
        del obj["rate"]
    return obj


def _market_of(line: bytes) -> dict[str, Any] | None:
    if not line.startswith(b'{"type": "market"'):
        return None  # the version-1 generator writes market lines with type first
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if isinstance(obj, dict) and obj.get("type") == "market" and isinstance(obj.get("market"), str):
        return obj
    return None


@st.composite
def input_streams_v2(draw: Draw, max_events: int = 150) -> list[bytes]:
    """A version-2 ``.jsonl`` stream split into lines."""
    lines = draw(input_streams(max_events=max_events))
    markets: list[str] = []
    out: list[bytes] = []
    for line in lines:
        obj = _market_of(line.rstrip(b"\r"))
        if obj is not None:
            markets.append(obj["market"])
            roll = draw(st.integers(0, 19))
            if roll < 17:
                line = dumps({**obj, **_v2_fields(draw)})
            elif roll == 17:
                field = draw(st.sampled_from(sorted(_BAD_V2)))
                line = dumps({**obj, field: draw(st.sampled_from(_BAD_V2[field]))})
        out.append(line)
        if markets and draw(st.integers(0, 9)) == 0:
            made = (
                _funding(draw, markets) if draw(st.integers(0, 9)) else _bad_funding(draw, markets)
            )
            out.append(dumps(made))
    return out
