"""Generate a realistic, deterministic stream of input events as .jsonl.

Mix (by default): ~70% fills, ~25% oracle ticks, the rest deposits, withdrawals and book
updates, over N accounts and M markets; prices follow a seeded random walk. Used by the
benchmarks and as a demo input.

    python tools/gen_events.py --events 1000000 --accounts 100000 --markets 20 -o in.jsonl
"""

from __future__ import annotations

import argparse
import random
import sys
from collections.abc import Iterator

__all__ = ["generate"]


def _dec(value: float, places: int) -> str:
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"


def generate(
    events: int,
    accounts: int,
    markets: int,
    seed: int = 1,
    ts_start_ns: int = 1_700_000_000 * 10**9,
) -> Iterator[bytes]:
    """Yield ``events`` input lines (bytes, no newline). Floats only steer the random walk;
    every number written is a decimal string with at most 8 places."""
    rng = random.Random(seed)
    market_ids = [f"M{i:02d}-PERP" for i in range(markets)]
    prices = {m: rng.uniform(20, 2000) for m in market_ids}
    ts = ts_start_ns
    emitted = 0

    def line(text: str) -> bytes:
        return text.encode()

    for m in market_ids:
        yield line(
            f'{{"type":"market","market":"{m}","imr":"0.1","mmr":"0.05","liq_fee":"0.01",'
            f'"max_oracle_move":"0.2","ts":{ts}}}'
        )
        emitted += 1
    for i in range(accounts):
        if emitted >= events:
            return
        yield line(
            f'{{"type":"deposit","account":"acct-{i:07d}","amount":"{rng.randint(1000, 50000)}",'
            f'"ts":{ts}}}'
        )
        emitted += 1
    yield line(f'{{"type":"deposit","account":"insurance-fund","amount":"10000000","ts":{ts}}}')
    emitted += 1
    fill_no = 0
    while emitted < events:
        ts += rng.randint(10_000, 2_000_000)
        roll = rng.random()
        m = rng.choice(market_ids)
        if roll < 0.70:
            fill_no += 1
            buyer = rng.randrange(accounts)
            seller = rng.randrange(accounts - 1)
            if seller >= buyer:
                seller += 1
            price = prices[m] * (1 + rng.uniform(-0.001, 0.001))
            qty = rng.uniform(0.01, 5) * 100 / prices[m]
            yield line(
                f'{{"type":"fill","fill_id":"F{fill_no}","market":"{m}","price":"{_dec(price, 2)}",'
                f'"qty":"{_dec(qty, 4)}","buyer":"acct-{buyer:07d}","seller":"acct-{seller:07d}",'
                f'"buyer_fee":"{_dec(price * qty * 0.0005, 6)}","seller_fee":"0","ts":{ts}}}'
            )
        elif roll < 0.95:
            prices[m] *= 1 + rng.gauss(0, 0.004)
            yield line(
                f'{{"type":"oracle","market":"{m}","price":"{_dec(prices[m], 4)}","ts":{ts}}}'
            )
        elif roll < 0.98:
            account = rng.randrange(accounts)
            amount = rng.randint(10, 1000)
            yield line(
                f'{{"type":"deposit","account":"acct-{account:07d}","amount":"{amount}","ts":{ts}}}'
            )
        elif roll < 0.99:
            account = rng.randrange(accounts)
            amount = rng.randint(1, 500)
            yield line(
                f'{{"type":"withdraw","account":"acct-{account:07d}","amount":"{amount}",'
                f'"ts":{ts}}}'
            )
        else:
            p = prices[m]
            bids = ",".join(f'["{_dec(p * (1 - 0.001 * k), 2)}","{k}"]' for k in range(1, 6))
            asks = ",".join(f'["{_dec(p * (1 + 0.001 * k), 2)}","{k}"]' for k in range(1, 6))
            yield line(
                f'{{"type":"book","market":"{m}","bids":[{bids}],"asks":[{asks}],"ts":{ts}}}'
            )
        emitted += 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--markets", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("-o", "--output", default="-")
    args = parser.parse_args(argv)
    out = sys.stdout.buffer if args.output == "-" else open(args.output, "wb")  # noqa: SIM115
    with out:
        for raw in generate(args.events, args.accounts, args.markets, args.seed):
            out.write(raw + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
