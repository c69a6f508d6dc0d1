"""Prometheus metrics of the clearing daemon, in a registry of their own.

``Metrics`` owns a private ``CollectorRegistry`` (never the global one), so tests and a
daemon can hold several side by side and nothing registers behind their back. The
daemon feeds it from three places:

* per applied batch: ``observe_batch`` (input counts by topic and type, output events,
  rejects, liquidations and the waterfall amounts, accepted oracle ticks) and
  ``observe_applied`` (lag in time), and the latency histograms around each step;
* every few seconds: ``update_ledger`` (the gauges computed from the engine's state) and
  ``set_partition_lag`` per assigned input partition;
* on state changes: ``set_ready``, ``set_invariant_ok``, ``set_journal_seq``,
  ``set_snapshot_time``.

Latency histograms are plain ``prometheus_client.Histogram`` attributes. A coroutine
times an awaited step with ``with metrics.txn_commit_seconds.time(): await commit()``:
the context manager measures wall-clock time, awaits included.

Money and quantities are exact integers in the engine; they become floats here, at the
edge, and only for display (``_quote`` = units of the quote currency, ``_base`` = units
of the traded asset). No metric has an account id as a label: label sets are bounded by
topics, partitions, markets, input types and reject reasons, and input types and reject
reasons outside the known sets are folded into one value.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import Counter as _Tally
from collections.abc import Iterable, Sequence
from decimal import Decimal
from importlib import metadata
from typing import Any, Final

import msgspec
from msgspec import UnsetType
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    ProcessCollector,
)

from clearing.engine import (
    INPUT_KINDS,
    REJECT_REASONS,
    EngineCore,
    MarketFigures,
    OutputEvent,
)
from clearing.engine.events import (
    Adl,
    BadDebt,
    Clawback,
    FundDraw,
    FundingPaid,
    Liquidation,
    OracleHeld,
    Reject,
)
from clearing.engine.money import E8, E16
from clearing.engine.state import SYSTEM_ACCOUNTS
from clearing.ops.fund_metrics import FundRiskMetrics

__all__ = [
    "INPUT_TYPES",
    "LATENCY_BUCKETS_SECONDS",
    "Metrics",
    "input_type_of",
]

# Sub-millisecond resolution at the bottom (one engine apply of a small batch is tens of
# microseconds), up to the 5 s a stuck fsync or transaction commit can take.
LATENCY_BUCKETS_SECONDS: Final = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
# Records per engine batch: from one record to the largest poll a consumer returns.
BATCH_SIZE_BUCKETS: Final = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

# The SPEC §3 input types. Anything else counts as "unknown" and undecodable bytes as
# "malformed", so a hostile producer cannot blow up the label set.
INPUT_TYPES: Final = frozenset(
    ("market", "deposit", "withdraw", "fill", "oracle", "book", "funding")
)
UNKNOWN_TYPE: Final = "unknown"
MALFORMED_TYPE: Final = "malformed"
_REJECT_REASONS: Final = frozenset(REJECT_REASONS)

_ORACLE_KIND: Final = INPUT_KINDS.index("oracle")


class _Peek(msgspec.Struct):
    """The few fields metrics need from a raw input; every other field is skipped."""

    type: Any = None
    market: Any = None
    ts: Any = None


_peek_decoder = msgspec.json.Decoder(_Peek)


def _peek(raw: bytes) -> _Peek | None:
    try:
        return _peek_decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return None


def input_type_of(raw: bytes) -> str:
    """The input's ``type`` as a bounded label value: an SPEC type, unknown or malformed."""
    peek = _peek(raw)
    if peek is None:
        return MALFORMED_TYPE
    return peek.type if peek.type in INPUT_TYPES else UNKNOWN_TYPE


