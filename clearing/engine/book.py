"""The in-memory order book a market's close-outs are priced against.

Each side is a SortedDict of price_e8 -> qty_e8. A ``book`` input replaces both sides; a
close-out walks one side from the best price and consumes what it takes, so a second
close-out before the next ``book`` input sees only the depth that is left.
"""

from __future__ import annotations

from sortedcontainers import SortedDict

__all__ = ["OrderBook"]


class OrderBook:
    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        # Bids keyed by negated price so index 0 is the best (highest) bid.
        self.bids: SortedDict = SortedDict()
        self.asks: SortedDict = SortedDict()

    def replace(self, bids: dict[int, int], asks: dict[int, int]) -> None:
        self.bids = SortedDict({-price: qty for price, qty in bids.items()})
        self.asks = SortedDict(asks)

    def close_out(self, qty_e8: int, mark_e8: int) -> int:
        """Signed proceeds (e16) of closing a position of ``qty_e8`` against the book.

        A long (qty > 0) sells into the bids, a short buys from the asks, best price first;
        levels used are consumed. Quantity beyond the remaining depth is priced at the worst
        level walked; with no level left on the side, everything is priced at the mark.
        """
        if qty_e8 > 0:
            side, sign = self.bids, -1  # bid keys are negated prices
        else:
            side, sign = self.asks, 1
        remaining = abs(qty_e8)
        if not side:
            return qty_e8 * mark_e8
        notional = 0
        price = 0
        while remaining and side:
            key, level_qty = side.peekitem(0)
            price = key * sign
            taken = min(remaining, level_qty)
            notional += taken * price
            remaining -= taken
            if taken == level_qty:
                side.popitem(0)
            else:
                side[key] = level_qty - taken
        notional += remaining * price  # beyond the depth: the worst level walked
        return notional if qty_e8 > 0 else -notional

    def levels(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """(bids best-first, asks best-first) as (price_e8, qty_e8) pairs."""
        return [(-key, qty) for key, qty in self.bids.items()], list(self.asks.items())
