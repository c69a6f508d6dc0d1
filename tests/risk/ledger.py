"""A small ledger whose shocks reach every layer of the waterfall, for the risk tests.

Two markets (BTC-PERP behind a 10% oracle guard, ETH-PERP without one), leveraged longs
bought from a few shorts (some accounts hold both markets, on cross margin), a thin BTC
book so close-outs gap below the mark, and a small insurance fund. Every input is stamped
(``ts``, one second apart) so the oracle history gives horizon scenarios.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

__all__ = ["START_TS_NS", "ledger_inputs"]

START_TS_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


def ledger_inputs(ticks: int = 40) -> Iterator[bytes]:
    ts = START_TS_NS

    def stamp(event: dict[str, object]) -> bytes:
        nonlocal ts
        ts += 10**9
        return json.dumps({**event, "ts": ts}, separators=(",", ":")).encode()

    yield stamp(
        {
            "type": "market",
            "market": "BTC-PERP",
            "imr": "0.1",
            "mmr": "0.05",
            "liq_fee": "0.01",
            "max_oracle_move": "0.1",
        }
    )
    yield stamp(
        {"type": "market", "market": "ETH-PERP", "imr": "0.1", "mmr": "0.05", "liq_fee": "0.02"}
    )
    yield stamp({"type": "oracle", "market": "BTC-PERP", "price": "100"})
    yield stamp({"type": "oracle", "market": "ETH-PERP", "price": "50"})
    yield stamp({"type": "deposit", "account": "insurance-fund", "amount": "40"})
    for short in range(4):
        yield stamp({"type": "deposit", "account": f"short-{short}", "amount": "3000"})
    for i in range(24):
        account = f"long-{i:02d}"
        yield stamp({"type": "deposit", "account": account, "amount": str(60 + 9 * i)})
        qty = 6 + i % 5
        yield stamp(
            {
                "type": "fill",
                "fill_id": f"b{i}",
                "market": "BTC-PERP",
                "price": "100",
                "qty": str(qty),
                "buyer": account,
                "seller": f"short-{i % 4}",
            }
        )
        if i % 3 == 0:  # cross margin: some longs hold ETH too
            yield stamp(
                {
                    "type": "fill",
                    "fill_id": f"e{i}",
                    "market": "ETH-PERP",
                    "price": "50",
                    "qty": "4",
                    "buyer": account,
                    "seller": f"short-{(i + 1) % 4}",
                }
            )
    yield stamp(
        {
            "type": "book",
            "market": "BTC-PERP",
            "bids": [["97", "5"], ["90", "10"], ["70", "20"]],
            "asks": [["103", "5"], ["110", "10"]],
        }
    )
    # A gentle history for the risk command: BTC and ETH walk up and down by 0.5%.
    for k in range(ticks):
        sign = 1 if k % 4 < 2 else -1
        btc = 100 + sign * (k % 3) * 0.5
        eth = 50 - sign * (k % 2) * 0.25
        yield stamp({"type": "oracle", "market": "BTC-PERP", "price": f"{btc:.2f}"})
        yield stamp({"type": "oracle", "market": "ETH-PERP", "price": f"{eth:.2f}"})
