"""Input and output events as msgspec Structs, and the decoder that validates inputs.

Inputs are a tagged union on ``type``. Decoding has two paths that must agree:

* the fast path decodes straight into the typed union with one reused decoder; almost
  every real input takes it;
* when the typed decode fails, the slow path decodes into plain JSON values and walks the
  SPEC's validation order (malformed, unknown_type, invalid_field) to name the exact reason.

Either way, value checks (decimal syntax, magnitude, ranges, non-empty ids) run on the
Struct, and the result is a validated ``Parsed*`` tuple the engine applies, or a ``Reject``.
"""

from __future__ import annotations

import re
from typing import Any, Final, Literal, NamedTuple

import msgspec
from msgspec import UNSET, Struct, UnsetType

from clearing.engine.money import E8, parse_wire_e8

__all__ = [
    "MAX_NESTING_DEPTH",
    "REJECT_REASONS",
    "Adl",
    "BadDebt",
    "Book",
    "Clawback",
    "Deposit",
    "Fill",
    "FundDraw",
    "Funding",
    "FundingPaid",
    "InputEvent",
    "InputEventV2",
    "Liquidation",
    "Market",
    "MarketV2",
    "Oracle",
    "OracleHeld",
    "OutputEvent",
    "Reject",
    "Withdraw",
    "Withdrawal",
    "decode_input",
    "decode_output",
    "encode_output",
]

# A wire number: decimal string or JSON integer (never a float).
Num = str | int
# Timestamps are int64 nanoseconds; wider integers are invalid fields.
_TS_MIN: Final = -(2**63)
_TS_MAX: Final = 2**63 - 1
# Valid inputs nest 3 deep (object > bids > [price, qty]); anything past this is "absurd
# nesting" and malformed. Fixed here so every implementation and platform agrees.
MAX_NESTING_DEPTH: Final = 64


class _Input(Struct, tag_field="type", frozen=True, gc=False):
    pass


class Market(_Input, tag="market"):
    market: str
    imr: Num
    mmr: Num
    liq_fee: Num
    max_oracle_move: Num | UnsetType = UNSET
    ts: int | UnsetType = UNSET


class Deposit(_Input, tag="deposit"):
    account: str
    amount: Num
    ts: int | UnsetType = UNSET


class Withdraw(_Input, tag="withdraw"):
    account: str
    amount: Num
    ts: int | UnsetType = UNSET


class Fill(_Input, tag="fill"):
    fill_id: str
    market: str
    price: Num
    qty: Num
    buyer: str
    seller: str
    buyer_fee: Num | UnsetType = UNSET
    seller_fee: Num | UnsetType = UNSET
    ts: int | UnsetType = UNSET


class Oracle(_Input, tag="oracle"):
    market: str
    price: Num
    ts: int | UnsetType = UNSET


class Book(_Input, tag="book"):
    market: str
    bids: list[tuple[Num, Num]] | UnsetType = UNSET
    asks: list[tuple[Num, Num]] | UnsetType = UNSET
    ts: int | UnsetType = UNSET


class MarketV2(_Input, tag="market"):
    """A ``market`` input under rules version 2: version 1's fields plus SPEC §9's."""

    market: str
    imr: Num
    mmr: Num
    liq_fee: Num
    max_oracle_move: Num | UnsetType = UNSET
    liq_step: Num | UnsetType = UNSET
    loss_policy: Literal["clawback", "adl"] | UnsetType = UNSET
    fund_share: Num | UnsetType = UNSET
    vol_tiers: list[tuple[Num, Num]] | UnsetType = UNSET
    vol_lambda: Num | UnsetType = UNSET
    ts: int | UnsetType = UNSET


class Funding(_Input, tag="funding"):
    """Rules version 2 only (SPEC §9.5): holders pay ``round16(q * m * rate)``."""

    market: str
    rate: Num
    ts: int | UnsetType = UNSET


