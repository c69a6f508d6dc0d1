"""What the report collects of rules version 2 (SPEC §9), exactly, while it replays.

Only a version-2 journal fills a ``RulesV2Data``: auto-deleveraging hand-overs, the
partial liquidation steps, funding inputs, the liquidation fee split per market, and per
sample the volatility estimate and the fund's current share of a fee in each market.

A ``liquidation`` event does not say whether its step was partial, so the collector
decides it from what follows: a partial step leaves part of the position open, or is
followed in the same input by the account's full close-out in that market (§9.2 allows
one partial step per account and input). A full close-out leaves nothing open and is the
account's last step in the input. (A "partial" step that rounds up to the whole position
closes it all and counts as a full one here: nothing distinguishes them.)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import msgspec

from clearing.engine.events import Adl, FundingPaid, Liquidation
from clearing.engine.money import E8
from clearing.engine.rules_v2 import fund_share_e8
from clearing.engine.state import Ledger

__all__ = ["AdlRow", "FundingRow", "PartialStepRow", "RulesV2Collector", "RulesV2Data"]


def _scaled(text: str, places: int) -> int:
    """An output decimal as an integer count of 10**-places units (exact)."""
    if len(text.partition(".")[2]) > places:
        raise ValueError(f"{text!r} has more than {places} decimals")
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("-").partition(".")
    value = int(whole) * 10**places + (int(frac.ljust(places, "0")) if frac else 0)
    return -value if negative else value


class AdlRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str  # the deleveraged account
    market: str
    qty_e8: int  # signed part of its position closed
    amount_e16: int  # what it paid towards the deficit
    cause: str  # the liquidated account


class FundingRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    market: str
    rate: str  # as the event gives it (display only)
    paid_e16: int  # the sum of the positive payments


class PartialStepRow(msgspec.Struct, frozen=True, gc=False):
    seq: int
    ts_ns: int | None
    account: str
    market: str
    qty_e8: int  # signed part closed by the partial step
    left_e8: int  # the position it held after the input (0: closed by a later full step)


@dataclass
class RulesV2Data:
    """Everything the version-2 sections show. Sample lists are parallel to
    ``ReportData.sample_seq``."""

    adl: list[AdlRow] = field(default_factory=list)
    funding: list[FundingRow] = field(default_factory=list)
    partial_steps: list[PartialStepRow] = field(default_factory=list)
    # market -> the liquidation fees' parts (e16) that went to the fund and to the pool
    fund_fee_e16: Counter[str] = field(default_factory=Counter)
    pool_fee_e16: Counter[str] = field(default_factory=Counter)
    # market -> per sample: the volatility estimate v (e16), the fund's share (e8)
    sample_volatility_e16: dict[str, list[int]] = field(default_factory=dict)
    sample_fund_share_e8: dict[str, list[int]] = field(default_factory=dict)


class RulesV2Collector:
    """Fed by the report's collector: each input's outputs, then each sample."""

    def __init__(self) -> None:
        self.data = RulesV2Data()

    def observe(self, seq: int, ts_ns: int | None, outputs: list[object], ledger: Ledger) -> None:
        """One input's outputs, with the ledger as that input left it."""
        data = self.data
        liquidations: list[Liquidation] = []
        for event in outputs:
            kind = type(event)
            if kind is Liquidation:
                assert isinstance(event, Liquidation)
                liquidations.append(event)
                fee_e16 = _scaled(event.fee, 16)
                # A version-1 event has no fund_fee: the whole fee went to the fund.
                fund_fee = event.fund_fee if isinstance(event.fund_fee, str) else event.fee
                fund_e16 = _scaled(fund_fee, 16)
                data.fund_fee_e16[event.market] += fund_e16
                data.pool_fee_e16[event.market] += fee_e16 - fund_e16
            elif kind is Adl:
                assert isinstance(event, Adl)
                data.adl.append(
                    AdlRow(
                        seq,
                        ts_ns,
                        event.account,
                        event.market,
                        _scaled(event.qty, 8),
                        _scaled(event.amount, 16),
                        event.cause,
                    )
                )
            elif kind is FundingPaid:
                assert isinstance(event, FundingPaid)
                data.funding.append(
                    FundingRow(seq, ts_ns, event.market, event.rate, _scaled(event.paid, 16))
                )
        self._partial_steps(seq, ts_ns, liquidations, ledger)

    def _partial_steps(
        self, seq: int, ts_ns: int | None, liquidations: list[Liquidation], ledger: Ledger
    ) -> None:
        """The liquidations of one input that were partial steps (see the module doc)."""
        later = Counter((event.account, event.market) for event in liquidations)
        for event in liquidations:
            key = (event.account, event.market)
            later[key] -= 1
            account = ledger.accounts.get(event.account)
            position = None if account is None else account.positions.get(event.market)
            left_e8 = 0 if position is None else position.qty_e8
            if later[key] > 0 or left_e8 != 0:
                self.data.partial_steps.append(
                    PartialStepRow(
                        seq, ts_ns, event.account, event.market, _scaled(event.qty, 8), left_e8
                    )
                )

    def sample(self, markets: list[str], samples_before: int, ledger: Ledger) -> None:
        """Append one sample per market (``markets`` as the report lists them); a market
        that appears late is back-filled with version 1's values (no estimate, share 1)."""
        data = self.data
        for market_id in markets:
            market = ledger.markets[market_id]
            vol = data.sample_volatility_e16.setdefault(market_id, [0] * samples_before)
            share = data.sample_fund_share_e8.setdefault(market_id, [E8] * samples_before)
            vol.append(market.vol_e16)
            share.append(fund_share_e8(market))
