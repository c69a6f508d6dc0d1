"""Replay a journal through a fresh engine and collect what the audit report shows.

Every record is applied to an empty engine (snapshots are not trusted here) and its
re-derived outputs are compared byte for byte with the ones the journal recorded. Along
the way the collector keeps:

* every waterfall event (liquidation, fund draw, clawback, bad debt), every held oracle
  tick and every fund top-up, exactly (integers in e8/e16 units);
* a sampled time series of the insurance fund, open interest and marks: one sample every
  ``step`` inputs (so a journal of any length gives about ``MAX_REGULAR_SAMPLES``), plus
  one after each input that liquidated someone, no closer than ``step / 4`` to the
  previous one, so a crash a few inputs long is still visible.

Open interest (the sum of long positions per market) is the engine's own running figure
(``MarketState.long_oi_e8``, exact after every input and checked against a scan of the
holders by ``check_invariants`` at the end): the collector only samples it.

Money is exact here; floats appear only in ``_figures`` for plotting.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import msgspec

from clearing.engine import Engine, OutputEvent, state_sha256
from clearing.engine.events import (
    BadDebt,
    Clawback,
    FundDraw,
    Liquidation,
    OracleHeld,
    Reject,
    decode_output,
)
from clearing.engine.margin import equity_e16
from clearing.engine.state import INSURANCE_FUND, Ledger
from clearing.journal import LocalJournal, Record
from clearing.report._collect_v2 import RulesV2Collector, RulesV2Data
from clearing.report._episode import DrawdownTracker, LossEpisode
from clearing.sequencer import ReplayObserver, replay

__all__ = [
    "INPUT_TYPES",
    "MAX_REGULAR_SAMPLES",
    "BadDebtRow",
    "ClawbackRow",
    "FundDrawRow",
    "HeldTickRow",
    "LiquidationRow",
    "ReportData",
    "TopUpRow",
    "collect_journal",
    "long_open_interest_e8",
    "parse_scaled",
]

# The SPEC §3 input types and version 2's ``funding`` (§9.5); inputs counted under any
# other name are "unknown".
INPUT_TYPES: Final = frozenset(
    ("market", "deposit", "withdraw", "fill", "oracle", "book", "funding")
)
# About this many evenly spaced samples whatever the journal's length: enough for a
# smooth line at report width, and cheap to plot for a journal of millions of inputs.
MAX_REGULAR_SAMPLES: Final = 2_000


def parse_scaled(text: str, places: int) -> int:
    """An output decimal (``"-12.5"``) as an integer count of 10**-places units, exactly."""
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    if len(frac) > places:
        raise ValueError(f"{text!r} has more than {places} decimals")
    value = int(whole) * 10**places + (int(frac.ljust(places, "0")) if frac else 0)
    return -value if negative else value


class LiquidationRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str
    market: str
    qty_e8: int
    proceeds_e16: int
    mark_e8: int
    fee_e16: int

    @property
    def notional_e16(self) -> int:
        """|qty| x mark: the size of the position closed, at the mark."""
        return abs(self.qty_e8) * self.mark_e8


class FundDrawRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str
    amount_e16: int


class ClawbackRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str
    cause: str
    amount_e16: int


class BadDebtRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str
    amount_e16: int


class HeldTickRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    market: str
    price_e8: int


class TopUpRow(msgspec.Struct, frozen=True, gc=False):
    """A deposit to the insurance fund (the SPEC lets nobody withdraw from it)."""

    seq: int
    ts_ns: int | None
    amount_e16: int
    # The fund's equity just after it (before = after - amount: a deposit is cash only).
    fund_equity_after_e16: int


@dataclass
class ReportData:
    """Everything the report shows, exact. Sample columns are parallel lists."""

    journal_dir: str
    journal_head_hex: str = ""
    inputs: int = 0
    inputs_by_type: Counter[str] = field(default_factory=Counter)
    rejects_by_reason: Counter[str] = field(default_factory=Counter)
    # Records whose recorded outputs were compared with the re-derived ones, and records
    # that recorded none although the engine produced some (nothing to compare with).
    verified_records: int = 0
    unrecorded_outputs: int = 0
    markets: list[str] = field(default_factory=list)
    sample_seq: list[int] = field(default_factory=list)
    sample_ts_ns: list[int | None] = field(default_factory=list)
    sample_fund_equity_e16: list[int] = field(default_factory=list)
    sample_fund_cash_e16: list[int] = field(default_factory=list)
    # market -> long open interest (e8) / mark (e8, None before the first) per sample
    sample_long_oi_e8: dict[str, list[int]] = field(default_factory=dict)
    sample_mark_e8: dict[str, list[int | None]] = field(default_factory=dict)
    liquidations: list[LiquidationRow] = field(default_factory=list)
    fund_draws: list[FundDrawRow] = field(default_factory=list)
    clawbacks: list[ClawbackRow] = field(default_factory=list)
    bad_debts: list[BadDebtRow] = field(default_factory=list)
    held_ticks: list[HeldTickRow] = field(default_factory=list)
    fund_top_ups: list[TopUpRow] = field(default_factory=list)
    # Final state
    accounts: int = 0
    net_deposits_e16: int = 0
    fund_equity_e16: int = 0
    fund_cash_e16: int = 0
    fee_pool_e16: int = 0
    bad_debt_account_e16: int = 0
    long_oi_e8: dict[str, int] = field(default_factory=dict)
    marks_e8: dict[str, int | None] = field(default_factory=dict)
    state_sha256: str = ""
    invariants_ok: bool = False
    # The journal's clearing rules (SPEC §9 head), and what only version 2 has.
    rules_version: int = 1
    rules_v2: RulesV2Data | None = None
    # The largest loss of the fund's equity, net of top-ups, over one horizon (``_episode``):
    # where the back-test looks; None unless asked for (``episode_horizon_ns``).
    fund_loss_episode: LossEpisode | None = None

    @property
    def has_ts(self) -> bool:
        """Whether the time axis is the inputs' ``ts`` (else it is the seq)."""
        return any(ts is not None for ts in self.sample_ts_ns)

    @property
    def open_interest_notional_e16(self) -> int:
        """Sum over markets of long open interest x mark, at the end."""
        return sum(self.long_oi_e8[m] * (self.marks_e8[m] or 0) for m in self.long_oi_e8)