InputEvent = Market | Deposit | Withdraw | Fill | Oracle | Book
# Rules version 2 reads ``market`` with its new fields and knows ``funding``.
InputEventV2 = MarketV2 | Deposit | Withdraw | Fill | Oracle | Book | Funding
_INPUT_TYPES: Final[dict[str, type[_Input]]] = {
    "market": Market,
    "deposit": Deposit,
    "withdraw": Withdraw,
    "fill": Fill,
    "oracle": Oracle,
    "book": Book,
}
_INPUT_TYPES_V2: Final[dict[str, type[_Input]]] = {
    **_INPUT_TYPES,
    "market": MarketV2,
    "funding": Funding,
}

# ---------------------------------------------------------------------------------------
# Outputs. Field order is the wire order: type first (the tag), then seq, then the rest.


class _Output(Struct, tag_field="type", frozen=True, gc=False, omit_defaults=True):
    seq: int


class Liquidation(_Output, tag="liquidation"):
    account: str
    market: str
    qty: str
    proceeds: str
    mark: str
    fee: str
    # Rules version 2 only: the part of ``fee`` that went to the insurance fund (§9.3).
    fund_fee: str | UnsetType = UNSET


class FundDraw(_Output, tag="fund_draw"):
    account: str
    amount: str


class Clawback(_Output, tag="clawback"):
    account: str
    amount: str
    cause: str


class Adl(_Output, tag="adl"):
    """Rules version 2: a deleveraged position part and what it paid (SPEC §9.4)."""

    account: str
    market: str
    qty: str
    amount: str
    cause: str


class FundingPaid(_Output, tag="funding"):
    """Rules version 2: one accepted ``funding`` input (SPEC §9.5)."""

    market: str
    rate: str
    paid: str


class BadDebt(_Output, tag="bad_debt"):
    account: str
    amount: str


class Withdrawal(_Output, tag="withdrawal"):
    account: str
    amount: str


class OracleHeld(_Output, tag="oracle_held"):
    market: str
    price: str


class Reject(_Output, tag="reject"):
    reason: str
    detail: str
    # What is known of the input: its type and ids, when they were readable strings.
    input_type: str | UnsetType = UNSET
    fill_id: str | UnsetType = UNSET
    account: str | UnsetType = UNSET
    market: str | UnsetType = UNSET


OutputEvent = (
    Liquidation
    | FundDraw
    | Clawback
    | BadDebt
    | Withdrawal
    | OracleHeld
    | Reject
    | Adl
    | FundingPaid
)

REJECT_REASONS: Final = (
    "malformed",
    "unknown_type",
    "invalid_field",
    "unknown_market",
    "reserved_account",
    "self_trade",
    "duplicate_fill",
    "insufficient_cash",
    "insufficient_margin",
)

_output_encoder = msgspec.json.Encoder()


def encode_output(event: OutputEvent) -> bytes:
    """One output event as compact JSON (no newline)."""
    return _output_encoder.encode(event)


_output_decoder = msgspec.json.Decoder(OutputEvent)


def decode_output(encoded: bytes) -> OutputEvent:
    """The event ``encode_output`` wrote (for outputs a core returned as bytes)."""
    return _output_decoder.decode(encoded)


# ---------------------------------------------------------------------------------------
# Validated inputs: parsed, scaled values the engine applies without re-checking.


class ParsedMarket(NamedTuple):
    market: str
    imr_e8: int
    mmr_e8: int
    liq_fee_e8: int
    max_oracle_move_e8: int | None


class ParsedDeposit(NamedTuple):
    account: str
    amount_e8: int


class ParsedWithdraw(NamedTuple):
    account: str
    amount_e8: int


class ParsedFill(NamedTuple):
    fill_id: str
    market: str
    price_e8: int
    qty_e8: int
    buyer: str
    seller: str
    buyer_fee_e8: int
    seller_fee_e8: int


class ParsedOracle(NamedTuple):
    market: str
    price_e8: int


class ParsedBook(NamedTuple):
    market: str
    # Aggregated levels: price_e8 -> qty_e8 (repeated prices add up).
    bids: dict[int, int]
    asks: dict[int, int]


