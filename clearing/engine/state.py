"""Ledger state: accounts, positions and markets, with the two SPEC invariants.

Units: cash and K in e16, quantities and prices in e8, ratios in e8 (see ``money``).
Every market keeps a ``holders`` map of the accounts with a non-zero position in it, so an
oracle tick visits only the accounts it can affect.
"""

from __future__ import annotations

from typing import Final

from sortedcontainers import SortedList

from clearing.engine.book import OrderBook
from clearing.engine.money import E8
from clearing.errors import InvariantViolation

__all__ = [
    "BAD_DEBT",
    "FEE_POOL",
    "INSURANCE_FUND",
    "SYSTEM_ACCOUNTS",
    "Account",
    "InvariantViolation",
    "Ledger",
    "MarketState",
    "Position",
]

INSURANCE_FUND: Final = "insurance-fund"
FEE_POOL: Final = "fee-pool"
BAD_DEBT: Final = "bad-debt"
SYSTEM_ACCOUNTS: Final = frozenset((INSURANCE_FUND, FEE_POOL, BAD_DEBT))


class Position:
    """A signed base quantity and K, the cash flow of its fills since it was last flat."""

    __slots__ = ("k_e16", "qty_e8")

    def __init__(self, qty_e8: int = 0, k_e16: int = 0) -> None:
        self.qty_e8 = qty_e8
        self.k_e16 = k_e16


class Account:
    __slots__ = (
        "band_terms_e24",
        "cash_e16",
        "handle",
        "id",
        "index_bands",
        "is_system",
        "positions",
        "threshold_key",
        "threshold_list",
    )

    def __init__(self, account_id: str, handle: int, cash_e16: int = 0) -> None:
        self.id = account_id
        # A small integer naming the account inside the liquidation index (see index_key).
        self.handle = handle
        self.cash_e16 = cash_e16
        self.is_system = account_id in SYSTEM_ACCOUNTS
        # market id -> Position; only non-zero positions are kept.
        self.positions: dict[str, Position] = {}
        # Where the liquidation index holds this account (see Ledger.reindex). With one
        # position: the threshold list it is in and its key there (the same int object,
        # so the entry costs no second copy); with several: the safety edges below.
        self.threshold_list: SortedList | None = None
        self.threshold_key = 0
        # Safety edges: market id -> (is_long, edge mark e8, the buffer term q*edge*(1-/+mmr)
        # at e24), and the sum of those terms, so a fill or a cash change re-checks the
        # edges in O(1) instead of O(markets held). None while it has fewer than two.
        self.index_bands: dict[str, tuple[bool, int, int]] | None = None
        self.band_terms_e24 = 0


# Rules version 2's market defaults (SPEC §9): whole close-outs, clawbacks, whole fees to
# the fund, no tiers, lambda 0.05. A version-1 market keeps these and never reads them.
DEFAULT_LIQ_STEP_E8: Final = E8
DEFAULT_FUND_SHARE_E8: Final = E8
DEFAULT_VOL_LAMBDA_E8: Final = 5_000_000


