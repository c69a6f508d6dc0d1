"""Ledger state: accounts, positions and markets, with the two SPEC invariants.

Units: cash and K in e16, quantities and prices in e8, ratios in e8 (see ``money``).
Every market keeps a ``holders`` map of the accounts with a non-zero position in it, so an
oracle tick visits only the accounts it can affect.
"""

from __future__ import annotations

from typing import Final

from clearing.engine.book import OrderBook

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
    __slots__ = ("cash_e16", "id", "is_system", "positions")

    def __init__(self, account_id: str, cash_e16: int = 0) -> None:
        self.id = account_id
        self.cash_e16 = cash_e16
        self.is_system = account_id in SYSTEM_ACCOUNTS
        # market id -> Position; only non-zero positions are kept.
        self.positions: dict[str, Position] = {}


class MarketState:
    __slots__ = (
        "book",
        "held_e8",
        "holders",
        "id",
        "imr_e8",
        "liq_fee_e8",
        "mark_e8",
        "max_oracle_move_e8",
        "mmr_e8",
        "oracle_seen",
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
        self.book = OrderBook()
        # account id -> Account, for every account with a non-zero position here.
        self.holders: dict[str, Account] = {}


class InvariantViolation(AssertionError):
    """The ledger no longer balances: a bug, never an input problem. Stop, do not go on."""


class Ledger:
    """All accounts and markets, plus the totals the invariants are checked against."""

    __slots__ = (
        "accounts",
        "bad_debt",
        "fee_pool",
        "fill_ids",
        "fund",
        "markets",
        "net_deposits_e16",
    )

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.markets: dict[str, MarketState] = {}
        self.fill_ids: set[str] = set()
        # Deposits minus accepted withdrawals: what the cash of all accounts must sum to.
        self.net_deposits_e16 = 0
        # System accounts exist from genesis, so the state always lists them.
        self.fund = self.account(INSURANCE_FUND)
        self.fee_pool = self.account(FEE_POOL)
        self.bad_debt = self.account(BAD_DEBT)

    def account(self, account_id: str) -> Account:
        """The account with this id, created on first use."""
        account = self.accounts.get(account_id)
        if account is None:
            account = self.accounts[account_id] = Account(account_id)
        return account

    def set_position(self, account: Account, market: MarketState, qty_e8: int, k_e16: int) -> None:
        """Set an account's position in a market, keeping ``holders`` exact."""
        if qty_e8 == 0:
            if account.positions.pop(market.id, None) is not None:
                del market.holders[account.id]
            return
        position = account.positions.get(market.id)
        if position is None:
            account.positions[market.id] = Position(qty_e8, k_e16)
            market.holders[account.id] = account
        else:
            position.qty_e8 = qty_e8
            position.k_e16 = k_e16

    def check_invariants(self) -> None:
        """Raise InvariantViolation unless both SPEC invariants hold. O(accounts + positions)."""
        cash_e16 = 0
        qty_by_market = dict.fromkeys(self.markets, 0)
        for account in self.accounts.values():
            cash_e16 += account.cash_e16
            for market_id, position in account.positions.items():
                qty_by_market[market_id] += position.qty_e8
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
