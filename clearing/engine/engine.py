"""The engine: one ordered input in, its output events out. Pure and deterministic.

``Engine.apply(raw)`` is the single entry point: it numbers the input (``seq``), decodes
and validates it, applies it to the ledger and returns the output events in SPEC §6
order. It never reads a clock or does I/O; the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import msgspec

from clearing.engine import _views
from clearing.engine._contract import JournalRun, LedgerFigures, LedgerSummary
from clearing.engine._figures import ledger_figures, ledger_summary
from clearing.engine.events import (
    DecodeFailure,
    FundingPaid,
    OracleHeld,
    OutputEvent,
    ParsedBook,
    ParsedDeposit,
    ParsedFill,
    ParsedFunding,
    ParsedInput,
    ParsedMarket,
    ParsedMarketV2,
    ParsedOracle,
    ParsedWithdraw,
    Reject,
    Withdrawal,
    decode_input,
)
from clearing.engine.margin import equity_e16, initial_requirement_e24
from clearing.engine.money import CASH_PER_E8, E8, format_e8, format_e16
from clearing.engine.persist import dump_ledger, load_ledger
from clearing.engine.rules_v2 import (
    RULES_VERSIONS,
    funding_payment_e16,
    next_volatility_e16,
)
from clearing.engine.state import (
    BAD_DEBT,
    FEE_POOL,
    SYSTEM_ACCOUNTS,
    Account,
    Ledger,
    MarketState,
    Position,
)
from clearing.engine.waterfall import resolve_accounts
from clearing.engine.waterfall_v2 import resolve_accounts_v2

__all__ = ["Engine", "iter_jsonl_lines", "refusal_reject"]

# Reserved accounts that may not deposit or trade (the fund may do both).
_NO_DEPOSIT_OR_TRADE = frozenset((FEE_POOL, BAD_DEBT))


class _Rejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def refusal_reject(seq: int, reason: str, parsed: ParsedInput) -> Reject:
    """The reject event for a valid input the ledger refuses (SPEC §3's codes after
    ``invalid_field``). The one place their detail text is written: the native core
    returns only the reason and the Python side formats the event with this."""
    if reason == "unknown_market":
        detail = f"market {parsed.market!r:.60} has not been created"  # type: ignore[union-attr]
    elif reason == "reserved_account":
        if type(parsed) is ParsedDeposit:
            detail = f"{parsed.account} cannot receive deposits"
        elif type(parsed) is ParsedWithdraw:
            detail = f"{parsed.account} cannot withdraw"
        else:
            assert type(parsed) is ParsedFill
            side = parsed.buyer if parsed.buyer in _NO_DEPOSIT_OR_TRADE else parsed.seller
            detail = f"{side} cannot trade"
    elif reason == "duplicate_fill":
        detail = f"fill_id {parsed.fill_id!r:.60} was applied before"  # type: ignore[union-attr]
    else:
        detail = _FIXED_DETAILS[reason]
    return Reject(seq, reason, detail, **_known(parsed))


_FIXED_DETAILS: Final = {
    "self_trade": "buyer and seller are the same account",
    "insufficient_cash": "amount exceeds the account's cash",
    "insufficient_margin": "equity after the withdrawal would be below initial margin",
}


class Engine:
    """The clearing engine. Feed it raw inputs in order with ``apply``."""

    core_name: Final = "python"

    def __init__(self, liquidation_scan: bool = False, rules_version: int = 1) -> None:
        if rules_version not in RULES_VERSIONS:
            raise ValueError(
                f"unknown rules version {rules_version}; this build implements "
                f"{', '.join(map(str, RULES_VERSIONS))}"
            )
        self.ledger = Ledger()
        self.seq = 0  # inputs applied so far; the next input gets seq + 1
        # True: a mark move checks every holder (the slow baseline for benchmarks)
        # instead of asking the liquidation index.
        self.liquidation_scan = liquidation_scan
        # Fixed for the ledger's life (SPEC §9): 1 is §1-§8 alone, 2 adds §9.
        self.rules_version = rules_version
        self._resolve = resolve_accounts if rules_version == 1 else resolve_accounts_v2

    def apply(self, raw: bytes) -> list[OutputEvent]:
        """Apply one raw input (a JSON object's bytes) and return its output events."""
        self.seq += 1
        parsed = decode_input(raw, self.rules_version)
        if type(parsed) is DecodeFailure:
            return [Reject(self.seq, parsed.reason, parsed.detail, **parsed.known)]
        out: list[OutputEvent] = []
        try:
            if type(parsed) is ParsedFill:
                self._fill(parsed, out)
            elif type(parsed) is ParsedOracle:
                self._oracle(parsed, out)
            elif type(parsed) is ParsedBook:
                self._book(parsed)
            elif type(parsed) is ParsedDeposit:
                self._deposit(parsed)
            elif type(parsed) is ParsedWithdraw:
                self._withdraw(parsed, out)
            elif type(parsed) is ParsedFunding:
                self._funding(parsed, out)
            else:
                assert type(parsed) is ParsedMarket or type(parsed) is ParsedMarketV2
                self._market(parsed, out)
        except _Rejected as rejected:
            # Handlers raise only before their first mutation, so state is untouched.
            return [refusal_reject(self.seq, rejected.reason, parsed)]
        self.ledger.assert_balanced()
        return out

    def apply_encoded(self, raw: bytes) -> list[bytes]:
        """``apply``, with the output events as their JSON bytes (as the native core gives
        them): what journals, replays and sinks write."""
        return [_output_encoder.encode(event) for event in self.apply(raw)]

    def apply_many(self, raws: Iterable[bytes]) -> list[OutputEvent]:
        """Apply a batch of inputs in order; the outputs of all of them, in order."""
        out: list[OutputEvent] = []
        for raw in raws:
            out.extend(self.apply(raw))
        return out

    # -- handlers ----------------------------------------------------------------------

    def _market_of(self, market_id: str) -> MarketState:
        market = self.ledger.markets.get(market_id)
        if market is None:
            raise _Rejected("unknown_market")
        return market

    def _market(self, event: ParsedMarket | ParsedMarketV2, out: list[OutputEvent]) -> None:
        ledger = self.ledger
        market = ledger.markets.get(event.market)
        if market is None:
            market = MarketState(
                event.market, event.imr_e8, event.mmr_e8, event.liq_fee_e8, event.max_oracle_move_e8
            )
            ledger.markets[event.market] = market
            _set_v2_parameters(market, event)
            return
        market.imr_e8 = event.imr_e8
        market.mmr_e8 = event.mmr_e8
        market.liq_fee_e8 = event.liq_fee_e8
        market.max_oracle_move_e8 = event.max_oracle_move_e8
        market.held_e8 = None
        _set_v2_parameters(market, event)
        # Thresholds and edges depend on mmr; only accounts not proven safe are checked.
        unsafe = [holder for holder in list(market.holders.values()) if not ledger.reindex(holder)]
        self._resolve(ledger, self.seq, unsafe, None, out)

    def _funding(self, event: ParsedFunding, out: list[OutputEvent]) -> None:
        """SPEC §9.5: every holder pays ``round16(q * m * rate)``; the fee pool takes the
        rounding residual, so cash is conserved; then payers and payees are re-examined."""
        ledger = self.ledger
        market = self._market_of(event.market)
        mark_e8 = market.mark_e8
        paid_e16 = 0
        net_e16 = 0
        changed: list[Account] = []
        if mark_e8 is not None:  # without a mark there are no holders
            for holder in market.holders.values():
                payment_e16 = funding_payment_e16(
                    holder.positions[market.id].qty_e8, mark_e8, event.rate_e8
                )
                if payment_e16:
                    holder.cash_e16 -= payment_e16
                    net_e16 += payment_e16
                    paid_e16 += max(0, payment_e16)
                    changed.append(holder)
        ledger.fee_pool.cash_e16 += net_e16
        out.append(FundingPaid(self.seq, market.id, format_e8(event.rate_e8), format_e16(paid_e16)))
        unsafe = [holder for holder in changed if not ledger.reindex_cash(holder)]
        if unsafe:
            self._resolve(ledger, self.seq, unsafe, None, out)

    def _deposit(self, event: ParsedDeposit) -> None:
        if event.account in _NO_DEPOSIT_OR_TRADE:
            raise _Rejected("reserved_account")
        amount_e16 = event.amount_e8 * CASH_PER_E8
        account = self.ledger.account(event.account)
        self.ledger.move_cash(account, amount_e16)
        self.ledger.net_deposits_e16 += amount_e16
        self.ledger.reindex_cash(account)

    def _withdraw(self, event: ParsedWithdraw, out: list[OutputEvent]) -> None:
        ledger = self.ledger
        if event.account in SYSTEM_ACCOUNTS:
            raise _Rejected("reserved_account")
        account = ledger.accounts.get(event.account)
        amount_e16 = event.amount_e8 * CASH_PER_E8
        if account is None or amount_e16 > account.cash_e16:
            raise _Rejected("insufficient_cash")
        after_e24 = (equity_e16(account, ledger.markets) - amount_e16) * E8
        if after_e24 < initial_requirement_e24(account, ledger.markets):
            raise _Rejected("insufficient_margin")
        ledger.move_cash(account, -amount_e16)
        ledger.net_deposits_e16 -= amount_e16
        ledger.reindex_cash(account)
        out.append(Withdrawal(self.seq, event.account, format_e8(event.amount_e8)))

    def _fill(self, event: ParsedFill, out: list[OutputEvent]) -> None:
        ledger = self.ledger
        market = self._market_of(event.market)
        for side in (event.buyer, event.seller):
            if side in _NO_DEPOSIT_OR_TRADE:
                raise _Rejected("reserved_account")
        if event.buyer == event.seller:
            raise _Rejected("self_trade")
        if event.fill_id in ledger.fill_ids:
            raise _Rejected("duplicate_fill")
        ledger.fill_ids.add(event.fill_id)

        price_e8 = event.price_e8
        qty_e8 = event.qty_e8
        notional_e16 = qty_e8 * price_e8
        buyer = ledger.account(event.buyer)
        seller = ledger.account(event.seller)
        self._trade(buyer, market, qty_e8, price_e8)
        self._trade(seller, market, -qty_e8, price_e8)
        buyer_fee_e16 = event.buyer_fee_e8 * CASH_PER_E8
        seller_fee_e16 = event.seller_fee_e8 * CASH_PER_E8
        ledger.move_cash(buyer, -(notional_e16 + buyer_fee_e16))
        ledger.move_cash(seller, notional_e16 - seller_fee_e16)
        ledger.move_cash(ledger.fee_pool, buyer_fee_e16 + seller_fee_e16)
        mark_moved = not market.oracle_seen and market.mark_e8 != price_e8
        if mark_moved:
            market.mark_e8 = price_e8
        # The index proves most sides safe; the rest get the exact check (SPEC §4).
        checked: list[Account] = []
        if mark_moved and not self.liquidation_scan:
            # Before the first oracle tick a fill moves the mark: like a tick, ask the
            # index which holders it may have made liquidatable (a scan of every holder
            # here cost O(holders) per fill until the first tick arrived).
            if not ledger.reindex(buyer):
                checked.append(buyer)
            if not ledger.reindex(seller):
                checked.append(seller)
            liquidatable, crossed = market.liquidation_candidates(price_e8, ledger.by_handle)
            checked.extend(liquidatable)
            checked.extend(account for account in crossed if not ledger.reindex(account))
        elif mark_moved:
            # The full-scan baseline: check every holder exactly, then re-index them all.
            ledger.reindex(buyer)
            ledger.reindex(seller)
            checked.extend((buyer, seller))  # a side that went flat is no longer a holder
            checked.extend(market.holders.values())
        else:
            if not ledger.reindex_fill(buyer, market):
                checked.append(buyer)
            if not ledger.reindex_fill(seller, market):
                checked.append(seller)
        if checked:
            self._resolve(ledger, self.seq, checked, market.id, out)
        if mark_moved and self.liquidation_scan:
            self._rebuild_bands(market)

    def _trade(self, account: Account, market: MarketState, dq_e8: int, price_e8: int) -> None:
        """Move a position by ``dq_e8`` at ``price_e8``, keeping K per SPEC §2 and the
        market's holders exact. (Ledger.set_position's work, inlined: the fill path.)"""
        positions = account.positions
        market_id = market.id
        position = positions.get(market_id)
        if position is None:  # opening from flat; K of system accounts is never read
            self.ledger.move_qty(market, 0, dq_e8)
            positions[market_id] = Position(dq_e8, 0 if account.is_system else -dq_e8 * price_e8)
            market.holders[account.id] = account
            return
        old_qty = position.qty_e8
        new_qty = old_qty + dq_e8
        self.ledger.move_qty(market, old_qty, new_qty)
        if new_qty == 0:
            del positions[market_id]
            del market.holders[account.id]
            return
        if account.is_system:
            position.k_e16 = 0
        elif (old_qty > 0) != (new_qty > 0):
            position.k_e16 = -new_qty * price_e8  # flipped: only the opening part counts
        else:
            position.k_e16 -= dq_e8 * price_e8
        position.qty_e8 = new_qty

    def _oracle(self, event: ParsedOracle, out: list[OutputEvent]) -> None:
        market = self._market_of(event.market)
        price_e8 = event.price_e8
        move_e8 = market.max_oracle_move_e8
        mark_e8 = market.mark_e8
        if move_e8 is not None and mark_e8 is not None:
            held_e8 = market.held_e8
            confirmed = held_e8 is not None and abs(price_e8 - held_e8) * E8 <= move_e8 * held_e8
            if not confirmed and abs(price_e8 - mark_e8) * E8 > move_e8 * mark_e8:
                market.held_e8 = price_e8
                out.append(OracleHeld(self.seq, market.id, format_e8(price_e8)))
                return
        if self.rules_version != 1 and mark_e8 is not None:
            # SPEC §9.3: every accepted tick from an existing mark, before liquidations.
            market.vol_e16 = next_volatility_e16(
                market.vol_e16, mark_e8, price_e8, market.vol_lambda_e8
            )
        market.mark_e8 = price_e8
        market.held_e8 = None
        market.oracle_seen = True
        if self.liquidation_scan:
            # The full scan: the baseline the index is benchmarked and tested against.
            self._resolve(self.ledger, self.seq, list(market.holders.values()), None, out)
            self._rebuild_bands(market)
            return
        ledger = self.ledger
        liquidatable, crossed = market.liquidation_candidates(price_e8, ledger.by_handle)
        # An account whose edge the mark crossed gets new edges; if none can be found it is
        # liquidatable (E < MM) and joins the exact ones.
        unsafe = [account for account in crossed if not ledger.reindex(account)]
        if liquidatable or unsafe:
            self._resolve(ledger, self.seq, liquidatable + unsafe, None, out)

    def _rebuild_bands(self, market: MarketState) -> None:
        """Re-centre the safety bands of every multi-market holder after a mark move."""
        for holder in list(market.holders.values()):
            if len(holder.positions) > 1:
                self.ledger.reindex(holder)

    def _book(self, event: ParsedBook) -> None:
        self._market_of(event.market).book.replace(event.bids, event.asks)

    # -- views -------------------------------------------------------------------------

    def state(self) -> dict[str, object]:
        """The SPEC §8 state: every account (system ones included) and every market."""
        ledger = self.ledger
        accounts = {}
        for account_id in sorted(ledger.accounts):
            account = ledger.accounts[account_id]
            accounts[account_id] = {
                "cash": format_e16(account.cash_e16),
                "positions": {
                    market_id: format_e8(account.positions[market_id].qty_e8)
                    for market_id in sorted(account.positions)
                },
            }
        markets = {
            market_id: {
                "mark": None
                if ledger.markets[market_id].mark_e8 is None
                else format_e8(ledger.markets[market_id].mark_e8)  # type: ignore[arg-type]
            }
            for market_id in sorted(ledger.markets)
        }
        return {"accounts": accounts, "markets": markets}

    def state_json(self) -> bytes:
        """The SPEC §8 state as canonical JSON bytes (keys in code-point order)."""
        return _state_encoder.encode(self.state())

    def check_invariants(self) -> None:
        """Raise ``InvariantViolation`` if the ledger does not balance (or its index is off)."""
        self.ledger.check_invariants()
        self.ledger.check_index()

    def journal_run(
        self, payloads: list[bytes], sources: list[str], start: int, prev_hash: bytes
    ) -> JournalRun:
        """The reference core batches nothing natively: it hands ``payloads[start]`` back
        at once (deferred), and the sequencer applies it on the per-input path."""
        return JournalRun(start, None, [], prev_hash, [], b"")

    def finish_refusal(self, raw: bytes, code: int) -> list[bytes]:
        """Never called: ``journal_run`` defers every input and refuses none."""
        raise AssertionError("the Python core's journal_run refuses no input")

    def dump_state(self) -> bytes:
        """The snapshot document (``persist``), byte-identical to the native core's."""
        return dump_ledger(self.ledger, self.seq, self.rules_version)

    @classmethod
    def load_state(cls, data: bytes, liquidation_scan: bool = False) -> Engine:
        """Rebuild from snapshot bytes (either core's); StateFormatError if unreadable."""
        ledger, seq, rules_version = load_ledger(data)
        engine = cls(liquidation_scan, rules_version)
        engine.ledger, engine.seq = ledger, seq
        return engine

    def account_count(self) -> int:
        """Accounts in the ledger, system accounts included (O(1))."""
        return len(self.ledger.accounts)

    def summary(self) -> LedgerSummary:
        """Counts for tools and logs, from one pass over the ledger."""
        return ledger_summary(self.ledger)

    def figures(self) -> LedgerFigures:
        """The ledger figures the metrics export, from one pass over the ledger."""
        return ledger_figures(self.ledger)

    def account_view(self, account: str) -> bytes | None:
        """One account for the read API (``_views``); None if unknown."""
        return _views.account_view(self.ledger, account)

    def market_view(self, market: str, depth: int) -> bytes | None:
        """One market for the read API (``_views``); None if unknown."""
        return _views.market_view(self.ledger, market, depth, self.rules_version)

    def rankings(self, limit: int) -> bytes:
        """The read API's ranked lists (``_views``), ``limit`` entries each at most."""
        return _views.rankings(self.ledger, limit)


def _set_v2_parameters(market: MarketState, event: ParsedMarket | ParsedMarketV2) -> None:
    """Replace SPEC §9's market fields (a version-1 input leaves the defaults, which version
    1 never reads). The volatility estimate is kept: it describes the prices, not the
    parameters."""
    if type(event) is ParsedMarketV2:
        market.liq_step_e8 = event.liq_step_e8
        market.adl = event.adl
        market.fund_share_e8 = event.fund_share_e8
        market.vol_tiers = event.vol_tiers
        market.vol_lambda_e8 = event.vol_lambda_e8


def _known(parsed: object) -> dict[str, str]:
    known: dict[str, str] = {}
    for key in ("fill_id", "account", "market"):
        value = getattr(parsed, key, None)
        if type(value) is str:
            known[key] = value[:200]
    return known


def iter_jsonl_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) for every input line of a .jsonl file (SPEC §8).

    Lines of only spaces, tabs or carriage returns are skipped and not counted as inputs.
    """
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        if line.strip(b" \t\r"):
            yield line_no, line


_state_encoder = msgspec.json.Encoder()
_output_encoder = msgspec.json.Encoder()