class _Peek(msgspec.Struct):
    """The few input fields the collector needs; every other field is skipped."""

    type: object = None
    ts: object = None
    account: object = None


_peek_decoder = msgspec.json.Decoder(_Peek)


def _peek(raw: bytes) -> _Peek | None:
    try:
        return _peek_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def long_open_interest_e8(ledger: Ledger) -> dict[str, int]:
    """Sum of long positions per market, by a full scan (system accounts included)."""
    totals: dict[str, int] = {}
    for market_id, market in ledger.markets.items():
        total = 0
        for holder in market.holders.values():
            qty_e8 = holder.positions[market_id].qty_e8
            if qty_e8 > 0:
                total += qty_e8
        totals[market_id] = total
    return totals


class _Pending(NamedTuple):
    """What ``_Collector.before`` noted about the input being applied."""

    peek: _Peek | None
    input_type: str


class _Collector(ReplayObserver):
    """Collects the report's data as the replay loop applies each record to a Python
    engine (whose ledger it reads)."""

    def __init__(
        self,
        data: ReportData,
        total_inputs: int,
        max_samples: int,
        rules_version: int = 1,
        episode_horizon_ns: int | None = None,
    ) -> None:
        self.data = data
        self.engine = Engine(rules_version=rules_version)  # the journal's rules (SPEC §9)
        self.step = max(1, -(-total_inputs // max_samples))
        self.min_event_gap = max(1, self.step // 4)
        self.last_sample_seq = 0
        self.ts_ns: int | None = None
        self.pending = _Pending(None, "")
        self.drawdown = None if episode_horizon_ns is None else DrawdownTracker(episode_horizon_ns)
        self.fund_cash_before_e16: int | None = None  # around a deposit or withdrawal of the fund
        data.rules_version = rules_version
        self.rules_v2: RulesV2Collector | None = None
        if rules_version >= 2:
            self.rules_v2 = RulesV2Collector()
            data.rules_v2 = self.rules_v2.data

    def before(self, record: Record) -> bool:
        """Note what the record's input is and the positions it may move, before it is
        applied."""
        data = self.data
        peek = _peek(record.payload)
        if peek is not None and type(peek.ts) is int:
            self.ts_ns = peek.ts
        if peek is None:
            input_type = "malformed"
        else:
            # Anything else is folded into one name: a hostile journal cannot grow the table.
            input_type = peek.type if peek.type in INPUT_TYPES else "unknown"
        data.inputs_by_type[input_type] += 1
        paid_in = input_type in ("deposit", "withdraw")
        if (
            paid_in
            and self.drawdown is not None
            and peek is not None
            and peek.account == INSURANCE_FUND
        ):
            self.fund_cash_before_e16 = self.engine.ledger.fund.cash_e16
        self.pending = _Pending(peek, input_type)
        return True

    def after(self, record: Record, events: list[bytes], derived: bytes) -> None:
        """Collect what the record did (the replay loop has checked its outputs)."""
        data = self.data
        seq = record.seq
        peek, input_type = self.pending
        if record.outputs:
            data.verified_records += 1
        elif events:
            data.unrecorded_outputs += 1
        liquidated = False
        if events:
            outputs = [decode_output(event) for event in events]
            liquidated = self._events(seq, outputs)
            if self.rules_v2 is not None:
                self.rules_v2.observe(seq, self.ts_ns, outputs, self.engine.ledger)
        elif input_type == "deposit" and peek is not None and peek.account == INSURANCE_FUND:
            amount = msgspec.json.decode(record.payload)["amount"]
            amount_e16 = parse_scaled(str(amount), 8) * 10**8
            after_e16 = _fund_equity_e16(self.engine.ledger)
            data.fund_top_ups.append(TopUpRow(seq, self.ts_ns, amount_e16, after_e16))
        self._track_fund(seq)
        since = seq - self.last_sample_seq
        if since >= self.step or (liquidated and since >= self.min_event_gap):
            self.sample(seq)

    def _track_fund(self, seq: int) -> None:
        """Feed the loss-episode tracker: the fund's equity, and what was paid in."""
        if self.drawdown is None:
            return
        fund = self.engine.ledger.fund
        if self.fund_cash_before_e16 is not None:
            self.drawdown.pay_in(fund.cash_e16 - self.fund_cash_before_e16)
            self.fund_cash_before_e16 = None
        self.drawdown.observe(seq, self.ts_ns, _fund_equity_e16(self.engine.ledger))

    def _events(self, seq: int, outputs: list[OutputEvent]) -> bool:
        data = self.data
        ts_ns = self.ts_ns
        liquidated = False
        for event in outputs:
            kind = type(event)
            if kind is Liquidation:
                liquidated = True
                row = LiquidationRow(
                    seq,
                    ts_ns,
                    event.account,
                    event.market,
                    parse_scaled(event.qty, 8),
                    parse_scaled(event.proceeds, 16),
                    parse_scaled(event.mark, 8),
                    parse_scaled(event.fee, 16),
                )
                data.liquidations.append(row)
            elif kind is FundDraw:
                data.fund_draws.append(
                    FundDrawRow(seq, ts_ns, event.account, parse_scaled(event.amount, 16))
                )
            elif kind is Clawback:
                data.clawbacks.append(
                    ClawbackRow(
                        seq, ts_ns, event.account, event.cause, parse_scaled(event.amount, 16)
                    )
                )
            elif kind is BadDebt:
                data.bad_debts.append(
                    BadDebtRow(seq, ts_ns, event.account, parse_scaled(event.amount, 16))
                )
            elif kind is OracleHeld:
                data.held_ticks.append(
                    HeldTickRow(seq, ts_ns, event.market, parse_scaled(event.price, 8))
                )
            elif kind is Reject:
                data.rejects_by_reason[event.reason] += 1
        return liquidated

    def sample(self, seq: int) -> None:
        data = self.data
        ledger = self.engine.ledger
        markets = ledger.markets
        for market_id in markets:
            if market_id not in data.sample_long_oi_e8:
                # A market created after the first samples: zero and no mark before it.
                data.markets.append(market_id)
                data.sample_long_oi_e8[market_id] = [0] * len(data.sample_seq)
                data.sample_mark_e8[market_id] = [None] * len(data.sample_seq)
        self.last_sample_seq = seq
        data.sample_seq.append(seq)
        data.sample_ts_ns.append(self.ts_ns)
        data.sample_fund_equity_e16.append(_fund_equity_e16(ledger))
        data.sample_fund_cash_e16.append(ledger.fund.cash_e16)
        for market_id in data.markets:
            data.sample_long_oi_e8[market_id].append(markets[market_id].long_oi_e8)
            data.sample_mark_e8[market_id].append(markets[market_id].mark_e8)
        if self.rules_v2 is not None:
            self.rules_v2.sample(data.markets, len(data.sample_seq) - 1, ledger)

    def finish(self, head_hash: bytes) -> None:
        data = self.data
        engine = self.engine
        ledger = engine.ledger
        if self.last_sample_seq != engine.seq:
            self.sample(engine.seq)
        engine.check_invariants()  # the running open interest against a scan, too
        data.markets.sort()
        data.invariants_ok = True
        data.inputs = engine.seq
        data.journal_head_hex = head_hash.hex()
        data.accounts = sum(1 for a in ledger.accounts.values() if not a.is_system)
        data.net_deposits_e16 = ledger.net_deposits_e16
        data.fund_equity_e16 = _fund_equity_e16(ledger)
        data.fund_cash_e16 = ledger.fund.cash_e16
        data.fee_pool_e16 = ledger.fee_pool.cash_e16
        data.bad_debt_account_e16 = ledger.bad_debt.cash_e16
        data.long_oi_e8 = {m: market.long_oi_e8 for m, market in ledger.markets.items()}
        data.marks_e8 = {m: ledger.markets[m].mark_e8 for m in sorted(ledger.markets)}
        data.state_sha256 = state_sha256(engine)
        if self.drawdown is not None:
            data.fund_loss_episode = self.drawdown.finish()


def _fund_equity_e16(ledger: Ledger) -> int:
    # The fund holds positions only in markets with a mark (a position implies a fill).
    return equity_e16(ledger.fund, ledger.markets)


def collect_journal(
    journal_dir: str,
    progress: Callable[[int, int], None] | None = None,
    max_samples: int = MAX_REGULAR_SAMPLES,
    episode_horizon_ns: int | None = None,
) -> ReportData:
    """Replay the journal in ``journal_dir`` from seq 1 and collect the report's data.

    Raises ``OutputDivergence`` when a record's re-derived outputs differ from the ones
    it recorded, and the journal's own errors when it cannot be read.
    ``progress(done, total)`` is called every few thousand inputs; ``max_samples`` sets
    the spacing of the regular samples (every input when it is the journal's length);
    ``episode_horizon_ns``: find the fund's largest loss over that horizon (``_episode``).
    """
    with LocalJournal(journal_dir, readonly=True) as journal:
        total = journal.last_seq
        head_hash = journal.head_hash
        data = ReportData(journal_dir=journal_dir)
        collector = _Collector(data, total, max_samples, journal.rules_version, episode_horizon_ns)
        replay(
            journal,
            collector.engine,
            until_seq=total,
            observer=collector,
            progress=None if progress is None else lambda seq: progress(seq, total),
        )
    collector.finish(head_hash)
    if progress is not None:
        progress(total, total)
    return data
