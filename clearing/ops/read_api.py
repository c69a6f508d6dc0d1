"""The read API: the committed ledger as read-only JSON under ``/v1/`` (docs/read-api.yaml).

Routes (GET or HEAD):

* ``/v1/accounts/{id}``: one account (cash, equity, IM, MM, positions with their distance
  to liquidation); 404 for an unknown account.
* ``/v1/markets/{id}?depth=N``: one market (parameters, mark, held tick, holders, open
  interest, the first N book levels per side the close-outs walk); 404 if unknown.
* ``/v1/system``: the three system accounts.
* ``/v1/rankings/nearest-liquidation?limit=N``: the accounts with the smallest E/MM.
* ``/v1/rankings/largest-positions?market=M&limit=N``: the largest positions of a market.

Every answer carries ``seq``, the committed seq whose state it is: each is computed by the
daemon's loop between batches (``clearing.ops.reads``), never half-way through one. The
ranked lists need a pass over every account, so they are computed once for the longest
list (``MAX_LIMIT``) and cached (``CostBoundedCache``): their ``seq`` may be behind
``committed_seq``, which says how far the ledger is.

Errors are JSON ``{"error": "..."}``: 400 for a bad query parameter, 401 for a missing or
wrong token, 403 off loopback without a configured token, 404 for an unknown id or route,
503 before the daemon is readable (an active once ready, a standby once it follows the
journal: ``Metrics.readable``) or when its loop does not reach a batch boundary in time;
500 if a view fails (a bug: never the loop's failure, only the request's).

The server (``clearing.ops.http``) asks ``route`` for each request: a reply at once, or
a ``ReadQuery`` it queues on ``reads`` and answers when the loop hands over the result.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote

import msgspec

from clearing.engine import EngineCore
from clearing.ops.reads import Answer, CommittedReads, CostBoundedCache, ReadAborted

__all__ = ["MAX_LIMIT", "WAIT_S", "ReadApi", "ReadQuery", "Reply", "failed_reply"]

Reply = tuple[HTTPStatus, bytes]

# The longest list and the deepest book side one request may ask for: bounds the cost of
# every answer, and the size of the cached ranked lists (formatting and decoding 1000
# entries per market cost more than the pass over 10k accounts itself).
MAX_LIMIT: Final = 100
MAX_DEPTH: Final = 1000
_DEFAULT_LIMIT: Final = 20
_DEFAULT_DEPTH: Final = 10
# Ranked lists: recomputed at most once per this many times their last cost, and at most
# once every 2 s: at most 2 % of the loop's time, whatever the polling rate (a tenth, the
# state hash's bound, slowed clearing by a third under a steady poll in the benchmark).
_RANKINGS_COST_FACTOR: Final = 50.0
_RANKINGS_MIN_INTERVAL_S: Final = 2.0
# A read waits for the loop's next batch boundary; a commit takes well under this.
WAIT_S: Final = 30.0
_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
# Ids echoed in error messages are cut to this length (a URL may be 16 KiB).
_SHOWN_CHARS: Final = 120
# The SPEC's reserved accounts, in id order.
_SYSTEM_ACCOUNTS: Final = ("bad-debt", "fee-pool", "insurance-fund")
_SYSTEM_KEYS: Final = {account: json.dumps(account).encode() + b":" for account in _SYSTEM_ACCOUNTS}


class ReadQuery(NamedTuple):
    """A request that needs the committed ledger: ``query`` runs on the daemon's loop at
    a batch boundary (``CommittedReads.submit``), ``reply`` makes the reply of its
    answer (or ``failed_reply`` of the failure, when there is none)."""

    query: Callable[[EngineCore], Any]
    reply: Callable[[Answer[Any]], Reply]


class _Rankings(msgspec.Struct, frozen=True):
    largest_positions: dict[str, list[dict[str, str]]]
    nearest_liquidation: list[dict[str, str]]


def _rankings(engine: EngineCore) -> _Rankings:
    return msgspec.json.decode(engine.rankings(MAX_LIMIT), type=_Rankings)


class _ClientError(Exception):
    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _shown(text: str) -> str:
    """An id or path from the request, quoted and cut short for an error message."""
    return repr(text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "...")


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode() + b"\n"


class ReadApi:
    """Answers ``/v1/`` requests from the committed state.

    ``committed_seq`` is read per request (the daemon's last committed seq); ``token``,
    when set, must come as ``Authorization: Bearer <token>``; ``host`` is the address
    the server is bound to: off loopback a token is required.
    """

    def __init__(
        self,
        reads: CommittedReads,
        committed_seq: Callable[[], int],
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.reads = reads
        self._committed_seq = committed_seq
        self._token = token.encode() if token else None
        self._open = host in _LOOPBACK_HOSTS or host.startswith("127.")
        self._rankings: CostBoundedCache[_Rankings] = CostBoundedCache(
            _rankings, _RANKINGS_COST_FACTOR, _RANKINGS_MIN_INTERVAL_S
        )

    def authorize(self, authorization: str) -> Reply | None:
        """None if the request may be served, else the error reply. The token is compared
        in constant time and never appears in a reply or a log line."""
        if self._token is None:
            if self._open:
                return None
            message = (
                "the read API is off on a non-loopback address without a token: set "
                "http.read_token_file (or CLEARING_HTTP_READ_TOKEN)"
            )
            return HTTPStatus.FORBIDDEN, error_body(message)
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given:
            return HTTPStatus.UNAUTHORIZED, error_body("missing bearer token")
        if not hmac.compare_digest(given.strip().encode(), self._token):
            return HTTPStatus.UNAUTHORIZED, error_body("wrong bearer token")
        return None

    def route(self, path: str, query: str) -> Reply | ReadQuery:
        """The reply to a ``/v1/`` request when it needs no ledger state (a bad request,
        a cached ranked list), else the ``ReadQuery`` to queue on ``reads``."""
        try:
            return self._route(path, query)
        except _ClientError as exc:
            return exc.status, error_body(str(exc))

    def _route(self, path: str, query: str) -> Reply | ReadQuery:
        parts = path.split("/")[2:]  # "", "v1", ...
        if len(parts) == 2 and parts[0] == "accounts" and parts[1]:
            _params(query, {})
            account = unquote(parts[1])
            return _one("account", account, lambda engine: engine.account_view(account))
        if len(parts) == 2 and parts[0] == "markets" and parts[1]:
            depth = _params(query, {"depth": (0, MAX_DEPTH, _DEFAULT_DEPTH)})["depth"]
            market = unquote(parts[1])
            return _one("market", market, lambda engine: engine.market_view(market, depth))
        if parts == ["system"]:
            _params(query, {})
            return ReadQuery(_system_views, _system_reply)
        if parts == ["rankings", "nearest-liquidation"]:
            limit = _params(query, {"limit": (1, MAX_LIMIT, _DEFAULT_LIMIT)})["limit"]
            return self._from_rankings(
                lambda answer: self._ranked(
                    answer, {"accounts": answer.value.nearest_liquidation[:limit]}
                )
            )
        if parts == ["rankings", "largest-positions"]:
            params = _params(query, {"limit": (1, MAX_LIMIT, _DEFAULT_LIMIT), "market": None})
            market, limit = params["market"], params["limit"]

            def largest(answer: Answer[_Rankings]) -> Reply:
                positions = answer.value.largest_positions.get(market)
                if positions is None:
                    message = f"unknown market {_shown(market)} (as of seq {answer.seq})"
                    return HTTPStatus.NOT_FOUND, error_body(message)
                return self._ranked(answer, {"market": market, "positions": positions[:limit]})

            return self._from_rankings(largest)
        message = f"no such route {_shown(path)}; see docs/read-api.yaml"
        raise _ClientError(HTTPStatus.NOT_FOUND, message)

    def _from_rankings(self, reply: Callable[[Answer[_Rankings]], Reply]) -> Reply | ReadQuery:
        cached = self._rankings.cached(self._committed_seq())
        if cached is not None:
            return reply(cached)
        rankings = self._rankings
        return ReadQuery(
            rankings.compute_or_reuse, lambda answer: reply(rankings.remember(answer.value))
        )

    def _ranked(self, answer: Answer[_Rankings], fields: dict[str, Any]) -> Reply:
        body = {"seq": answer.seq, "committed_seq": max(answer.seq, self._committed_seq())}
        return HTTPStatus.OK, msgspec.json.encode({**body, **fields}) + b"\n"


def failed_reply(exc: BaseException) -> Reply:
    """The reply to a read that got no answer: 503 (retry) when the loop did not reach a
    boundary in time or the batch before it did not commit; 500 for a bug."""
    if isinstance(exc, ReadAborted):
        return HTTPStatus.SERVICE_UNAVAILABLE, error_body(f"{exc}; retry")
    if isinstance(exc, TimeoutError):
        message = "the daemon did not reach a batch boundary in time; retry"
        return HTTPStatus.SERVICE_UNAVAILABLE, error_body(message)
    return HTTPStatus.INTERNAL_SERVER_ERROR, error_body(f"internal error: {type(exc).__name__}")


def _one(kind: str, item_id: str, view: Callable[[EngineCore], bytes | None]) -> ReadQuery:
    def reply(answer: Answer[bytes | None]) -> Reply:
        if answer.value is None:
            return HTTPStatus.NOT_FOUND, error_body(f"unknown {kind} {_shown(item_id)}")
        return HTTPStatus.OK, b'{"seq":%d,"%s":%s}\n' % (answer.seq, kind.encode(), answer.value)

    return ReadQuery(view, reply)


def _system_views(engine: EngineCore) -> list[bytes | None]:
    return [engine.account_view(account) for account in _SYSTEM_ACCOUNTS]


def _system_reply(answer: Answer[list[bytes]]) -> Reply:
    accounts = b",".join(
        _SYSTEM_KEYS[account] + body
        for account, body in zip(_SYSTEM_ACCOUNTS, answer.value, strict=True)
    )
    return HTTPStatus.OK, b'{"seq":%d,"accounts":{%s}}\n' % (answer.seq, accounts)


def _params(query: str, allowed: dict[str, tuple[int, int, int] | None]) -> dict[str, Any]:
    """The query's parameters: each of ``allowed`` once at most, an integer in
    [low, high] (default when absent) or, for None, a required string; else 400."""
    if not query and all(bounds is not None for bounds in allowed.values()):
        return {name: bounds[2] for name, bounds in allowed.items()}  # type: ignore[index]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise _ClientError(HTTPStatus.BAD_REQUEST, "malformed query string") from None
    given: dict[str, str] = {}
    for name, value in pairs:
        if name not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            message = f"unknown query parameter {_shown(name)} (this route takes: {names})"
            raise _ClientError(HTTPStatus.BAD_REQUEST, message)
        if name in given:
            raise _ClientError(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} given twice")
        given[name] = value
    out: dict[str, Any] = {}
    for name, bounds in allowed.items():
        value = given.get(name)
        if bounds is None:
            if not value:
                raise _ClientError(HTTPStatus.BAD_REQUEST, f"query parameter {name!r} is required")
            out[name] = value
            continue
        low, high, default = bounds
        if value is None:
            out[name] = default
        elif value.isascii() and value.isdigit() and len(value) <= 6 and low <= int(value) <= high:
            out[name] = int(value)
        else:
            message = f"query parameter {name!r} must be an integer from {low} to {high}"
            raise _ClientError(HTTPStatus.BAD_REQUEST, message)
    return out