class ParsedMarketV2(NamedTuple):
    """A rules-version-2 ``market`` input, defaults filled in (SPEC §9's table)."""

    market: str
    imr_e8: int
    mmr_e8: int
    liq_fee_e8: int
    max_oracle_move_e8: int | None
    liq_step_e8: int
    adl: bool  # loss_policy "adl"; False is "clawback"
    fund_share_e8: int
    vol_tiers: tuple[tuple[int, int], ...]  # (sigma e8, share e8), sigma ascending
    vol_lambda_e8: int


class ParsedFunding(NamedTuple):
    market: str
    rate_e8: int


ParsedInput = (
    ParsedMarket
    | ParsedDeposit
    | ParsedWithdraw
    | ParsedFill
    | ParsedOracle
    | ParsedBook
    | ParsedMarketV2
    | ParsedFunding
)


class InvalidField(Exception):
    """A field is missing, null, of the wrong type or out of range."""


def _id(name: str, value: str) -> str:
    if not value:
        raise InvalidField(f"{name} must be a non-empty string")
    return value


def _num(name: str, value: object) -> int:
    parsed = parse_wire_e8(value)
    if parsed is None:
        raise InvalidField(
            f"{name} must be a decimal string with at most 8 decimals or an integer, "
            f"magnitude <= 1e15; got {value!r:.40}"
        )
    return parsed


def _positive(name: str, value: object) -> int:
    parsed = _num(name, value)
    if parsed <= 0:
        raise InvalidField(f"{name} must be > 0; got {value!r:.40}")
    return parsed


def _ts(value: int | UnsetType) -> None:
    if value is not UNSET and not (_TS_MIN <= value <= _TS_MAX):  # type: ignore[operator]
        raise InvalidField("ts must be an int64 count of nanoseconds")


def _levels(name: str, levels: list[tuple[Num, Num]] | UnsetType) -> dict[int, int]:
    aggregated: dict[int, int] = {}
    if levels is UNSET:
        return aggregated
    for index, (price, qty) in enumerate(levels):  # type: ignore[union-attr]
        price_e8 = _positive(f"{name}[{index}] price", price)
        qty_e8 = _positive(f"{name}[{index}] qty", qty)
        aggregated[price_e8] = aggregated.get(price_e8, 0) + qty_e8
    return aggregated


def _valid_fill(event: Fill) -> ParsedFill | None:
    """The common case in one pass: a fill whose every field is valid; None otherwise, and
    ``_validate`` then names the first bad field in the SPEC's order."""
    price = parse_wire_e8(event.price)
    qty = parse_wire_e8(event.qty)
    buyer_fee = 0 if event.buyer_fee is UNSET else parse_wire_e8(event.buyer_fee)
    seller_fee = 0 if event.seller_fee is UNSET else parse_wire_e8(event.seller_fee)
    ts = event.ts
    if (
        price is not None
        and price > 0
        and qty is not None
        and qty > 0
        and buyer_fee is not None
        and seller_fee is not None
        and event.fill_id
        and event.market
        and event.buyer
        and event.seller
        and (ts is UNSET or _TS_MIN <= ts <= _TS_MAX)  # type: ignore[operator]
    ):
        return ParsedFill(
            event.fill_id,
            event.market,
            price,
            qty,
            event.buyer,
            event.seller,
            buyer_fee,
            seller_fee,
        )
    return None