def _version() -> str:
    try:
        return metadata.version("clearing")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """Every metric the daemon exports, and the methods that keep them current.

    Not thread-safe as a whole: call it from the thread that applies inputs to the engine
    (the event loop), so ``update_ledger`` never reads a ledger in the middle of a batch.
    """

    def __init__(
        self,
        *,
        process_collectors: bool = True,
        now_ns: int | None = None,
    ) -> None:
        """``now_ns`` is when the process started (default: the wall clock now)."""
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        self._started_ns = time.time_ns() if now_ns is None else now_ns
        # Accepted oracle ticks: market -> ts_ns (the input's ts, else the apply time).
        self._oracle_ts_ns: dict[str, int] = {}
        self._snapshot_ns: int | None = None
        # (seq, account) of the last liquidation seen: one liquidated account emits one
        # liquidation event per position, consecutively (SPEC §6).
        self._last_liquidation: tuple[int, str] | None = None
        # (seq, account, market) of the last liquidation event: a step's events come in
        # market-id order, so a market id that does not increase starts the next step.
        self._last_step_event: tuple[int, str, str] | None = None
        self.ready = False
        self.not_ready_reason = "starting"
        self.role = "active"  # set_role: "active" or "standby"
        self._following = False  # set_following: a standby serving reads
        self.standby_lag_s = 0.0  # the last set_standby_lag seconds (read-API headers)
        self.fund_risk: FundRiskMetrics | None = None  # enable_fund_risk()

        if process_collectors:
            ProcessCollector(registry=reg)
            GCCollector(registry=reg)
        self.build_info = Gauge(
            "clearing_build_info",
            "Always 1; the version label says what runs.",
            ["version"],
            registry=reg,
        )
        self.build_info.labels(_version()).set(1)

        # -- throughput ------------------------------------------------------------------
        self.input_records = Counter(
            "clearing_input_records",
            "Input records applied to the engine, by source topic and input type.",
            ["topic", "type"],
            registry=reg,
        )
        self.output_events = Counter(
            "clearing_output_events", "Output events emitted, by type.", ["type"], registry=reg
        )
        self.rejects = Counter(
            "clearing_rejects", "Rejected inputs, by SPEC reason code.", ["reason"], registry=reg
        )
        self.dlq_records = Counter(
            "clearing_dlq_records",
            "Records sent to the dead-letter topic, by source topic.",
            ["topic"],
            registry=reg,
        )

        # -- latency ---------------------------------------------------------------------
        def histogram(name: str, doc: str) -> Histogram:
            return Histogram(name, doc, buckets=LATENCY_BUCKETS_SECONDS, registry=reg)

        self.engine_apply_seconds = histogram(
            "clearing_engine_apply_seconds", "Engine apply time per batch of inputs."
        )
        self.engine_batch_records = Histogram(
            "clearing_engine_batch_records",
            "Input records per engine batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=reg,
        )
        self.txn_commit_seconds = histogram(
            "clearing_transaction_commit_seconds",
            "Kafka transaction commit time (outputs and input offsets, atomically).",
        )
        self.journal_write_seconds = histogram(
            "clearing_journal_write_seconds", "Journal append time per batch (before fsync)."
        )
        self.journal_fsync_seconds = histogram(
            "clearing_journal_fsync_seconds", "Journal fsync time per batch."
        )
        self.snapshot_seconds = histogram(
            "clearing_snapshot_duration_seconds", "Time to write one snapshot, fsync included."
        )
        self.ledger_update_seconds = Gauge(
            "clearing_ledger_metrics_update_seconds",
            "How long the last update_ledger pass took (it runs on the event loop).",
            registry=reg,
        )

        # -- lag -------------------------------------------------------------------------
        self.consumer_lag_offsets = Gauge(
            "clearing_consumer_lag_offsets",
            "Records behind the end of each assigned input partition (high watermark minus "
            "next offset to apply).",
            ["topic", "partition"],
            registry=reg,
        )
        self.input_lag_seconds = Gauge(
            "clearing_input_lag_seconds",
            "Wall clock minus the timestamp of the last applied record, measured when it was "
            "applied (it does not grow while the input is idle; 0 on clock skew).",
            registry=reg,
        )
        self.last_applied_record_ts_seconds = Gauge(
            "clearing_last_applied_record_timestamp_seconds",
            "Timestamp (Unix seconds) of the last applied input record.",
            registry=reg,
        )
        self.engine_seq = Gauge(
            "clearing_engine_seq", "Inputs applied by the engine so far (its seq).", registry=reg
        )
        self.journal_last_seq = Gauge(
            "clearing_journal_last_seq",
            "Seq of the last record written to the journal.",
            registry=reg,
        )
        self.snapshot_age_seconds = Gauge(
            "clearing_snapshot_age_seconds",
            "Seconds since the last snapshot was written or loaded (since process start if "
            "none yet).",
            registry=reg,
        )

        # -- ledger ----------------------------------------------------------------------
        self.fund_cash_quote = Gauge(
            "clearing_insurance_fund_cash_quote", "Insurance fund cash.", registry=reg
        )
        self.fund_equity_quote = Gauge(
            "clearing_insurance_fund_equity_quote",
            "Insurance fund equity: cash plus its positions at mark.",
            registry=reg,
        )
        self.fee_pool_cash_quote = Gauge(
            "clearing_fee_pool_cash_quote", "Fee pool cash (venue fee revenue).", registry=reg
        )
        self.bad_debt_unrecovered_quote = Gauge(
            "clearing_bad_debt_unrecovered_quote",
            "Unrecovered losses held by the bad-debt account (minus its cash).",
            registry=reg,
        )
        self.open_interest_base = Gauge(
            "clearing_open_interest_base",
            "Open interest: sum of long quantities, system accounts included.",
            ["market"],
            registry=reg,
        )
        self.open_interest_notional_quote = Gauge(
            "clearing_open_interest_notional_quote",
            "Open interest times mark price.",
            ["market"],
            registry=reg,
        )
        self.fund_to_oi_ratio = Gauge(
            "clearing_fund_to_open_interest_ratio",
            "Insurance fund equity / total open interest notional (NaN with no open "
            "interest). The headline safety indicator.",
            registry=reg,
        )
        self.mark_price_quote = Gauge(
            "clearing_mark_price_quote",
            "Mark price (NaN before the first one).",
            ["market"],
            registry=reg,
        )
        self.oracle_age_seconds = Gauge(
            "clearing_oracle_age_seconds",
            "Seconds since the last accepted oracle tick (by its ts; since process start if "
            "none seen).",
            ["market"],
            registry=reg,
        )
        self.oracle_held = Gauge(
            "clearing_oracle_held",
            "1 while the market's oracle guard holds back a tick, else 0.",
            ["market"],
            registry=reg,
        )
        self.oracle_held_ticks = Counter(
            "clearing_oracle_held_ticks",
            "Oracle ticks held back by the guard.",
            ["market"],
            registry=reg,
        )
        self.accounts = Gauge(
            "clearing_accounts", "Non-system accounts in the ledger.", registry=reg
        )
        self.accounts_with_positions = Gauge(
            "clearing_accounts_with_positions",
            "Non-system accounts holding at least one position.",
            registry=reg,
        )
        self.accounts_below_im = Gauge(
            "clearing_accounts_below_initial_margin",
            "Non-system accounts with equity below initial margin (every one checked).",
            registry=reg,
        )
        self.margin_scan_accounts = Gauge(
            "clearing_margin_scan_accounts",
            "Accounts examined by the last accounts-below-IM scan.",
            registry=reg,
        )
        self.liquidated_accounts = Counter(
            "clearing_liquidated_accounts",
            "Accounts liquidated (positions closed out).",
            registry=reg,
        )
        self.liquidations = Counter(
            "clearing_liquidations",
            "Positions closed out by liquidation.",
            ["market"],
            registry=reg,
        )
        self.liquidation_fee_quote = Counter(
            "clearing_liquidation_fee_quote",
            "Liquidation fees charged to liquidated accounts (the fund's and the pool's).",
            registry=reg,
        )
        self.fund_draws = Counter("clearing_fund_draws", "Insurance fund draws.", registry=reg)
        self.fund_draw_quote = Counter(
            "clearing_fund_draw_quote", "Amount drawn from the insurance fund.", registry=reg
        )
        self.clawbacks = Counter(
            "clearing_clawbacks", "Clawback debits (one per debited account).", registry=reg
        )
        self.clawback_quote = Counter(
            "clearing_clawback_quote",
            "Amount clawed back from profitable accounts.",
            registry=reg,
        )
        self.bad_debts = Counter("clearing_bad_debts", "Bad debt events.", registry=reg)
        self.bad_debt_quote = Counter(
            "clearing_bad_debt_quote", "Amount moved to bad debt.", registry=reg
        )

        self._init_rules_v2_metrics(reg)

        # -- health ----------------------------------------------------------------------
        self.invariant_violation = Gauge(
            "clearing_invariant_violation",
            "0 while the ledger balances (SPEC §2 invariants), 1 once a check failed.",
            registry=reg,
        )
        self.ready_gauge = Gauge(
            "clearing_ready",
            "1 once recovery has caught up and the daemon serves, else 0.",
            registry=reg,
        )
        # -- active / standby (docs/operations.md, "Standby") ----------------------------
        self.active = Gauge(
            "clearing_active",
            "1 while this process is the ledger's active one (writes the journal), 0 "
            "while it is a standby (follows the journal).",
            registry=reg,
        )
        self.standby_lag_offsets = Gauge(
            "clearing_standby_lag_offsets",
            "Standby only: journal topic offsets committed but not applied yet "
            "(records in blocks and transaction markers; 0 when caught up).",
            registry=reg,
        )
        self.standby_lag_seconds = Gauge(
            "clearing_standby_lag_seconds",
            "Standby only: age of the newest applied journal message while behind, 0 when "
            "caught up with the journal's end.",
            registry=reg,
        )
        self.standby_in_sync = Gauge(
            "clearing_standby_in_sync",
            "Standby only: 1 while following the journal within daemon.standby_sync_s.",
            registry=reg,
        )
        self.failovers = Counter(
            "clearing_failovers",
            "Times this process was promoted from standby to active.",
            registry=reg,
        )
        self.set_role("active")
        # The zero-valued counters exist from the start, so rate() sees their first step.
        for reason in REJECT_REASONS:
            self.rejects.labels(reason)

    def _init_rules_v2_metrics(self, reg: CollectorRegistry) -> None:
        """The metrics of rules version 2 (SPEC §9); a version-1 ledger leaves the
        counters at 0 and the gauges at version 1's values (volatility 0, share 1)."""
        self.rules_version = Gauge(
            "clearing_rules_version",
            "The clearing rules version of the ledger (SPEC §9 head).",
            registry=reg,
        )
        self.liquidation_steps = Counter(
            "clearing_liquidation_steps",
            "Liquidation steps: one per liquidated account under version 1; under version "
            "2 a partial step (liq_step < 1) and any later step of the same account count "
            "again.",
            registry=reg,
        )
        self.liquidation_fund_fee_quote = Counter(
            "clearing_liquidation_fund_fee_quote",
            "The insurance fund's part of liquidation fees, by market (all of it under version 1).",
            ["market"],
            registry=reg,
        )
        self.liquidation_pool_fee_quote = Counter(
            "clearing_liquidation_pool_fee_quote",
            "The fee pool's part of liquidation fees, by market (volatility-driven split, "
            "SPEC §9.3; none under version 1).",
            ["market"],
            registry=reg,
        )
        self.adl = Counter(
            "clearing_adl",
            "Auto-deleveraging hand-overs (one per deleveraged account and market).",
            ["market"],
            registry=reg,
        )
        self.adl_quote = Counter(
            "clearing_adl_quote",
            "Amount deleveraged accounts paid towards liquidation deficits.",
            ["market"],
            registry=reg,
        )
        self.adl_base = Counter(
            "clearing_adl_base",
            "Position quantity closed by auto-deleveraging (absolute).",
            ["market"],
            registry=reg,
        )
        self.funding_inputs = Counter(
            "clearing_funding_inputs",
            "Accepted funding inputs, by market.",
            ["market"],
            registry=reg,
        )
        self.funding_paid_quote = Counter(
            "clearing_funding_paid_quote",
            "Funding paid by the paying side (the sum of positive payments), by market.",
            ["market"],
            registry=reg,
        )
        self.fund_share_ratio = Gauge(
            "clearing_fund_share_ratio",
            "Share of a liquidation fee charged now that goes to the insurance fund (the "
            "rest goes to the fee pool); 1 under version 1.",
            ["market"],
            registry=reg,
        )
        self.volatility_variance = Gauge(
            "clearing_volatility_variance",
            "The market's volatility estimate v: an exponentially weighted mean of squared "
            "relative mark moves per tick (sqrt(v) is the typical move); 0 under version 1.",
            ["market"],
            registry=reg,
        )

    # -- inputs and outputs --------------------------------------------------------------

    def enable_fund_risk(self, interval_s: float) -> FundRiskMetrics:
        """Export the fund adequacy series (only a daemon that computes them does)."""
        if self.fund_risk is None:
            self.fund_risk = FundRiskMetrics(self.registry, interval_s, self._started_ns)
        return self.fund_risk

    def observe_input(self, topic: str, input_type: str) -> None:
        """Count one applied input record (its type is folded into the known set)."""
        if input_type not in INPUT_TYPES and input_type != MALFORMED_TYPE:
            input_type = UNKNOWN_TYPE
        self.input_records.labels(topic, input_type).inc()

    def observe_dlq(self, topic: str, count: int = 1) -> None:
        """Count records written to the dead-letter topic, by their source topic."""
        self.dlq_records.labels(topic).inc(count)

    def observe_outputs(self, events: Iterable[OutputEvent]) -> None:
        """Count output events and feed the liquidation and waterfall counters."""
        by_type: _Tally[str] = _Tally()
        for event in events:
            cls = type(event)
            by_type[cls.__struct_config__.tag] += 1  # type: ignore[index]
            if cls is Liquidation:
                key = (event.seq, event.account)  # type: ignore[union-attr]
                if key != self._last_liquidation:
                    self._last_liquidation = key
                    self.liquidated_accounts.inc()
                self.liquidations.labels(event.market).inc()  # type: ignore[union-attr]
                self._observe_liquidation(event)  # type: ignore[arg-type]
            elif cls is FundDraw:
                self.fund_draws.inc()
                self.fund_draw_quote.inc(float(event.amount))  # type: ignore[union-attr]
            elif cls is Clawback:
                self.clawbacks.inc()
                self.clawback_quote.inc(float(event.amount))  # type: ignore[union-attr]
            elif cls is BadDebt:
                self.bad_debts.inc()
                self.bad_debt_quote.inc(float(event.amount))  # type: ignore[union-attr]
            elif cls is Adl:
                self._observe_adl(event)  # type: ignore[arg-type]
            elif cls is FundingPaid:
                market = event.market  # type: ignore[union-attr]
                self.funding_inputs.labels(market).inc()
                self.funding_paid_quote.labels(market).inc(float(event.paid))  # type: ignore[union-attr]
            elif cls is OracleHeld:
                self.oracle_held_ticks.labels(event.market).inc()  # type: ignore[union-attr]
            elif cls is Reject:
                reason = event.reason  # type: ignore[union-attr]
                self.rejects.labels(reason if reason in _REJECT_REASONS else "other").inc()
        for type_name, count in by_type.items():
            self.output_events.labels(type_name).inc(count)

    def _observe_liquidation(self, event: Liquidation) -> None:
        """A liquidation's fee (and its split) and the step it belongs to."""
        step_key = (event.seq, event.account, event.market)
        last = self._last_step_event
        if last is None or last[:2] != step_key[:2] or event.market <= last[2]:
            self.liquidation_steps.inc()
        self._last_step_event = step_key
        self.liquidation_fee_quote.inc(float(event.fee))
        # Version 1 events carry no fund_fee: the whole fee goes to the fund. The pool's
        # part is the exact decimal difference, made a float only here.
        fund_fee = event.fee if isinstance(event.fund_fee, UnsetType) else event.fund_fee
        self.liquidation_fund_fee_quote.labels(event.market).inc(float(fund_fee))
        pool_fee = Decimal(event.fee) - Decimal(fund_fee)
        self.liquidation_pool_fee_quote.labels(event.market).inc(float(pool_fee))

    def _observe_adl(self, event: Adl) -> None:
        self.adl.labels(event.market).inc()
        self.adl_quote.labels(event.market).inc(float(event.amount))
        self.adl_base.labels(event.market).inc(abs(float(event.qty)))

    def observe_batch(
        self,
        inputs: Sequence[tuple[str, bytes]],
        first_seq: int,
        outputs: Sequence[OutputEvent],
        now_ns: int,
        kinds: bytes | None = None,
    ) -> None:
        """Account for one applied batch: ``inputs`` as (topic, raw) in apply order.

        ``first_seq`` is the engine seq of ``inputs[0]`` (``engine.seq + 1`` before the
        batch); ``outputs`` are all the batch's outputs. ``kinds``: each input's type as
        the native core parsed it (``INPUT_KINDS``, 0 = not known), when it did. An input
        of unknown type, and every oracle tick (for its market and ts), costs one small
        msgspec decode (about a microsecond).
        """
        self.observe_outputs(outputs)
        # Oracle ticks that were rejected or held did not move the mark.
        not_accepted = {
            event.seq for event in outputs if type(event) is Reject or type(event) is OracleHeld
        }
        counts: _Tally[tuple[str, str]] = _Tally()
        if kinds is None:
            kinds = bytes(len(inputs))
        # Counted in C; only the inputs that need a look are decoded below.
        known = _Tally(zip([topic for topic, _ in inputs], kinds, strict=True))
        for (topic, kind), count in known.items():
            if kind != 0:
                counts[topic, INPUT_KINDS[kind]] += count  # type: ignore[index]
        for offset, kind in enumerate(kinds):
            if kind != 0 and kind != _ORACLE_KIND:
                continue
            topic, raw = inputs[offset]
            peek = _peek(raw)
            if kind == 0:
                if peek is None:
                    counts[topic, MALFORMED_TYPE] += 1
                    continue
                input_type = peek.type if peek.type in INPUT_TYPES else UNKNOWN_TYPE
                counts[topic, input_type] += 1
                if input_type != "oracle":
                    continue
            if peek is not None and first_seq + offset not in not_accepted:
                ts = peek.ts
                self._oracle_ts_ns[peek.market] = ts if type(ts) is int else now_ns
        for (topic, input_type), count in counts.items():
            self.input_records.labels(topic, input_type).inc(count)
        self.engine_batch_records.observe(len(inputs))

    def observe_oracle(self, market: str, ts_ns: int) -> None:
        """Record an accepted oracle tick (``observe_batch`` does this by itself)."""
        self._oracle_ts_ns[market] = ts_ns

    def observe_applied(self, record_ts_ns: int, now_ns: int) -> None:
        """Lag in time: call after a batch with the last applied record's timestamp."""
        self.last_applied_record_ts_seconds.set(record_ts_ns / 1e9)
        self.input_lag_seconds.set(max(0, now_ns - record_ts_ns) / 1e9)

    # -- lag and progress ----------------------------------------------------------------

    def set_partition_lag(self, topic: str, partition: int, lag_offsets: int) -> None:
        """Lag in records of one assigned input partition."""
        self.consumer_lag_offsets.labels(topic, str(partition)).set(lag_offsets)

    def forget_partition(self, topic: str, partition: int) -> None:
        """Drop a revoked partition's lag series (so it does not freeze at its last value)."""
        with contextlib.suppress(KeyError):
            self.consumer_lag_offsets.remove(topic, str(partition))

    def set_journal_seq(self, seq: int) -> None:
        self.journal_last_seq.set(seq)

    def set_snapshot_time(self, at_ns: int) -> None:
        """A snapshot was written (or loaded at recovery) at wall-clock ``at_ns``."""
        self._snapshot_ns = at_ns

    # -- health --------------------------------------------------------------------------

    def set_invariant_ok(self, ok: bool) -> None:
        self.invariant_violation.set(0 if ok else 1)

    def set_role(self, role: str) -> None:
        self.role = role
        self.active.set(1 if role == "active" else 0)
        if role == "active":
            self.standby_in_sync.set(0)
            self.standby_lag_offsets.set(0)
            self.standby_lag_seconds.set(0)
            self.standby_lag_s = 0.0

    def set_standby_lag(self, offsets: int, seconds: float, in_sync: bool) -> None:
        self.standby_lag_offsets.set(offsets)
        self.standby_lag_seconds.set(seconds)
        self.standby_in_sync.set(1 if in_sync else 0)
        self.standby_lag_s = seconds

    def set_ready(self, ready: bool, reason: str = "") -> None:
        """Readiness, shown by ``clearing_ready`` and ``/readyz`` (reason when not ready)."""
        self.ready = ready
        self.not_ready_reason = "" if ready else (reason or "not ready")
        self.ready_gauge.set(1 if ready else 0)
        # Any change of readiness (promoting, shutting down, stopped) ends a standby's
        # reads until it says again that it follows.
        self._following = False

    def set_following(self) -> None:
        """A standby has recovered and follows the journal: its read API serves (a read
        replica), while ``ready`` (``/readyz``) stays false: it does not clear."""
        self._following = True

    @property
    def readable(self) -> bool:
        """The read API may answer: an active process once ready, a standby once it
        follows (until its readiness changes again: promotion, shutdown)."""
        return self.ready or self._following

    # -- ledger --------------------------------------------------------------------------

    def update_ledger(self, engine: EngineCore, now_ns: int) -> None:
        """Recompute the ledger gauges from the engine's figures (either core).

        Cost: one O(positions) pass in the engine, margin included (every trader's
        equity is compared with its initial margin exactly). Measured at 100k traders
        with one position each: 0.3 s on the Python core, 15 ms on the native one, during
        which the event loop does nothing else. So call it every few seconds (5 s suits
        a 15 s scrape), between batches, on the thread that applies inputs; never per
        input.
        """
        started = time.perf_counter()
        figures = engine.figures()
        fund_equity_e16 = figures.fund_equity_e16
        self.fund_cash_quote.set(figures.fund_cash_e16 / E16)
        self.fund_equity_quote.set(fund_equity_e16 / E16)
        self.fee_pool_cash_quote.set(figures.fee_pool_cash_e16 / E16)
        self.bad_debt_unrecovered_quote.set(-figures.bad_debt_cash_e16 / E16)
        total_oi_e16 = 0
        for market in figures.markets:
            total_oi_e16 += self._set_market_gauges(market, now_ns)
        # Exact ints divided once: Python rounds int / int correctly.
        self.fund_to_oi_ratio.set(fund_equity_e16 / total_oi_e16 if total_oi_e16 else math.nan)
        # System accounts exist from genesis, so they are always among the accounts.
        self.accounts.set(figures.accounts - len(SYSTEM_ACCOUNTS))
        self.accounts_with_positions.set(figures.traders)
        self.accounts_below_im.set(figures.traders_below_im)
        self.margin_scan_accounts.set(figures.traders)
        self.rules_version.set(engine.rules_version)
        self._finish_ledger_update(engine.seq, now_ns, started)

    def _set_market_gauges(self, market: MarketFigures, now_ns: int) -> int:
        """One market's gauges (both cores); returns its long open interest notional e16."""
        market_id, long_e8, mark_e8 = market.market, market.long_open_interest_e8, market.mark_e8
        notional_e16 = 0 if mark_e8 is None else long_e8 * mark_e8
        self.open_interest_base.labels(market_id).set(long_e8 / E8)
        self.open_interest_notional_quote.labels(market_id).set(notional_e16 / E16)
        self.mark_price_quote.labels(market_id).set(math.nan if mark_e8 is None else mark_e8 / E8)
        self.fund_share_ratio.labels(market_id).set(market.fund_share_e8 / E8)
        self.volatility_variance.labels(market_id).set(market.volatility_e16 / E16)
        self.oracle_held.labels(market_id).set(1 if market.tick_held else 0)
        tick_ns = self._oracle_ts_ns.get(market_id, self._started_ns)
        self.oracle_age_seconds.labels(market_id).set(max(0, now_ns - tick_ns) / 1e9)
        return notional_e16

    def _finish_ledger_update(self, seq: int, now_ns: int, started: float) -> None:
        self.engine_seq.set(seq)
        snapshot_ns = self._snapshot_ns if self._snapshot_ns is not None else self._started_ns
        self.snapshot_age_seconds.set(max(0, now_ns - snapshot_ns) / 1e9)
        self.ledger_update_seconds.set(time.perf_counter() - started)
