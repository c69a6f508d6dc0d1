"""Daemon configuration: a TOML file, then ``CLEARING_*`` environment overrides, validated
once at start.

Precedence: built-in defaults < the TOML file < environment variables. Every key of the
file has an environment name made of ``CLEARING_`` and its dotted path in upper case with
``_`` for ``.``: ``kafka.bootstrap_servers`` is ``CLEARING_KAFKA_BOOTSTRAP_SERVERS`` (a
comma-separated list there), ``kafka.security.sasl_password`` is
``CLEARING_KAFKA_SECURITY_SASL_PASSWORD``. Environment variables that match no key are
ignored (the ``CLEARING_`` prefix is shared with tools such as ``tools/kafka_local.py``);
unknown keys in the file are errors.

Invalid configuration raises ``ConfigError`` whose message names the key (or the
environment variable) and what is expected. Secrets are ``Secret`` objects: their repr,
str and ``redacted()`` output never show the value.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args, get_origin

import msgspec
from msgspec import Meta, Struct, field

from clearing.errors import ConfigError

__all__ = [
    "BatchConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "HttpConfig",
    "KafkaConfig",
    "KafkaSecurity",
    "LimitsConfig",
    "LogConfig",
    "RiskConfig",
    "Secret",
    "SnapshotConfig",
    "TopicsConfig",
    "env_name",
    "load_config",
]

ENV_PREFIX: Final = "CLEARING_"
_MiB: Final = 1024 * 1024
_DAY_MS: Final = 24 * 3600 * 1000


class Secret:
    """A string that never shows itself in reprs, logs or ``redacted()`` output."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# -- value types with their constraints (msgspec checks them and names the key) ----------

PositiveInt = Annotated[int, Meta(ge=1)]
NonNegativeInt = Annotated[int, Meta(ge=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]
# Used in the transactional id and the consumer group id: keep it to Kafka's safe set.
LedgerId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,200}$")]
TopicName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9._-]{1,249}$")]
HostPort = Annotated[str, Meta(pattern=r"^\S+:[0-9]{1,5}$")]