def _validate(event: _Input) -> ParsedInput:
    """Value checks shared by both decode paths; raises InvalidField."""
    if type(event) is Fill:
        parsed = _valid_fill(event)
        if parsed is not None:
            return parsed
    _ts(event.ts)  # type: ignore[attr-defined]
    if type(event) is Fill:
        return ParsedFill(
            _id("fill_id", event.fill_id),
            _id("market", event.market),
            _positive("price", event.price),
            _positive("qty", event.qty),
            _id("buyer", event.buyer),
            _id("seller", event.seller),
            0 if event.buyer_fee is UNSET else _num("buyer_fee", event.buyer_fee),
            0 if event.seller_fee is UNSET else _num("seller_fee", event.seller_fee),
        )
    if type(event) is Oracle:
        return ParsedOracle(_id("market", event.market), _positive("price", event.price))
    if type(event) is Deposit:
        return ParsedDeposit(_id("account", event.account), _positive("amount", event.amount))
    if type(event) is Withdraw:
        return ParsedWithdraw(_id("account", event.account), _positive("amount", event.amount))
    if type(event) is Book:
        return ParsedBook(
            _id("market", event.market), _levels("bids", event.bids), _levels("asks", event.asks)
        )
    if type(event) is Funding:
        rate = _num("rate", event.rate)
        if not -E8 < rate < E8:
            raise InvalidField(f"need |rate| < 1; got {event.rate!r:.40}")
        return ParsedFunding(_id("market", event.market), rate)
    if type(event) is MarketV2:
        return _validate_market_v2(event)
    assert type(event) is Market
    imr = _num("imr", event.imr)
    mmr = _num("mmr", event.mmr)
    liq_fee = _num("liq_fee", event.liq_fee)
    if not (0 < mmr <= imr <= E8):
        raise InvalidField("need 0 < mmr <= imr <= 1")
    if not (0 <= liq_fee < E8):
        raise InvalidField("need 0 <= liq_fee < 1")
    move: int | None = None
    if event.max_oracle_move is not UNSET:
        move = _positive("max_oracle_move", event.max_oracle_move)
    return ParsedMarket(_id("market", event.market), imr, mmr, liq_fee, move)


# SPEC §9's defaults: close whole positions, claw back, the fund keeps whole fees.
_DEFAULT_LIQ_STEP_E8: Final = E8
_DEFAULT_FUND_SHARE_E8: Final = E8
_DEFAULT_VOL_LAMBDA_E8: Final = 5_000_000  # 0.05
_LOSS_POLICIES: Final = ("clawback", "adl")


def _fraction(name: str, value: object, low_open: bool) -> int:
    """A ratio in (0, 1] (``low_open``) or [0, 1], in e8."""
    parsed = _num(name, value)
    if parsed > E8 or parsed < 0 or (low_open and parsed == 0):
        bound = "0 < " if low_open else "0 <= "
        raise InvalidField(f"need {bound}{name} <= 1; got {value!r:.40}")
    return parsed


def _vol_tiers(value: list[tuple[Num, Num]] | UnsetType) -> tuple[tuple[int, int], ...]:
    if value is UNSET:
        return ()
    tiers: list[tuple[int, int]] = []
    for index, (sigma, share) in enumerate(value):  # type: ignore[union-attr]
        sigma_e8 = _positive(f"vol_tiers[{index}] sigma", sigma)
        share_e8 = _fraction(f"vol_tiers[{index}] share", share, low_open=False)
        if tiers and sigma_e8 <= tiers[-1][0]:
            raise InvalidField("vol_tiers sigmas must be strictly ascending")
        tiers.append((sigma_e8, share_e8))
    return tuple(tiers)


def _validate_market_v2(event: MarketV2) -> ParsedMarketV2:
    base = _validate(
        Market(event.market, event.imr, event.mmr, event.liq_fee, event.max_oracle_move)
    )
    assert type(base) is ParsedMarket
    liq_step = _DEFAULT_LIQ_STEP_E8
    if event.liq_step is not UNSET:
        liq_step = _fraction("liq_step", event.liq_step, low_open=True)
    adl = False
    if event.loss_policy is not UNSET:
        if event.loss_policy not in _LOSS_POLICIES:
            raise InvalidField('loss_policy must be "clawback" or "adl"')
        adl = event.loss_policy == "adl"
    fund_share = _DEFAULT_FUND_SHARE_E8
    if event.fund_share is not UNSET:
        fund_share = _fraction("fund_share", event.fund_share, low_open=False)
    tiers = _vol_tiers(event.vol_tiers)
    vol_lambda = _DEFAULT_VOL_LAMBDA_E8
    if event.vol_lambda is not UNSET:
        vol_lambda = _fraction("vol_lambda", event.vol_lambda, low_open=True)
    return ParsedMarketV2(*base, liq_step, adl, fund_share, tiers, vol_lambda)


# ---------------------------------------------------------------------------------------
# Decoding.


