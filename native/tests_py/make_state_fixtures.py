"""Write ``dump_state`` bytes of a few real engines, for the native snapshot codec's test.

    python native/tests_py/make_state_fixtures.py [OUT_DIR]     # default /tmp/state_fixtures
    STATE_FIXTURES=/tmp/state_fixtures cargo test -- --include-ignored   # in native/

For each scenario NAME it writes NAME.msgpack (exactly what ``dump_state`` returns) and
NAME.txt: the same state read straight off the engine's objects (not through persist.py),
one line per record, so the Rust test checks what it decoded, not only that re-encoding
gives the same bytes. The scenarios are chosen to reach every msgpack width the codec
has: ints of every size on both sides of the int64 cut-off (cash past int64 travels as a
decimal string, past i128 too), str8/16/32 ids, array16/32 lists, nil/bool fields.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root

from clearing.engine import Engine, load_engine
from clearing.engine.persist import dump_state

HUGE = "999999999999999.99999999"  # the largest wire amount (1e15 - 1e-8)


def market(mid: str, imr: str = "0.1", mmr: str = "0.05", liq_fee: str = "0.01", **kw: str) -> dict:
    return {"type": "market", "market": mid, "imr": imr, "mmr": mmr, "liq_fee": liq_fee, **kw}


def deposit(account: str, amount: str) -> dict:
    return {"type": "deposit", "account": account, "amount": amount}


def fill(fid: str, mid: str, price: str, qty: str, buyer: str, seller: str, fee: str = "0") -> dict:
    return {
        "type": "fill", "fill_id": fid, "market": mid, "price": price, "qty": qty,
        "buyer": buyer, "seller": seller, "buyer_fee": fee, "seller_fee": fee,
    }  # fmt: skip


def oracle(mid: str, price: str) -> dict:
    return {"type": "oracle", "market": mid, "price": price}


def book(mid: str, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> dict:
    return {"type": "book", "market": mid, "bids": bids, "asks": asks}


def e8(units: int) -> str:
    """An e8 integer as a wire decimal (qty 128 -> "0.00000128")."""
    return f"{units // 10**8}.{units % 10**8:08d}"


def empty() -> Iterable[dict]:
    return []


def basic() -> Iterable[dict]:
    yield market("BTC-PERP")
    yield market("ETH-PERP", imr="0.2", mmr="0.1", liq_fee="0")
    for name, amount in (("alice", "100000"), ("bob", "250000.5"), ("carol", "7")):
        yield deposit(name, amount)
    yield fill("f-1", "BTC-PERP", "60000", "0.5", "alice", "bob", "1.25")
    yield fill("f-2", "ETH-PERP", "3000.12345678", "2", "bob", "alice")
    yield oracle("BTC-PERP", "60100")
    yield book("BTC-PERP", [("60000", "1"), ("59990", "2.5")], [("60010", "0.75")])
    yield fill("f-3", "BTC-PERP", "60050", "0.1", "bob", "alice")  # mark already oracle-set
    yield {"type": "withdraw", "account": "alice", "amount": "10"}


def huge() -> Iterable[dict]:
    # Cash far past int64 (decimal strings), and cash and K past i128: qty 5e11 at 1e11
    # is 5e38 in e16, kept safe by a 1e-8 maintenance ratio.
    yield market("BIG", imr="1", mmr="0.00000001", liq_fee="0")
    for i in range(3):
        yield deposit("whale", HUGE)
        yield deposit(f"whale-{i}", HUGE)
    yield oracle("BIG", "100000000000")  # fixes the mark: big-2's tiny price must not move it
    yield fill("big-1", "BIG", "100000000000", "500000000000", "whale", "whale-0")
    yield fill("big-2", "BIG", "0.00000001", "0.00000001", "whale-1", "whale-2")
    yield book("BIG", [("1000000000000000", "1000000000000000")], [(HUGE, HUGE)])
    yield oracle("BIG", "100000000001")


def held() -> Iterable[dict]:
    # max_oracle_move set; a tick beyond it is held (held_e8), a later one confirms.
    yield market("HELD", max_oracle_move="0.1")
    yield market("CONFIRMED", max_oracle_move="0.05")
    yield market("NO-ORACLE")
    yield deposit("a", "1000")
    yield deposit("b", "1000")
    yield fill("h-1", "HELD", "100", "1", "a", "b")
    yield oracle("HELD", "100")
    yield oracle("HELD", "150")  # held
    yield oracle("CONFIRMED", "10")
    yield oracle("CONFIRMED", "20")  # held
    yield oracle("CONFIRMED", "20.5")  # within 5% of the held price: confirmed
    yield fill("h-2", "NO-ORACLE", "42", "1", "a", "b")  # mark from a fill, oracle_seen False


def negative_cash() -> Iterable[dict]:
    # Buyers' cash goes negative (small, int64-sized and past int64), and a crash runs
    # the waterfall: liquidations, fund draws, bad debt.
    yield market("SOL", imr="0.1", mmr="0.05", liq_fee="0.02")
    yield deposit("insurance-fund", "5")
    yield deposit("tiny", "0.00000001")
    yield deposit("mid", "0.5")
    yield deposit("levered", "1000")
    yield deposit("mm", "1000000")
    yield fill("n-1", "SOL", "0.00000002", "0.00000003", "tiny", "mm")  # cash -5e0 e16
    yield fill("n-2", "SOL", "1.5", "0.3", "mid", "mm")  # int64-sized negative cash
    yield fill("n-3", "SOL", "150", "60", "levered", "mm")  # past int64
    yield book("SOL", [("140", "10"), ("120", "100")], [("151", "5")])
    yield oracle("SOL", "150")
    yield oracle("SOL", "130")  # levered falls below maintenance: liquidation
    yield oracle("SOL", "40")


def widths() -> Iterable[dict]:
    # ids of every str width, counts past 15 (array16), ints at every width boundary.
    markets = [f"M{i:02d}" for i in range(17)]
    for mid in markets:
        yield market(mid)
    ids = ["x" * n for n in (1, 31, 32, 255, 256, 65535, 65536)] + ["Ünïcødé-☃-trader", "日本"]
    for account in ids:
        yield deposit(account, "1000000")
    qtys = [1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63]
    n = 0
    for i, qty in enumerate(qtys):
        for j, price in enumerate((1, 127, 128, 65536)):
            n += 1
            buyer, seller = ids[(i + j) % len(ids)], ids[(i + j + 1) % len(ids)]
            yield fill(f"w-{n:03d}", markets[n % len(markets)], e8(price), e8(qty), buyer, seller)
    levels = [(e8(10**8 + k), e8(k + 1)) for k in range(17)]
    yield book("M00", levels, [(e8(2 * 10**8 + k), e8(127 + k)) for k in range(16)])
    yield book("M01", levels[:15], levels[:1])
    yield oracle("M02", e8(2**32))


def many() -> Iterable[dict]:
    # More than 65535 accounts and fill ids: array32 headers.
    yield market("MANY")
    yield deposit("mm", "1000000")
    for i in range(66000):
        yield deposit(f"acct-{i:06d}", "1")
        yield fill(f"m-{i:06d}", "MANY", "10", "0.001", f"acct-{i:06d}", "mm")


def generated() -> Iterable[dict]:
    # The benchmark generator's realistic mix (fills, ticks, books, deposits, withdrawals).
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
    from gen_events import generate

    for line in generate(events=20000, accounts=1500, markets=4, seed=7):
        yield json.loads(line)


SCENARIOS: dict[str, Callable[[], Iterable[dict]]] = {
    "empty": empty,
    "basic": basic,
    "huge": huge,
    "held": held,
    "negative_cash": negative_cash,
    "widths": widths,
    "many": many,
    "generated": generated,
}


def describe(engine: Engine) -> str:
    """The state as text, straight from the engine's objects (matches the Rust test)."""
    ledger = engine.ledger
    lines = ["version 1", f"seq {engine.seq}", f"net_deposits_e16 {ledger.net_deposits_e16}"]
    for account_id in sorted(ledger.accounts):
        account = ledger.accounts[account_id]
        lines.append(f"account {account_id} {account.cash_e16}")
        for market_id in sorted(account.positions):
            pos = account.positions[market_id]
            lines.append(f"position {account_id} {market_id} {pos.qty_e8} {pos.k_e16}")
    for market_id in sorted(ledger.markets):
        m = ledger.markets[market_id]
        lines.append(
            f"market {market_id} {m.imr_e8} {m.mmr_e8} {m.liq_fee_e8} {m.max_oracle_move_e8} "
            f"{m.mark_e8} {m.oracle_seen} {m.held_e8}"
        )
        bids, asks = m.book.levels()
        lines.extend(f"bid {market_id} {p} {q}" for p, q in bids)
        lines.extend(f"ask {market_id} {p} {q}" for p, q in asks)
    lines.extend(f"fill {fill_id}" for fill_id in sorted(ledger.fill_ids))
    return "\n".join(lines) + "\n"


def main() -> None:
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/state_fixtures")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, scenario in SCENARIOS.items():
        engine = Engine()
        rejects = 0
        for event in scenario():
            for output in engine.apply(json.dumps(event).encode()):
                rejects += type(output).__name__ == "Reject"
        engine.check_invariants()
        data = dump_state(engine)
        assert load_engine(data).dump_state() == data, name
        (out_dir / f"{name}.msgpack").write_bytes(data)
        (out_dir / f"{name}.txt").write_text(describe(engine), encoding="utf-8")
        print(
            f"{name}: {len(data)} bytes, {len(engine.ledger.accounts)} accounts, "
            f"seq {engine.seq}, {rejects} rejects"
        )


if __name__ == "__main__":
    main()