class _Section(Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class KafkaSecurity(_Section):
    """Passed to aiokafka as security_protocol, an SSL context and SASL credentials."""

    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: Secret | None = None
    # Or read a secret from a file (first line), e.g. a systemd credential
    # (Environment=CLEARING_KAFKA_SECURITY_SASL_PASSWORD_FILE=%d/sasl-password).
    ssl_password_file: str | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    sasl_password_file: str | None = None

    def __post_init__(self) -> None:
        for key in ("ssl_password", "sasl_password"):
            if getattr(self, key) is not None and getattr(self, f"{key}_file") is not None:
                raise ValueError(f"set {key} or {key}_file, not both")
        if self.protocol.startswith("SASL") and (
            not self.sasl_username or (self.sasl_password is None and not self.sasl_password_file)
        ):
            raise ValueError(
                f"protocol {self.protocol} needs sasl_username and sasl_password (or "
                f"sasl_password_file) to be set"
            )
        if self.ssl_keyfile and not self.ssl_certfile:
            raise ValueError("ssl_keyfile is set without ssl_certfile")


class KafkaConfig(_Section):
    bootstrap_servers: Annotated[list[HostPort], Meta(min_length=1)] = field(
        default_factory=lambda: ["127.0.0.1:9092"]
    )
    client_id: str = "clearing"
    request_timeout_ms: PositiveInt = 30_000
    # At start, how long to wait for a bootstrap server to answer before giving up with
    # one line and exit 6 (a broker restarting is worth waiting for; a typo is not).
    connect_timeout_s: PositiveFloat = 30.0
    # The coordinator aborts a transaction open longer than this; a batch takes far less.
    transaction_timeout_ms: PositiveInt = 60_000
    security: KafkaSecurity = field(default_factory=KafkaSecurity)


class TopicsConfig(_Section):
    """Topic names, and the settings ``clearing topics create`` uses."""

    fills: TopicName = "clearing.fills"
    oracle: TopicName = "clearing.oracle"
    book: TopicName = "clearing.book"
    admin: TopicName = "clearing.admin"  # market, deposit, withdraw
    events: TopicName = "clearing.events"
    journal: TopicName = "clearing.journal"
    dlq: TopicName = "clearing.dlq"
    # Compacted: every snapshot the daemon writes, in checksummed chunks plus a manifest,
    # so that a machine with an empty disk recovers without replaying the whole journal.
    snapshots: TopicName = "clearing.snapshots"
    # One partition: the consumer group member assigned it is the active daemon.
    control: TopicName = "clearing.control"
    replication_factor: PositiveInt = 3
    # None: replication_factor - 1 (at least 1), so one broker may be down without
    # blocking writes while every commit is still on two replicas.
    min_insync_replicas: PositiveInt | None = None
    input_partitions: PositiveInt = 1
    events_partitions: PositiveInt = 12
    dlq_partitions: PositiveInt = 1
    events_retention_ms: Annotated[int, Meta(ge=-1)] = 7 * _DAY_MS
    dlq_retention_ms: Annotated[int, Meta(ge=-1)] = 30 * _DAY_MS

    def __post_init__(self) -> None:
        names = [self.fills, self.oracle, self.book, self.admin, self.events, self.journal]
        names.extend((self.dlq, self.snapshots, self.control))
        if len(set(names)) != len(names):
            raise ValueError("the nine topic names must all be different")
        if self.min_insync_replicas is not None and (
            self.min_insync_replicas > self.replication_factor
        ):
            raise ValueError("min_insync_replicas must not exceed replication_factor")

    @property
    def inputs(self) -> tuple[str, ...]:
        """Input topics in their within-batch sequencing rank (ties on timestamp)."""
        return (self.admin, self.oracle, self.book, self.fills)

    @property
    def min_isr(self) -> int:
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return max(1, self.replication_factor - 1)


class BatchConfig(_Section):
    """One batch = one Kafka transaction."""

    # Binds only when inputs are waiting (a backlog, a restart's catch-up): live traffic
    # makes small batches anyway. Each transaction has a fixed cost on both sides (five
    # round trips, markers on every partition written): 10,000 measured 1.18x the
    # throughput of 5000 and 9 % less daemon CPU (20,000: no better), at ~60-80 ms per
    # full batch (docs/bench-kafka.md, session 6).
    max_records: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    max_bytes: PositiveInt = 4 * _MiB
    poll_timeout_ms: PositiveInt = 100


class LimitsConfig(_Section):
    # Inputs above this are rejected to the DLQ without being decoded.
    max_message_bytes: PositiveInt = 1 * _MiB
    # One journal message holds an input and all its outputs (a liquidation cascade can
    # produce many); the journal topic's max.message.bytes is set to this.
    max_journal_record_bytes: PositiveInt = 16 * _MiB
    # The full ledger invariant check is O(accounts): run it every this many inputs.
    invariant_check_inputs: PositiveInt = 100_000

    def __post_init__(self) -> None:
        if self.max_journal_record_bytes < self.max_message_bytes + 4096:
            raise ValueError(
                "max_journal_record_bytes must exceed max_message_bytes by at least 4096 "
                "(a journal record holds the input plus its outputs)"
            )


class EngineConfig(_Section):
    # native: the Rust core (pip install ./native); python: the reference core; auto:
    # native when installed. Both give the same outputs, state and snapshots.
    core: Literal["auto", "native", "python"] = "auto"
    # The clearing rules (SPEC §9) of a NEW ledger, i.e. when the journal topic is empty;
    # unset means 1. An existing ledger keeps the version its journal topic recorded: a
    # value here that differs from it stops the daemon at start (exit 2).
    rules_version: int | None = None

    def __post_init__(self) -> None:
        from clearing.engine import native_available
        from clearing.engine.rules_v2 import RULES_VERSIONS

        if self.rules_version is not None and self.rules_version not in RULES_VERSIONS:
            known = " or ".join(map(str, RULES_VERSIONS))
            raise ValueError(
                f"rules_version = {self.rules_version}: this build knows rules versions "
                f"{known} (leave it unset for version 1)"
            )
        if self.core == "native" and not native_available():
            raise ValueError(
                "core = 'native' but the native engine core is not installed: build it with "
                "`pip install ./native` (needs a Rust toolchain), or set core = 'auto'"
            )


class SnapshotConfig(_Section):
    dir: str | None = None  # None or "": no snapshots (recovery replays the whole journal)
    every_inputs: PositiveInt = 1_000_000
    keep: PositiveInt = 3
    on_shutdown: bool = True
    # Each snapshot is also published to topics.snapshots (needs dir: the local copy is
    # what is published, and the cache a restore writes to).
    publish: bool = True
    # One chunk per Kafka message; the snapshot topic's max.message.bytes is this plus
    # framing. Each chunk carries its own CRC32C.
    chunk_bytes: Annotated[int, Meta(ge=1024, le=64 * _MiB)] = 512 * 1024
    # Snapshots kept in the topic (older ones are deleted with tombstones once a newer
    # one is complete; compaction then drops them).
    topic_keep: PositiveInt = 2


class HttpConfig(_Section):
    listen: Annotated[str, Meta(pattern=r"^(\S+:[0-9]{1,5})?$")] = "127.0.0.1:9464"  # "" = off
    # The read API's bearer token (docs/read-api.yaml), or a file whose first line is it.
    # Off a loopback address the read API answers only with one.
    read_token: Secret | None = None
    read_token_file: str | None = None

    def __post_init__(self) -> None:
        if self.read_token is not None and self.read_token_file is not None:
            raise ValueError("set read_token or read_token_file, not both")
        if self.read_token is not None and not self.read_token.get().strip():
            raise ValueError("read_token is empty")


class LogConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    json: bool = False


class DaemonConfig(_Section):
    # active: consume inputs and write the journal (one per ledger at a time, decided by
    # Kafka's group coordinator on topics.control). standby: follow the journal with a
    # warm engine and take over when the active's group membership ends.
    role: Literal["active", "standby"] = "active"
    # The control group's session: how long a dead active goes unnoticed (failover time).
    session_timeout_ms: Annotated[int, Meta(ge=1000)] = 10_000
    # A standby within this many seconds of the journal's end counts as in sync
    # (clearing_standby_in_sync; the alert when no standby is).
    standby_sync_s: PositiveFloat = 10.0
    # SIGTERM/SIGINT: finish or abort the open transaction, snapshot and exit within this.
    shutdown_timeout_s: PositiveFloat = 30.0
    # While idle, an offsets-only transaction this often notices a fencing successor.
    fence_probe_interval_s: PositiveFloat = 10.0
    # New partitions of the input topics are picked up this often.
    partition_refresh_interval_s: PositiveFloat = 30.0


class RiskConfig(_Section):
    """Fund adequacy in the background (docs/fund-risk.md): what ``clearing risk`` would
    say about the committed state, recomputed every ``interval_s`` in a forked child."""

    interval_s: NonNegativeInt = 0  # 0 = off
    horizon_s: PositiveInt = 3600  # one scenario = the joint move over one horizon
    step_s: PositiveInt | None = None  # between interval ends; default: the horizon
    # The oracle history kept in memory (about 100 bytes per tick) and used for scenarios.
    window_s: PositiveInt = 86_400
    scenarios: PositiveInt = 1000  # at most; a seeded sample beyond
    scale: Annotated[str, Meta(pattern=r"^[0-9]+(\.[0-9]+)?$")] = "1"  # exact decimal
    seed: int = 1

    def __post_init__(self) -> None:
        if self.window_s < self.horizon_s:
            raise ValueError(
                f"window_s ({self.window_s}) is shorter than horizon_s ({self.horizon_s}): "
                f"no scenario would fit"
            )


class Config(_Section):
    ledger_id: LedgerId
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    topics: TopicsConfig = field(default_factory=TopicsConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    snapshot: SnapshotConfig = field(default_factory=SnapshotConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    risk: RiskConfig = field(default_factory=RiskConfig)

    @property
    def transactional_id(self) -> str:
        """Stable per ledger: a second instance fences the first (single writer)."""
        return f"clearing-{self.ledger_id}"

    @property
    def group_id(self) -> str:
        return f"clearing-{self.ledger_id}"

    @property
    def snapshot_dir(self) -> str | None:
        return self.snapshot.dir or None

    def redacted(self) -> dict[str, Any]:
        """The configuration as plain data with every secret replaced by ``"********"``."""
        return msgspec.to_builtins(self, enc_hook=_redact)  # type: ignore[no-any-return]


# -- loading -----------------------------------------------------------------------------


def _redact(value: object) -> object:
    if isinstance(value, Secret):
        return "********"
    raise NotImplementedError(type(value))


def _dec_hook(kind: type, value: object) -> object:
    if kind is Secret:
        if isinstance(value, Secret):  # an environment override, already converted
            return value
        if not isinstance(value, str):
            raise TypeError(f"Expected `str`, got `{type(value).__name__}`")
        return Secret(value)
    raise NotImplementedError(kind)


def env_name(path: tuple[str, ...]) -> str:
    return ENV_PREFIX + "_".join(path).upper()


def _struct_type(kind: Any) -> type[Struct] | None:
    return kind if isinstance(kind, type) and issubclass(kind, Struct) else None


def _strip_annotated(kind: Any) -> Any:
    while get_origin(kind) is Annotated:
        kind = get_args(kind)[0]
    return kind


def _is_list(kind: Any) -> bool:
    return get_origin(_strip_annotated(kind)) is list


def _env_overrides(
    cls: type[Struct], environ: Mapping[str, str], path: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Nested dict of the environment's values for ``cls``'s keys (converted leniently)."""
    out: dict[str, Any] = {}
    for info in msgspec.structs.fields(cls):
        sub_path = (*path, info.name)
        nested = _struct_type(info.type)
        if nested is not None:
            sub = _env_overrides(nested, environ, sub_path)
            if sub:
                out[info.name] = sub
            continue
        name = env_name(sub_path)
        if name not in environ:
            continue
        raw = environ[name]
        value: Any = raw
        if _is_list(info.type):
            value = [part.strip() for part in raw.split(",") if part.strip()]
        elif raw == "" and type(None) in get_args(_strip_annotated(info.type)):
            value = None
        try:
            out[info.name] = msgspec.convert(value, info.type, strict=False, dec_hook=_dec_hook)
        except msgspec.ValidationError as exc:
            raise ConfigError(
                f"environment variable {name} ({'.'.join(sub_path)}): {_what(exc)}"
            ) from None
    return out


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_AT_RE = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_UNKNOWN_RE = re.compile(r"unknown field `(?P<key>[^`]+)`")
_MISSING_RE = re.compile(r"missing required field `(?P<key>[^`]+)`")


def _what(exc: msgspec.ValidationError) -> str:
    match = _AT_RE.match(str(exc))
    return match.group("what") if match else str(exc)


def _valid_keys(path: str) -> list[str]:
    cls: type[Struct] = Config
    for part in [p for p in path.split(".") if p]:
        nested = None
        for info in msgspec.structs.fields(cls):
            if info.name == part:
                nested = _struct_type(info.type)
        if nested is None:
            return []
        cls = nested
    return [info.name for info in msgspec.structs.fields(cls)]


def _explain(exc: msgspec.ValidationError, origin: str) -> ConfigError:
    """Turn msgspec's message into '<key>: <what is wrong>' naming the key's env var too."""
    match = _AT_RE.match(str(exc))
    what = match.group("what") if match else str(exc)
    path = (match.group("path") or "") if match else ""
    path = path.lstrip(".")
    unknown = _UNKNOWN_RE.search(what)
    if unknown:
        key = f"{path}.{unknown.group('key')}" if path else unknown.group("key")
        valid = ", ".join(_valid_keys(path))
        return ConfigError(f"{origin}: unknown key {key!r} (valid keys here: {valid})")
    missing = _MISSING_RE.search(what)
    if missing:
        key = f"{path}.{missing.group('key')}" if path else missing.group("key")
        env = env_name(tuple(key.split(".")))
        return ConfigError(f"{origin}: required key {key!r} is missing (or set {env})")
    if not path:
        return ConfigError(f"{origin}: {what}")
    if _valid_keys(path):  # a whole section (e.g. a cross-field check failed)
        return ConfigError(f"{origin}: [{path}]: {what}")
    env = env_name(tuple(path.split(".")))
    return ConfigError(f"{origin}: {path}: {what} (key {path!r} in the file, or {env})")


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML; None: defaults only), apply environment overrides, validate."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    origin = "configuration (defaults and environment)"
    if path is not None:
        origin = f"config file {path}"
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{origin}: no such file") from None
        except OSError as exc:
            raise ConfigError(f"{origin}: cannot read it ({exc.strerror})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{origin}: not valid TOML ({exc})") from None
    data = _merge(data, _env_overrides(Config, environ))
    try:
        config = msgspec.convert(data, Config, dec_hook=_dec_hook)
    except msgspec.ValidationError as exc:
        raise _explain(exc, origin) from None
    _check_files(config, origin)
    return _read_secret_files(config, origin)


def _check_files(config: Config, origin: str) -> None:
    security = config.kafka.security
    for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        value = getattr(security, key)
        if value is not None and not os.path.isfile(value):
            raise ConfigError(
                f"{origin}: kafka.security.{key}: {value!r} is not a readable file "
                f"(expected the path of a PEM file)"
            )


def _read_secret_files(config: Config, origin: str) -> Config:
    """Replace ``*_password_file`` settings by the secret they hold."""
    security = config.kafka.security
    updates: dict[str, Secret | None] = {}
    for key in ("ssl_password", "sasl_password"):
        path = getattr(security, f"{key}_file")
        if path is None:
            continue
        try:
            with open(path, encoding="utf-8") as f:
                first_line = f.readline().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{origin}: kafka.security.{key}_file: cannot read {path!r} ({exc}); "
                f"expected a file whose first line is the password"
            ) from None
        updates[key] = Secret(first_line)
        updates[f"{key}_file"] = None  # consumed: the secret itself is set now
    if updates:
        security = msgspec.structs.replace(security, **updates)
        kafka = msgspec.structs.replace(config.kafka, security=security)
        config = msgspec.structs.replace(config, kafka=kafka)
    return _read_token_file(config, origin)


def _read_token_file(config: Config, origin: str) -> Config:
    """Replace ``http.read_token_file`` by the token its first line holds."""
    path = config.http.read_token_file
    if path is None:
        return config
    try:
        with open(path, encoding="utf-8") as f:
            token = f.readline().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{origin}: http.read_token_file: cannot read {path!r} ({exc}); "
            f"expected a file whose first line is the token"
        ) from None
    if not token:
        raise ConfigError(f"{origin}: http.read_token_file: {path!r} has an empty first line")
    http = msgspec.structs.replace(config.http, read_token=Secret(token), read_token_file=None)
    return msgspec.structs.replace(config, http=http)