class _FloatToken:
    """A JSON float seen by the slow path: valid JSON, never a valid wire number."""

    __slots__ = ()


_FLOAT = _FloatToken()
_typed_decoder = msgspec.json.Decoder(InputEvent)
_typed_decoder_v2 = msgspec.json.Decoder(InputEventV2)
_any_decoder = msgspec.json.Decoder(float_hook=lambda _text: _FLOAT)


class DecodeFailure(NamedTuple):
    reason: str
    detail: str
    known: dict[str, str]


# A complete JSON string (escapes included); brackets inside strings do not nest.
_JSON_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(raw: bytes) -> bool:
    """True if brackets outside strings nest deeper than MAX_NESTING_DEPTH.

    Strings are removed and everything but brackets deleted in C, so the Python loop
    only sees brackets and stops as soon as the limit is passed: a multi-MiB input with
    shallow nesting costs milliseconds, a nesting bomb a few bytes' worth.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_NESTING_DEPTH:
        return False
    brackets = _JSON_STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    depth = 0
    for byte in brackets:
        if byte == 0x5B or byte == 0x7B:  # [ {
            depth += 1
            if depth > MAX_NESTING_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _known(obj: dict[str, Any]) -> dict[str, str]:
    known = {}
    for key, out_key in (
        ("type", "input_type"),
        ("fill_id", "fill_id"),
        ("account", "account"),
        ("market", "market"),
    ):
        value = obj.get(key)
        if type(value) is str:
            known[out_key] = value[:200]
    return known


_ID = "id"
_STR = "str"
_NUM = "num"
_TS = "ts"
_LEVELS = "levels"
# Field kinds per input type, in declaration order; optional fields may be absent.
_FIELDS: Final[dict[str, tuple[tuple[str, str, bool], ...]]] = {
    "market": (
        ("market", _ID, True),
        ("imr", _NUM, True),
        ("mmr", _NUM, True),
        ("liq_fee", _NUM, True),
        ("max_oracle_move", _NUM, False),
        ("ts", _TS, False),
    ),
    "deposit": (("account", _ID, True), ("amount", _NUM, True), ("ts", _TS, False)),
    "withdraw": (("account", _ID, True), ("amount", _NUM, True), ("ts", _TS, False)),
    "fill": (
        ("fill_id", _ID, True),
        ("market", _ID, True),
        ("price", _NUM, True),
        ("qty", _NUM, True),
        ("buyer", _ID, True),
        ("seller", _ID, True),
        ("buyer_fee", _NUM, False),
        ("seller_fee", _NUM, False),
        ("ts", _TS, False),
    ),
    "oracle": (("market", _ID, True), ("price", _NUM, True), ("ts", _TS, False)),
    "book": (
        ("market", _ID, True),
        ("bids", _LEVELS, False),
        ("asks", _LEVELS, False),
        ("ts", _TS, False),
    ),
}


_FIELDS_V2: Final[dict[str, tuple[tuple[str, str, bool], ...]]] = {
    **_FIELDS,
    "market": (
        *_FIELDS["market"][:5],
        ("liq_step", _NUM, False),
        ("loss_policy", _STR, False),
        ("fund_share", _NUM, False),
        ("vol_tiers", _LEVELS, False),
        ("vol_lambda", _NUM, False),
        ("ts", _TS, False),
    ),
    "funding": (("market", _ID, True), ("rate", _NUM, True), ("ts", _TS, False)),
}


def _kind_ok(kind: str, value: object) -> bool:
    if kind in (_ID, _STR):
        return type(value) is str
    if kind == _NUM:
        return type(value) is str or type(value) is int
    if kind == _TS:
        return type(value) is int
    # Book levels: a list of [price, qty] pairs of wire numbers.
    return type(value) is list and all(
        type(level) is list
        and len(level) == 2
        and all(type(part) is str or type(part) is int for part in level)
        for level in value
    )


# Python refuses to convert integer literals longer than this many digits (ValueError).
_INT_DIGITS_LIMIT: Final = 4300
# msgspec's untyped decoder already refuses a negative literal of exactly the limit's
# length (the sign counts), so defuse from the limit itself, not one past it.
_HUGE_DIGIT_RUN: Final = re.compile(rb"[0-9]{%d}" % _INT_DIGITS_LIMIT)


def _defuse_huge_integers(raw: bytes) -> bytes:
    """Replace integer literals too long for Python's int() by a float literal.

    Valid JSON either way; a float in a checked field is an invalid_field and in an
    unknown field is ignored, which is what the huge integer deserves. Runs only when
    decoding already failed, so the byte loop's cost does not matter.
    """
    out = bytearray()
    in_string = escaped = False
    run_start = -1
    for index, byte in enumerate(raw):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:
                escaped = True
            elif byte == 0x22:
                in_string = False
            out.append(byte)
            continue
        if 0x30 <= byte <= 0x39:
            if run_start < 0:
                run_start = index
            continue
        if run_start >= 0:
            digits = raw[run_start:index]
            out += b"0.5" if len(digits) >= _INT_DIGITS_LIMIT else digits
            run_start = -1
        if byte == 0x22:
            in_string = True
        out.append(byte)
    if run_start >= 0:
        digits = raw[run_start:]
        out += b"0.5" if len(digits) >= _INT_DIGITS_LIMIT else digits
    return bytes(out)


def _slow_decode(raw: bytes, rules_version: int) -> ParsedInput | DecodeFailure:
    try:
        try:
            obj = _any_decoder.decode(raw)
        except (msgspec.DecodeError, ValueError):
            if _HUGE_DIGIT_RUN.search(raw) is None:
                raise
            obj = _any_decoder.decode(_defuse_huge_integers(raw))
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        return DecodeFailure("malformed", f"not valid JSON: {exc}"[:200], {})
    if type(obj) is not dict:
        return DecodeFailure("malformed", "input must be a JSON object", {})
    known = _known(obj)
    type_name = obj.get("type")
    fields, input_types = (
        (_FIELDS, _INPUT_TYPES) if rules_version == 1 else (_FIELDS_V2, _INPUT_TYPES_V2)
    )
    if type(type_name) is not str or type_name not in fields:
        if "type" not in obj:
            detail = "missing type"
        elif type(type_name) is not str:
            detail = "type must be a string"
        else:
            detail = f"unknown type {type_name!r:.40}"
        return DecodeFailure("unknown_type", detail, known)
    kwargs: dict[str, Any] = {}
    for name, kind, required in fields[type_name]:
        if name not in obj:
            if required:
                return DecodeFailure("invalid_field", f"{name} is missing", known)
            continue
        value = obj[name]
        if not _kind_ok(kind, value):
            return DecodeFailure("invalid_field", f"{name} has the wrong type", known)
        kwargs[name] = [tuple(level) for level in value] if kind == _LEVELS else value
    event = input_types[type_name](**kwargs)
    try:
        return _validate(event)
    except InvalidField as exc:
        return DecodeFailure("invalid_field", str(exc), known)


def decode_input(raw: bytes, rules_version: int = 1) -> ParsedInput | DecodeFailure:
    """Decode and validate one raw input under a rules version; never raises on any bytes.

    Version 1 knows neither ``funding`` nor the new market fields (ignored as unknown
    fields); version 2 validates both (SPEC §9)."""
    if not raw.isascii():
        # The typed decoder skips unknown fields without checking their bytes, so an
        # invalid UTF-8 sequence there would slip through; check the whole input.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            return DecodeFailure("malformed", f"not valid UTF-8: {exc}"[:200], {})
    if _too_deep(raw):
        return DecodeFailure("malformed", f"nesting deeper than {MAX_NESTING_DEPTH}", {})
    decoder = _typed_decoder if rules_version == 1 else _typed_decoder_v2
    try:
        event = decoder.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
        return _slow_decode(raw, rules_version)
    try:
        return _validate(event)
    except InvalidField as exc:
        known = {"input_type": event.__struct_config__.tag}  # type: ignore[dict-item]
        for key in ("fill_id", "account", "market"):
            value = getattr(event, key, None)
            if type(value) is str:
                known[key] = value[:200]
        return DecodeFailure("invalid_field", str(exc), known)