class MarketState:
    __slots__ = (
        "adl",
        "band_high",
        "band_low",
        "book",
        "fund_share_e8",
        "held_e8",
        "holders",
        "id",
        "imr_e8",
        "liq_fee_e8",
        "liq_step_e8",
        "long_oi_e8",
        "long_thresholds",
        "mark_e8",
        "max_oracle_move_e8",
        "mmr_e8",
        "oracle_seen",
        "qty_sum_e8",
        "short_thresholds",
        "vol_e16",
        "vol_lambda_e8",
        "vol_tiers",
    )

    def __init__(
        self,
        market_id: str,
        imr_e8: int,
        mmr_e8: int,
        liq_fee_e8: int,
        max_oracle_move_e8: int | None,
    ) -> None:
        self.id = market_id
        self.imr_e8 = imr_e8
        self.mmr_e8 = mmr_e8
        self.liq_fee_e8 = liq_fee_e8
        self.max_oracle_move_e8 = max_oracle_move_e8
        self.mark_e8: int | None = None
        # Once an oracle tick is accepted, fills no longer move the mark.
        self.oracle_seen = False
        self.held_e8: int | None = None
        # Rules version 2 (SPEC §9): partial-step fraction, loss policy, fee split and the
        # volatility estimate (a variance per tick, e16, rounded half-even).
        self.liq_step_e8: int = DEFAULT_LIQ_STEP_E8
        self.adl = False
        self.fund_share_e8: int = DEFAULT_FUND_SHARE_E8
        self.vol_tiers: tuple[tuple[int, int], ...] = ()
        self.vol_lambda_e8: int = DEFAULT_VOL_LAMBDA_E8
        self.vol_e16 = 0
        # The running sum of every account's quantity here (SPEC §2: always 0 after an
        # input), kept by Ledger.move_qty so the check costs O(1) per input; and the
        # running sum of the long positions (the open interest the read API shows).
        self.qty_sum_e8 = 0
        self.long_oi_e8 = 0
        self.book = OrderBook()
        # account id -> Account, for every account with a non-zero position here.
        self.holders: dict[str, Account] = {}
        # The liquidation index of accounts whose only position is in this market, as
        # index_key(threshold mark e8, handle) integers. A long is liquidatable iff
        # mark <= threshold, a short iff mark >= threshold; both are exact integer bounds
        # (see threshold_e8).
        self.long_thresholds: SortedList = SortedList()
        self.short_thresholds: SortedList = SortedList()
        # Accounts holding this market and at least one other: their margin depends on
        # several marks, so no single threshold exists. Each holds a safety edge per market
        # (see Ledger.reindex): while no mark crosses its edge the account cannot be
        # liquidatable, so a tick only needs to look at the edges it crosses.
        self.band_low: SortedList = SortedList()  # longs: index_key(floor mark e8, handle)
        self.band_high: SortedList = SortedList()  # shorts: index_key(ceiling, handle)

    def liquidation_candidates(
        self, mark_e8: int, by_handle: list[Account]
    ) -> tuple[list[Account], list[Account]]:
        """Accounts a new mark of ``mark_e8`` may make liquidatable, without a full scan.

        Returns (single-position accounts that are now liquidatable, multi-position
        accounts whose safety edge in this market the mark crossed, by account id). The
        caller checks the second list exactly and re-indexes the survivors.
        """
        # Bisect first: most ticks cross nothing, and an empty irange costs more.
        liquidatable: list[Account] = []
        longs = self.long_thresholds
        first = longs.bisect_left(mark_e8 << _HANDLE_BITS)
        if first < len(longs):
            liquidatable += [by_handle[key & _HANDLE_MASK] for key in longs.islice(first)]
        shorts = self.short_thresholds
        stop = shorts.bisect_left((mark_e8 + 1) << _HANDLE_BITS)
        if stop:
            liquidatable += [by_handle[key & _HANDLE_MASK] for key in shorts.islice(0, stop)]
        crossed: set[int] = set()
        floors = self.band_low
        first = floors.bisect_left((mark_e8 + 1) << _HANDLE_BITS)
        if first < len(floors):
            crossed.update(key & _HANDLE_MASK for key in floors.islice(first))
        ceilings = self.band_high
        stop = ceilings.bisect_left(mark_e8 << _HANDLE_BITS)
        if stop:
            crossed.update(key & _HANDLE_MASK for key in ceilings.islice(0, stop))
        left = [by_handle[handle] for handle in crossed]
        left.sort(key=_account_id)
        return liquidatable, left


# Index keys pack (mark e8, account handle) into one integer, mark in the high bits, so the
# sorted lists compare plain ints instead of tuples (several times faster to bisect).
# Python ints are unbounded and the shift keeps order for negative marks too.
_HANDLE_BITS: Final = 40
_HANDLE_MASK: Final = (1 << _HANDLE_BITS) - 1


def index_key(mark_e8: int, handle: int) -> int:
    return (mark_e8 << _HANDLE_BITS) | handle


def _account_id(account: Account) -> str:
    return account.id


# A long threshold no positive mark reaches: never liquidatable.
_NEVER_LONG: Final = 0


def threshold_e8(cash_e16: int, qty_e8: int, mmr_e8: int) -> int:
    """The mark at which a one-position account becomes liquidatable, as an exact bound.

    With one position, E - MM = C + m * s where s = q * (1 - mmr) for a long and
    q * (1 + mmr) for a short, so E < MM is linear in the mark m:
    a long is liquidatable iff m <= L = ceil(-C / s) - 1, a short iff m >= H =
    floor(C / |s|) + 1 (in e8 units of m, all integer arithmetic).
    """
    scaled_cash = cash_e16 * E8  # e24
    if qty_e8 > 0:
        slope = qty_e8 * (E8 - mmr_e8)  # e16
        if slope == 0:  # mmr = 1: only cash matters
            return 10**40 if cash_e16 < 0 else _NEVER_LONG
        return -(scaled_cash // slope) - 1
    slope = -qty_e8 * (E8 + mmr_e8)
    return scaled_cash // slope + 1


def _edges(
    parts: list[tuple[str, bool, int, int, int]], share_e24: int, gross_e24: int
) -> list[tuple[str, tuple[bool, int, int]]]:
    """Edges for (market id, is_long, mark e8, |slope| e16, weight e24) parts that together
    use at most ``share_e24`` of buffer, shared in proportion to weight; each as
    (market id, (is_long, edge mark e8, buffer term e24 at the edge))."""
    edges = []
    for market_id, is_long, mark_e8, slope_e16, weight_e24 in parts:
        if slope_e16 == 0:
            # This mark cannot move the buffer (a long with mmr = 1): no floor.
            edges.append((market_id, (True, 0, 0)))
            continue
        move_e8 = (share_e24 * weight_e24 // gross_e24) // slope_e16
        if is_long:
            edge_e8 = mark_e8 - move_e8
            edges.append((market_id, (True, edge_e8, edge_e8 * slope_e16)))
        else:
            edge_e8 = mark_e8 + move_e8
            edges.append((market_id, (False, edge_e8, -edge_e8 * slope_e16)))
    return edges


class Ledger:
    """All accounts and markets, plus the totals the invariants are checked against."""

    __slots__ = (
        "accounts",
        "bad_debt",
        "by_handle",
        "cash_sum_e16",
        "fee_pool",
        "fill_ids",
        "fund",
        "markets",
        "net_deposits_e16",
        "unbalanced_markets",
    )

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        # Account.handle -> Account: how the liquidation index names accounts.
        self.by_handle: list[Account] = []
        self.markets: dict[str, MarketState] = {}
        self.fill_ids: set[str] = set()
        # Deposits minus accepted withdrawals: what the cash of all accounts must sum to.
        self.net_deposits_e16 = 0
        # Running totals for the per-input invariant check (assert_balanced): the cash
        # of all accounts, and how many markets' quantities do not sum to 0.
        self.cash_sum_e16 = 0
        self.unbalanced_markets = 0
        # System accounts exist from genesis, so the state always lists them.
        self.fund = self.account(INSURANCE_FUND)
        self.fee_pool = self.account(FEE_POOL)
        self.bad_debt = self.account(BAD_DEBT)

    def account(self, account_id: str) -> Account:
        """The account with this id, created on first use."""
        account = self.accounts.get(account_id)
        if account is None:
            account = Account(account_id, len(self.by_handle))
            self.accounts[account_id] = account
            self.by_handle.append(account)
        return account

    def move_cash(self, account: Account, delta_e16: int) -> None:
        """Change an account's cash, keeping the running total of all cash."""
        account.cash_e16 += delta_e16
        self.cash_sum_e16 += delta_e16

    def move_qty(self, market: MarketState, old_e8: int, new_e8: int) -> None:
        """Note a position's change from ``old_e8`` to ``new_e8`` in the market's running
        sums."""
        market.long_oi_e8 += max(new_e8, 0) - max(old_e8, 0)
        before_e8 = market.qty_sum_e8
        after_e8 = before_e8 + new_e8 - old_e8
        market.qty_sum_e8 = after_e8
        if (before_e8 == 0) != (after_e8 == 0):
            self.unbalanced_markets += 1 if after_e8 else -1

    def assert_balanced(self) -> None:
        """Both SPEC invariants from the running totals, in O(1): called after every input
        (as TigerBeetle asserts in the code path), so a bug stops the ledger at the input
        that caused it. ``check_invariants`` is the deep, O(accounts) check."""
        if self.cash_sum_e16 != self.net_deposits_e16:
            raise InvariantViolation(
                f"cash sums to {self.cash_sum_e16} e-16 but deposits minus withdrawals are "
                f"{self.net_deposits_e16} e-16"
            )
        if self.unbalanced_markets:
            unbalanced = sorted(m.id for m in self.markets.values() if m.qty_sum_e8)
            raise InvariantViolation(f"positions in {', '.join(unbalanced)} do not sum to 0")

    def recount(self) -> None:
        """Rebuild the running totals from scratch (after loading a snapshot)."""
        self.cash_sum_e16 = sum(account.cash_e16 for account in self.accounts.values())
        for market in self.markets.values():
            market.qty_sum_e8 = market.long_oi_e8 = 0
        for account in self.accounts.values():
            for market_id, position in account.positions.items():
                market = self.markets[market_id]
                market.qty_sum_e8 += position.qty_e8
                market.long_oi_e8 += max(position.qty_e8, 0)
        self.unbalanced_markets = sum(1 for m in self.markets.values() if m.qty_sum_e8)

    def set_position(self, account: Account, market: MarketState, qty_e8: int, k_e16: int) -> None:
        """Set an account's position in a market, keeping ``holders`` exact."""
        position = account.positions.get(market.id)
        self.move_qty(market, position.qty_e8 if position else 0, qty_e8)
        if qty_e8 == 0:
            if account.positions.pop(market.id, None) is not None:
                del market.holders[account.id]
            return
        if position is None:
            account.positions[market.id] = Position(qty_e8, k_e16)
            market.holders[account.id] = account
        else:
            position.qty_e8 = qty_e8
            position.k_e16 = k_e16

    def reindex(self, account: Account) -> bool:
        """Refresh the account's place in the liquidation index from scratch: after a
        mark it holds moved, an mmr changed, or a liquidation. (After a fill or a cash
        change, ``reindex_fill`` and ``reindex_cash`` do the same work faster.)

        Returns True when the index proves the account is neither liquidatable nor
        bankrupt at the current marks, so the caller may skip the exact check; False means
        it is (single position: exact threshold; several: E < MM; none: C < 0). System
        accounts are never liquidated and never indexed.
        """
        if account.is_system:
            return True
        positions = account.positions
        count = len(positions)
        if count == 1:
            if account.index_bands is not None:
                self._drop_bands(account)
            return self._index_single(account)
        if account.threshold_list is not None:
            self._set_threshold(account, None, 0)
        if count == 0:
            if account.index_bands is not None:
                self._drop_bands(account)
            return account.cash_e16 >= 0
        return self._refresh_bands(account)

    def reindex_cash(self, account: Account) -> bool:
        """``reindex`` after a change to the account's cash only."""
        bands = account.index_bands
        if bands is None or account.is_system:
            return self.reindex(account)
        if account.cash_e16 * E8 + account.band_terms_e24 >= 0:
            return True  # every edge still holds
        return self._refresh_bands(account)

    def reindex_fill(self, account: Account, market: MarketState) -> bool:
        """``reindex`` after a fill changed the account's cash and its position in
        ``market`` (and nothing else: every other edge is still uncrossed, because a tick
        that crosses one re-indexes the account at once).

        An account with several positions keeps its edge in ``market`` if the edge still
        holds for the new position, or gets a new one from half of its buffer; the other
        edges are kept. One or two sorted-list updates at most, O(1) arithmetic.
        """
        bands = account.index_bands
        positions = account.positions
        if bands is None or len(positions) < 2 or account.is_system:
            return self.reindex(account)
        market_id = market.id
        old = bands.get(market_id)
        if len(bands) - (old is not None) != len(positions) - (market_id in positions):
            return self.reindex(account)  # not the state this fast path assumes
        terms_e24 = account.band_terms_e24 - (old[2] if old is not None else 0)
        buffer_e24 = account.cash_e16 * E8 + terms_e24
        position = positions.get(market_id)
        if position is None:  # the fill closed this market
            if buffer_e24 < 0:
                return self._refresh_bands(account)
            self._remove_band(account, market, old)  # type: ignore[arg-type]
            del bands[market_id]
            account.band_terms_e24 = terms_e24
            return True
        qty_e8 = position.qty_e8
        is_long = qty_e8 > 0
        mark_e8: int = market.mark_e8  # type: ignore[assignment]
        if is_long:
            slope_e16 = qty_e8 * (E8 - market.mmr_e8)
            mark_term_e24 = mark_e8 * slope_e16
        else:
            slope_e16 = -qty_e8 * (E8 + market.mmr_e8)
            mark_term_e24 = -mark_e8 * slope_e16
        if old is not None and old[0] == is_long:
            edge_e8 = old[1]
            if is_long:
                edge_term_e24 = edge_e8 * slope_e16
                uncrossed = mark_e8 >= edge_e8
            else:
                edge_term_e24 = -edge_e8 * slope_e16
                uncrossed = mark_e8 <= edge_e8
            if uncrossed and buffer_e24 + edge_term_e24 >= 0:
                bands[market_id] = (is_long, edge_e8, edge_term_e24)  # same edge, new term
                account.band_terms_e24 = terms_e24 + edge_term_e24
                return True
        available_e24 = buffer_e24 + mark_term_e24
        if available_e24 < 0:
            return self._refresh_bands(account)
        if slope_e16 == 0:  # a long with mmr = 1: its mark cannot move the buffer
            edge_e8 = 0
        else:
            move_e8 = (available_e24 // 2) // slope_e16
            edge_e8 = mark_e8 - move_e8 if is_long else mark_e8 + move_e8
        edge_term_e24 = edge_e8 * slope_e16 if is_long else -edge_e8 * slope_e16
        if old is not None:
            self._remove_band(account, market, old)
        (market.band_low if is_long else market.band_high).add(index_key(edge_e8, account.handle))
        bands[market_id] = (is_long, edge_e8, edge_term_e24)
        account.band_terms_e24 = terms_e24 + edge_term_e24
        return True

    def _index_single(self, account: Account) -> bool:
        ((market_id, position),) = account.positions.items()
        market = self.markets[market_id]
        qty_e8 = position.qty_e8
        bound_e8 = threshold_e8(account.cash_e16, qty_e8, market.mmr_e8)
        thresholds = market.long_thresholds if qty_e8 > 0 else market.short_thresholds
        key = index_key(bound_e8, account.handle)
        if account.threshold_list is not thresholds or account.threshold_key != key:
            self._set_threshold(account, thresholds, key)
        mark_e8: int = market.mark_e8  # type: ignore[assignment]
        return mark_e8 > bound_e8 if qty_e8 > 0 else mark_e8 < bound_e8

    def build_index(self) -> None:
        """Index every account of a ledger whose index is still empty (just loaded from a
        snapshot): thresholds are collected and sorted once per list, which is several
        times faster than inserting a million accounts one by one."""
        collected: dict[int, list[int]] = {}
        multi = []
        markets = self.markets
        for account in self.accounts.values():
            if account.is_system or not account.positions:
                continue
            if len(account.positions) > 1:
                multi.append(account)
                continue
            ((market_id, position),) = account.positions.items()
            market = markets[market_id]
            qty_e8 = position.qty_e8
            bound_e8 = threshold_e8(account.cash_e16, qty_e8, market.mmr_e8)
            thresholds = market.long_thresholds if qty_e8 > 0 else market.short_thresholds
            if thresholds:
                raise ValueError("build_index needs an empty index")
            key = index_key(bound_e8, account.handle)
            collected.setdefault(id(thresholds), []).append(key)
            account.threshold_list = thresholds
            account.threshold_key = key
        for market in markets.values():
            for thresholds in (market.long_thresholds, market.short_thresholds):
                thresholds.update(collected.get(id(thresholds), ()))
        for account in multi:
            self.reindex(account)

    def _set_threshold(self, account: Account, thresholds: SortedList | None, key: int) -> None:
        if account.threshold_list is not None:
            account.threshold_list.remove(account.threshold_key)
        if thresholds is not None:
            thresholds.add(key)
        account.threshold_list = thresholds
        account.threshold_key = key

    def _remove_band(
        self, account: Account, market: MarketState, band: tuple[bool, int, int]
    ) -> None:
        (market.band_low if band[0] else market.band_high).remove(
            index_key(band[1], account.handle)
        )

    def _drop_bands(self, account: Account) -> None:
        markets = self.markets
        for market_id, band in account.index_bands.items():  # type: ignore[union-attr]
            self._remove_band(account, markets[market_id], band)
        account.index_bands = None
        account.band_terms_e24 = 0

    def _refresh_bands(self, account: Account) -> bool:
        """Make a multi-market account's safety edges valid again, moving as few as
        possible. Returns whether E >= MM (False: it is liquidatable).

        An edge survives while its market is held on the same side and its mark has not
        crossed it. If the buffer with every surviving mark at its edge and every other
        mark where it is now is still >= 0, only the other markets get new edges, from
        half of that buffer; otherwise all edges are recomputed (``_safety_bands``).
        """
        markets = self.markets
        positions = account.positions
        old_bands = account.index_bands or {}
        handle = account.handle
        terms_e24 = 0
        bands: dict[str, tuple[bool, int, int]] = {}
        for market_id, (is_long, edge_e8, _) in old_bands.items():
            position = positions.get(market_id)
            if position is None or (position.qty_e8 > 0) != is_long:
                continue
            market = markets[market_id]
            if is_long:
                if market.mark_e8 < edge_e8:  # type: ignore[operator]
                    continue
                term_e24 = edge_e8 * position.qty_e8 * (E8 - market.mmr_e8)
            else:
                if market.mark_e8 > edge_e8:  # type: ignore[operator]
                    continue
                term_e24 = edge_e8 * position.qty_e8 * (E8 + market.mmr_e8)
            bands[market_id] = (is_long, edge_e8, term_e24)
            terms_e24 += term_e24
        buffer_e24 = account.cash_e16 * E8 + terms_e24
        fresh: list[tuple[str, bool, int, int, int]] = []
        gross_e24 = 0
        if len(bands) != len(positions):
            mark_terms_e24, gross_e24, fresh = self._at_marks(account, skip=bands)
            buffer_e24 += mark_terms_e24
        safe = True
        if buffer_e24 >= 0:
            for market_id, band in _edges(fresh, buffer_e24 // 2, gross_e24):
                bands[market_id] = band
                terms_e24 += band[2]
        else:
            bands, terms_e24, safe = self._safety_bands(account)
        for market_id, band in old_bands.items():
            new = bands.get(market_id)
            if new is None or new[:2] != band[:2]:
                self._remove_band(account, markets[market_id], band)
        for market_id, band in bands.items():
            old = old_bands.get(market_id)
            if old is None or old[:2] != band[:2]:
                market = markets[market_id]
                (market.band_low if band[0] else market.band_high).add(index_key(band[1], handle))
        account.index_bands = bands
        account.band_terms_e24 = terms_e24
        return safe

    def _safety_bands(self, account: Account) -> tuple[dict[str, tuple[bool, int, int]], int, bool]:
        """One edge per market (a floor under a long's mark, a ceiling over a short's) such
        that, while no mark crosses its edge, the account stays at E >= MM; the sum of
        their buffer terms; and whether E >= MM holds now.

        With buffer B = E - MM = C + sum(m_k * s_k) (s_k = q_k * (1 -/+ mmr_k)), only
        adverse moves lower B: a fall dm_k < 0 for a long, a rise for a short, each by at
        most |dm_k| * |s_k|. Half the buffer is shared out in proportion to each market's
        weight |s_k| * m_k, and the edge allows an adverse move of share_k / |s_k|; the
        other half is a reserve, so fees and small fills do not invalidate the edges at
        once. Divisions round down, so the edges never allow more than the buffer. A
        buffer already negative puts every edge at the mark.
        """
        mark_terms_e24, gross_e24, parts = self._at_marks(account, skip={})
        buffer_e24 = account.cash_e16 * E8 + mark_terms_e24
        bands = dict(_edges(parts, max(0, buffer_e24) // 2, gross_e24))
        return bands, sum(band[2] for band in bands.values()), buffer_e24 >= 0

    def _at_marks(
        self, account: Account, skip: dict[str, tuple[bool, int, int]]
    ) -> tuple[int, int, list[tuple[str, bool, int, int, int]]]:
        """For the account's positions outside ``skip``: the sum of their buffer terms
        ``m * s_k`` at the current marks (e24), their gross weight ``sum |s_k| * m`` (e24),
        and one (market id, is_long, mark e8, |s_k| e16, weight e24) part each, for _edges."""
        markets = self.markets
        terms_e24 = 0
        gross_e24 = 0
        parts = []
        for market_id, position in account.positions.items():
            if market_id in skip:
                continue
            market = markets[market_id]
            mark_e8: int = market.mark_e8  # type: ignore[assignment]
            qty_e8 = position.qty_e8
            if qty_e8 > 0:
                slope_e16 = qty_e8 * (E8 - market.mmr_e8)  # |s_k|
                terms_e24 += mark_e8 * slope_e16
            else:
                slope_e16 = -qty_e8 * (E8 + market.mmr_e8)
                terms_e24 -= mark_e8 * slope_e16
            weight_e24 = slope_e16 * mark_e8
            gross_e24 += weight_e24
            parts.append((market_id, qty_e8 > 0, mark_e8, slope_e16, weight_e24))
        return terms_e24, gross_e24, parts

    def _bands_still_hold(self, account: Account) -> bool:
        """Recompute from scratch that the account's edges guarantee E >= MM: one per
        market held, on the position's side, uncrossed, and the buffer with every mark at
        its edge is not negative. The cached term sum must match. For check_index."""
        bands = account.index_bands
        positions = account.positions
        if bands is None or bands.keys() != positions.keys():
            return False
        buffer_e24 = account.cash_e16 * E8
        terms_e24 = 0
        for market_id, (is_long, edge_e8, cached_term_e24) in bands.items():
            qty_e8 = positions[market_id].qty_e8
            if (qty_e8 > 0) != is_long:
                return False
            market = self.markets[market_id]
            mark_e8: int = market.mark_e8  # type: ignore[assignment]
            if is_long:
                if mark_e8 < edge_e8:
                    return False
                term_e24 = edge_e8 * qty_e8 * (E8 - market.mmr_e8)
            else:
                if mark_e8 > edge_e8:
                    return False
                term_e24 = edge_e8 * qty_e8 * (E8 + market.mmr_e8)
            if term_e24 != cached_term_e24:
                return False
            terms_e24 += term_e24
        return terms_e24 == account.band_terms_e24 and buffer_e24 + terms_e24 >= 0

    def check_index(self) -> None:
        """Raise InvariantViolation if the liquidation index could miss an account."""
        # Membership through sets: one pass per sorted list instead of a bisection per key.
        members = {
            id(keys): set(keys)
            for market in self.markets.values()
            for keys in (
                market.long_thresholds,
                market.short_thresholds,
                market.band_low,
                market.band_high,
            )
        }
        for account in self.accounts.values():
            if account.is_system:
                continue
            thresholds, key = account.threshold_list, account.threshold_key
            if len(account.positions) == 1:
                bands_before = account.index_bands
                self.reindex(account)  # recomputes the exact threshold; must be a no-op
                if (
                    account.threshold_list is not thresholds
                    or account.threshold_key != key
                    or bands_before is not None
                ):
                    raise InvariantViolation(f"liquidation index entry of {account.id} is stale")
                if key not in members[id(thresholds)]:
                    raise InvariantViolation(f"threshold of {account.id} is not indexed")
            elif thresholds is not None:
                raise InvariantViolation(f"{account.id} has a stray threshold entry")
            if len(account.positions) > 1:
                if not self._bands_still_hold(account):
                    raise InvariantViolation(f"safety bands of {account.id} no longer hold")
                for market_id, (is_long, edge_e8, _) in account.index_bands.items():  # type: ignore[union-attr]
                    market = self.markets[market_id]
                    bands = market.band_low if is_long else market.band_high
                    if index_key(edge_e8, account.handle) not in members[id(bands)]:
                        raise InvariantViolation(f"safety edge of {account.id} is not indexed")
            elif account.index_bands is not None:
                raise InvariantViolation(f"{account.id} has stray safety bands")
        for market in self.markets.values():
            singles = len(market.long_thresholds) + len(market.short_thresholds)
            multis = sum(
                1 for a in market.holders.values() if not a.is_system and len(a.positions) > 1
            )
            if singles + multis != sum(1 for a in market.holders.values() if not a.is_system):
                raise InvariantViolation(f"liquidation index of {market.id} is incomplete")
            if len(market.band_low) + len(market.band_high) != multis:
                raise InvariantViolation(f"safety bands of {market.id} have stray entries")

    def check_invariants(self) -> None:
        """Raise InvariantViolation unless both SPEC invariants hold. O(accounts + positions)."""
        cash_e16 = 0
        qty_by_market = dict.fromkeys(self.markets, 0)
        long_by_market = dict.fromkeys(self.markets, 0)
        for account in self.accounts.values():
            cash_e16 += account.cash_e16
            for market_id, position in account.positions.items():
                qty_by_market[market_id] += position.qty_e8
                long_by_market[market_id] += max(position.qty_e8, 0)
        if cash_e16 != self.net_deposits_e16:
            raise InvariantViolation(
                f"cash sums to {cash_e16} e-16 but deposits minus withdrawals are "
                f"{self.net_deposits_e16} e-16"
            )
        for market_id, total_e8 in qty_by_market.items():
            if total_e8 != 0:
                raise InvariantViolation(f"positions in {market_id} sum to {total_e8} e-8, not 0")
            holders = self.markets[market_id].holders
            if any(market_id not in holder.positions for holder in holders.values()):
                raise InvariantViolation(f"holder index of {market_id} is stale")
        # The running totals assert_balanced reads must be the real sums.
        if cash_e16 != self.cash_sum_e16:
            raise InvariantViolation(f"running cash total {self.cash_sum_e16} e-16 is stale")
        stale = [m.id for m in self.markets.values() if m.qty_sum_e8 != qty_by_market[m.id]]
        if stale or self.unbalanced_markets:
            raise InvariantViolation(f"running quantity sums are stale: {stale}")
        for market in self.markets.values():
            if market.long_oi_e8 != long_by_market[market.id]:
                raise InvariantViolation(f"running open interest of {market.id} is stale")
