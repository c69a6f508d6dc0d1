#!/usr/bin/env python3
"""A real single-node Apache Kafka (KRaft) broker for tests, CI and humans.

Stdlib only, so it runs before the project's dependencies are installed.

    python tools/kafka_local.py fetch                 # download jars into the cache
    python tools/kafka_local.py start [--port N] [--dir D] [--foreground] [--tls]
    python tools/kafka_local.py status [--dir D]
    python tools/kafka_local.py stop [--dir D]

`start` (without --foreground) detaches the broker, waits until it answers a
Metadata request, prints `KAFKA_BOOTSTRAP=127.0.0.1:PORT` and `KAFKA_PID=N` (eval-able
in a shell) and exits; `stop` finds it again via the state file in --dir.

From Python (tests): ``with LocalKafka() as k: k.bootstrap`` or start()/stop()/
restart()/kill()/close().

Jars come from Maven Central via `mvn dependency:copy-dependencies` (the core artifact
`org.apache.kafka:kafka_2.13` plus its runtime deps plus an slf4j->log4j2 binding) and
are cached in ${CLEARING_CACHE:-~/.cache/clearing}/kafka-<VERSION>/libs, so a second
fetch is an instant no-op and needs no network.

VERSION CHOICE: see KAFKA_VERSION below.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType

# Why 4.4.0: it is the newest Apache Kafka release on Maven Central (checked 2026-11 with
# `mvn versions:display-dependency-updates`), and aiokafka 0.14 passes every test in
# tests/integration/test_kafka_broker.py against it: transactional producer,
# read_committed consumer, send_offsets_to_transaction, consumer groups, fencing,
# restart/crash recovery (4.3.1 passes the same suite). Kafka 4.x removed the pre-2.1
# protocol versions (KIP-896), but every request aiokafka 0.14 can send still has a
# version the broker accepts -- notably aiokafka only speaks v0 of InitProducerId,
# AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and TxnOffsetCommit, and 4.4 still
# serves v0 of all five. test_aiokafka_protocol_versions_overlap_broker guards this on
# every bump. No fallback to 3.x was needed.
KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
# CLEARING_KAFKA_VERSION=x.y.z overrides it (to try a new release with the same tests).
VERSION_ENV = "CLEARING_KAFKA_VERSION"

MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
STATE_FILE = "kafka_local.json"
NODE_ID = 1
DEFAULT_HEAP = "512m"
DEFAULT_START_TIMEOUT = 90.0  # 2-core CI: a cold JVM + KRaft election takes ~5-15 s.

# log4j2 in the properties syntax: needs no YAML/JSON parser on the classpath and is
# understood by every log4j2 version Kafka 4.x ships. Everything goes to one file.
LOG4J2_PROPERTIES = """\
status = warn
name = clearing-kafka-local
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

# reload4j/log4j1 syntax, only used if a Kafka 3.x version is ever selected.
LOG4J1_PROPERTIES = """\
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=${kafka.logs.dir}/server.log
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
"""


class KafkaLocalError(RuntimeError):
    """Fetching, formatting or starting the local broker failed."""


# --------------------------------------------------------------------------- fetch


def default_version() -> str:
    return os.environ.get(VERSION_ENV) or KAFKA_VERSION


def cache_root() -> Path:
    env = os.environ.get("CLEARING_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "clearing"


def kafka_home(version: str | None = None) -> Path:
    return cache_root() / f"kafka-{version or default_version()}"


def libs_dir(version: str | None = None) -> Path:
    return kafka_home(version) / "libs"


_POM = """\
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>clearing.local</groupId>
  <artifactId>kafka-broker-libs</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{scala}</artifactId>
      <version>{version}</version>
    </dependency>
  </dependencies>
</project>
"""


def _run_mvn(args: list[str], cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaLocalError("`mvn` not found on PATH; it is needed once to fetch Kafka jars")
    proc = subprocess.run(
        [mvn, "-q", "-B", "-Dstyle.color=never", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-4000:]
        raise KafkaLocalError(f"mvn {' '.join(args)} failed (rc={proc.returncode}):\n{tail}")


def _jar_version(libs: Path, artifact: str) -> str | None:
    """Version of `artifact-<version>.jar` in libs (e.g. log4j-core-2.25.4.jar)."""
    for jar in libs.glob(f"{artifact}-*.jar"):
        rest = jar.name[len(artifact) + 1 : -len(".jar")]
        if rest[:1].isdigit():
            return rest
    return None


def fetch(version: str | None = None, *, verbose: bool = False) -> Path:
    """Make sure the broker jars for `version` are cached; return the libs dir."""
    version = version or default_version()
    home = kafka_home(version)
    libs = home / "libs"
    marker = libs / ".complete"
    if marker.exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    # Several pytest processes may fetch concurrently: serialise on a lock file.
    with open(home / ".fetch.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return libs
        if verbose:
            print(f"fetching kafka_{SCALA_VERSION}:{version} with mvn ...", file=sys.stderr)
        (home / "pom.xml").write_text(_POM.format(scala=SCALA_VERSION, version=version))
        tmp = home / f"libs.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _run_mvn(
            [
                "dependency:copy-dependencies",
                "-DincludeScope=runtime",
                f"-DoutputDirectory={tmp}",
            ],
            home,
        )
        # The core pom does not bring an slf4j binding (the tarball adds it), so without
        # one the broker's own logging is a NOP. Add the binding matching the backend.
        log4j2 = _jar_version(tmp, "log4j-core")
        slf4j = _jar_version(tmp, "slf4j-api")
        binding: str | None = None
        if log4j2 and not _jar_version(tmp, "log4j-slf4j-impl"):
            # slf4j 1.7 API -> log4j-slf4j-impl; slf4j 2.x -> log4j-slf4j2-impl.
            art = "log4j-slf4j2-impl" if slf4j and slf4j.startswith("2.") else "log4j-slf4j-impl"
            binding = f"org.apache.logging.log4j:{art}:{log4j2}"
        elif _jar_version(tmp, "reload4j") and slf4j and not _jar_version(tmp, "slf4j-reload4j"):
            binding = f"org.slf4j:slf4j-reload4j:{slf4j}"
        if binding:
            _run_mvn(
                [
                    "dependency:copy",
                    f"-Dartifact={binding}",
                    f"-DoutputDirectory={tmp}",
                    "-Dtransitive=false",
                ],
                home,
            )
        if not list(tmp.glob(f"kafka_{SCALA_VERSION}-{version}.jar")):
            raise KafkaLocalError(f"mvn ran but {tmp} has no kafka_{SCALA_VERSION} jar")
        (tmp / ".complete").write_text(f"kafka_{SCALA_VERSION}:{version}\n")
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    return libs


# --------------------------------------------------------------- wire-level probe
# A minimal Kafka protocol client (ApiVersions v0 + Metadata v4..v8) so that readiness
# can be checked without aiokafka: the broker only answers Metadata with itself in the
# broker list once it is registered, unfenced and serving requests.


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"kafka_local"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    resp = _recv_exact(sock, size)
    if struct.unpack(">i", resp[:4])[0] != corr:
        raise KafkaLocalError("correlation id mismatch")
    return resp[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def api_versions(host: str, port: int, timeout: float = 5.0) -> dict[int, tuple[int, int]]:
    """ApiVersions v0: {api_key: (min_version, max_version)} as the broker advertises."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        resp = _request(sock, 18, 0, 1, b"")
    err, n = struct.unpack(">hi", resp[:6])
    if err != 0:
        raise KafkaLocalError(f"ApiVersions error_code={err}")
    out: dict[int, tuple[int, int]] = {}
    for i in range(n):
        key, lo, hi = struct.unpack(">hhh", resp[6 + 6 * i : 12 + 6 * i])
        out[key] = (lo, hi)
    return out


def probe(host: str, port: int, timeout: float = 5.0) -> int:
    """Return the number of brokers in a Metadata response; raise if not serving."""
    versions = api_versions(host, port, timeout)
    lo, hi = versions.get(3, (0, -1))
    version = max(lo, 4)
    if version > min(hi, 8):  # v9+ is the flexible encoding; not worth implementing here
        raise KafkaLocalError(f"broker Metadata versions {lo}..{hi} not probe-able")
    body = struct.pack(">ib", -1, 0)  # topics=null (all), allow_auto_topic_creation=false
    if version >= 8:
        body += struct.pack(">bb", 0, 0)  # include cluster/topic authorized operations
    with socket.create_connection((host, port), timeout=timeout) as sock:
        resp = _request(sock, 3, version, 2, body)
    _throttle, n_brokers = struct.unpack(">ii", resp[:8])
    return int(n_brokers)


# -------------------------------------------------------------------------- TLS
# Certificates for a TLS listener, made with the `openssl` command (no Python package
# needed): a CA, and a broker certificate it signs for 127.0.0.1 and localhost.


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise KafkaLocalError("`openssl` not found on PATH; the TLS listener needs it")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise KafkaLocalError(f"openssl {args[0]} failed: {(proc.stdout + proc.stderr)[-2000:]}")


def make_ca(directory: Path, name: str = "ca") -> Path:
    """A self-signed CA (``name``.pem, ``name``.key in ``directory``); returns the cert."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "7",
        "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-subj", f"/CN=clearing test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip
    return directory / f"{name}.pem"


def make_broker_tls(directory: Path) -> Path:
    """A CA (``ca.pem``) and a broker keystore it signed (``broker-keystore.pem``: the
    PKCS#8 key, then the certificate); returns the keystore."""
    make_ca(directory)
    (directory / "broker.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key",
        "-out", "broker.csr", "-subj", "/CN=127.0.0.1", cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", "broker.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "7", "-extfile", "broker.ext", "-out", "broker.pem",
        cwd=directory,
    )  # fmt: skip
    keystore = directory / "broker-keystore.pem"
    keystore.write_text(
        (directory / "broker.key").read_text() + (directory / "broker.pem").read_text()
    )
    return keystore


# ----------------------------------------------------------------------- broker


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports. Bind-to-0 then release: racy against other
    processes in theory, fine on a test box; the sockets are held together so that one
    broker's listeners never get the same port twice (a run of 1M-input benchmarks
    once did, and the broker refused to format its storage)."""
    with contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaLocalError("`java` not found (need a JRE >= 17 for Kafka 4.x)")
    return java


def _random_cluster_id() -> str:
    # Same format as `kafka-storage random-uuid`: url-safe base64 of 16 bytes, unpadded,
    # and like Kafka's own Uuid.randomUuid never starting with "-": the storage tool's
    # argument parser would take such an id for an option (1 start in 64 failed so).
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(path: Path, n: int = 60) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(lines[-n:])


def _set_pdeathsig() -> None:
    # Runs in the child between fork and exec: SIGKILL the JVM if the parent dies, so a
    # crashed pytest never leaves an orphan broker holding ports and 600 MB of RAM.
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1


def _pid_is_our_broker(pid: int, data_dir: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return MAIN_CLASS in cmd and str(data_dir) in cmd


class LocalKafka:
    """One KRaft broker+controller process on 127.0.0.1.

    `stop()` and `kill()` keep ports and data dir, so `start()` afterwards (or
    `restart()`) brings the same broker back with its topics, offsets and
    transaction state. `close()` also deletes a data dir that this object created.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        version: str | None = None,
        heap: str = DEFAULT_HEAP,
        overrides: Mapping[str, str] | None = None,
        start_timeout: float = DEFAULT_START_TIMEOUT,
        die_with_parent: bool = True,
        sasl_plain_users: Mapping[str, str] | None = None,
        sasl_port: int | None = None,
        full_jit: bool = False,
        tls: bool = False,
    ) -> None:
        """``sasl_plain_users`` ({user: password}) adds a second listener on
        ``sasl_port`` (``sasl_bootstrap``) that requires SASL/PLAIN over plaintext; the
        PLAINTEXT listener (``bootstrap``, probes, inter-broker) stays as it is.
        ``tls``: a TLS listener too (``ssl_bootstrap``; and ``sasl_ssl_bootstrap``,
        SASL/PLAIN over TLS, with ``sasl_plain_users``), its certificate signed by a CA
        generated for this broker (``ca_file``, in ``dir``/tls) with ``openssl``.
        ``full_jit``: the JVM's optimising compiler too (throughput benchmarks), instead
        of the C1-only JIT that starts fastest (tests)."""
        self.version = version or default_version()
        spare = iter(free_ports(5))  # distinct: a broker's listeners may not share one
        self.port = port or next(spare)
        self.controller_port = controller_port or next(spare)
        self._owns_dir = data_dir is None
        self.dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="clearing-kafka-"))
        self.dir = self.dir.resolve()
        self.heap = heap
        self.full_jit = full_jit
        self.overrides = dict(overrides or {})
        self.start_timeout = start_timeout
        self.die_with_parent = die_with_parent
        self.sasl_plain_users = dict(sasl_plain_users or {})
        self.sasl_port = (sasl_port or next(spare)) if self.sasl_plain_users else None
        self.tls = tls
        self.ssl_port = next(spare) if tls else None
        self.sasl_ssl_port = next(spare) if tls and self.sasl_plain_users else None
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds: float | None = None  # wall time of the last start()
        self._atexit_registered = False

    # -- paths
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT listener's "127.0.0.1:PORT" (needs ``sasl_plain_users``)."""
        if self.sasl_port is None:
            raise KafkaLocalError("no SASL listener: pass sasl_plain_users={user: password}")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def ssl_bootstrap(self) -> str:
        """The SSL listener's "127.0.0.1:PORT" (needs ``tls``)."""
        if self.ssl_port is None:
            raise KafkaLocalError("no TLS listener: pass tls=True")
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """The SASL_SSL listener's "127.0.0.1:PORT" (needs ``tls`` and users)."""
        if self.sasl_ssl_port is None:
            raise KafkaLocalError("no SASL_SSL listener: pass tls=True and sasl_plain_users")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    @property
    def tls_dir(self) -> Path:
        return self.dir / "tls"

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the broker's (``tls``)."""
        return self.tls_dir / "ca.pem"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def stdout_log(self) -> Path:
        return self.log_dir / "kafka.out"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- config
    def server_properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # Static quorum: works with a plain `format` on 3.x and 4.x alike.
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            # Internal topics: one replica, and few partitions so the first consumer
            # group / transactional producer does not wait for 50 partitions to load.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # The standby tests use a short control-group session (the default minimum
            # is 6 s); production keeps the broker's bounds.
            "group.min.session.timeout.ms": "1000",
            # Topics must be created explicitly (like production): typos fail loudly.
            "auto.create.topics.enable": "false",
            # After a kill() the restarted broker cannot register until the controller
            # expires the dead incarnation's session (default 9 s): shorten it.
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.check.interval.ms": "300000",
        }
        extra = []
        if self.sasl_plain_users:
            extra.append(("SASL_PLAINTEXT", self.sasl_port))
            props["sasl.enabled.mechanisms"] = "PLAIN"
            users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_plain_users.items())
            jaas = f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
            props["listener.name.sasl_plaintext.plain.sasl.jaas.config"] = jaas
            if self.tls:
                extra.append(("SASL_SSL", self.sasl_ssl_port))
                props["listener.name.sasl_ssl.plain.sasl.jaas.config"] = jaas
        if self.tls:
            extra.append(("SSL", self.ssl_port))
            # A PEM keystore (Kafka >= 2.7): the private key and the certificate chain in
            # one file, no keytool needed; the key is unencrypted, so no key password.
            props["ssl.keystore.type"] = "PEM"
            props["ssl.keystore.location"] = str(self.tls_dir / "broker-keystore.pem")
            props["ssl.client.auth"] = "none"
        for name, port in extra:
            props["listeners"] += f",{name}://127.0.0.1:{port}"
            props["advertised.listeners"] += f",{name}://127.0.0.1:{port}"
            props["listener.security.protocol.map"] += f",{name}:{name}"
        props.update(self.overrides)
        return props

    def _write_config(self) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if self.tls and not (self.tls_dir / "broker-keystore.pem").exists():
            make_broker_tls(self.tls_dir)
        cfg = self.dir / "server.properties"
        cfg.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        (self.dir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        (self.dir / "log4j.properties").write_text(LOG4J1_PROPERTIES)
        return cfg

    @property
    def jvm_flags(self) -> list[str]:
        """The JVM's GC and JIT flags (benchmarks report them)."""
        # Small box (2 cores): the serial GC uses the least CPU; the C1-only JIT starts
        # fastest, which is what tests need; benchmarks ask for the full JIT.
        return ["-XX:+UseSerialGC"] + ([] if self.full_jit else ["-XX:TieredStopAtLevel=1"])

    def _jvm_cmd(self, libs: Path, main: str, *args: str) -> list[str]:
        return [
            _java(),
            f"-Xmx{self.heap}",
            "-Xms64m",
            *self.jvm_flags,
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.log_dir}",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            "-cp",
            f"{libs}/*",
            main,
            *args,
        ]

    def _format_if_needed(self, libs: Path, cfg: Path) -> None:
        if (self.dir / "data" / "meta.properties").exists():
            return  # already formatted: restart keeps cluster id and all data
        cmd = self._jvm_cmd(
            libs, STORAGE_TOOL, "format", "--config", str(cfg),
            "--cluster-id", _random_cluster_id(), "--ignore-formatted",
        )  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise KafkaLocalError(
                f"kafka-storage format failed (rc={proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )

    # -- lifecycle
    def start(self) -> LocalKafka:
        if self.is_running():
            return self
        t0 = time.monotonic()
        libs = fetch(self.version)
        cfg = self._write_config()
        self._format_if_needed(libs, cfg)
        cmd = self._jvm_cmd(libs, MAIN_CLASS, str(cfg))
        # PDEATHSIG is tied to the *thread* that forks; a worker thread (e.g.
        # asyncio.to_thread) exiting would kill the broker, so only use it on main.
        use_pdeathsig = (
            self.die_with_parent and threading.current_thread() is threading.main_thread()
        )
        with open(self.stdout_log, "ab") as out:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,  # Ctrl-C in the terminal must not hit the broker
                preexec_fn=_set_pdeathsig if use_pdeathsig else None,
            )
        if self.die_with_parent and not self._atexit_registered:
            atexit.register(self._atexit)
            self._atexit_registered = True
        self._write_state()
        try:
            self._wait_ready(t0)
        except BaseException:
            self.kill()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.start_timeout
        last_err: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            rc = self.proc.poll()
            if rc is not None:
                raise KafkaLocalError(self._failure(f"broker exited with rc={rc} during startup"))
            try:
                if probe("127.0.0.1", self.port, timeout=2.0) >= 1:
                    return
            except (OSError, KafkaLocalError, struct.error) as exc:
                last_err = exc
            time.sleep(0.2)
        raise KafkaLocalError(
            self._failure(f"broker not ready after {self.start_timeout:.0f}s ({last_err!r})")
        )

    def _failure(self, what: str) -> str:
        # The root cause is usually the first ERROR/FATAL; the tail is shutdown noise.
        try:
            lines = self.server_log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        first = [i for i, line in enumerate(lines) if " ERROR " in line or " FATAL " in line]
        cause = "\n".join(lines[first[0] : first[0] + 15]) if first else "(none)"
        return (
            f"{what}\n--- first ERROR in {self.server_log} ---\n{cause}\n"
            f"--- {self.server_log} (tail) ---\n{_tail(self.server_log, 40)}\n"
            f"--- {self.stdout_log} (tail) ---\n{_tail(self.stdout_log, 30)}"
        )

    def _write_state(self) -> None:
        state = {
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "sasl_port": self.sasl_port,
            "ssl_port": self.ssl_port,
            "sasl_ssl_port": self.sasl_ssl_port,
            "version": self.version,
            "dir": str(self.dir),
        }
        (self.dir / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful shutdown (SIGTERM, controlled shutdown); keeps the data dir."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: simulates a broker crash; start() afterwards recovers the logs."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc = None

    def restart(self) -> LocalKafka:
        """Stop and start again on the same ports and data dir."""
        self.stop()
        return self.start()

    def close(self) -> None:
        self.stop()
        if self._owns_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _atexit(self) -> None:
        with contextlib.suppress(Exception):
            self.kill()

    def __enter__(self) -> LocalKafka:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def local_kafka(**kwargs: object) -> Iterator[LocalKafka]:
    """`with local_kafka() as k:` -- same as `with LocalKafka(...)`."""
    broker = LocalKafka(**kwargs)  # type: ignore[arg-type]
    with broker:
        yield broker


# -------------------------------------------------------------------------- CLI


def _default_cli_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"clearing-kafka-{os.getuid()}"


def _read_state(data_dir: Path) -> dict[str, object]:
    try:
        return dict(json.loads((data_dir / STATE_FILE).read_text()))
    except (OSError, ValueError):
        return {}


def _cmd_fetch(args: argparse.Namespace) -> int:
    t0 = time.monotonic()
    libs = fetch(args.version, verbose=True)
    n = len(list(libs.glob("*.jar")))
    print(f"{libs} ({n} jars, {time.monotonic() - t0:.1f}s)")
    return 0


def _cmd_start(args: argparse.Namespace) -> int:
    data_dir = Path(args.dir) if args.dir else _default_cli_dir()
    state = _read_state(data_dir)
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_is_our_broker(pid, data_dir.resolve()):
        print(f"already running: KAFKA_BOOTSTRAP={state['bootstrap']} KAFKA_PID={pid}")
        return 1
    data_dir.mkdir(parents=True, exist_ok=True)
    # Reuse the previous ports of this dir unless told otherwise (same broker identity).
    port = args.port or state.get("port")
    cport = state.get("controller_port")
    broker = LocalKafka(
        port=int(port) if isinstance(port, int | str) and port else None,
        controller_port=int(cport) if isinstance(cport, int) else None,
        data_dir=data_dir,
        version=args.version,
        heap=args.heap,
        start_timeout=args.timeout,
        die_with_parent=args.foreground,
        tls=args.tls,
    )
    try:
        broker.start()
    except KafkaLocalError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"KAFKA_BOOTSTRAP={broker.bootstrap}")
    print(f"KAFKA_PID={broker.pid}")
    print(f"KAFKA_DIR={broker.dir}")
    if args.tls:
        print(f"KAFKA_SSL_BOOTSTRAP={broker.ssl_bootstrap}")
        print(f"KAFKA_CA_FILE={broker.ca_file}")
    print(f"# started in {broker.start_seconds:.1f}s; log: {broker.server_log}", file=sys.stderr)
    sys.stdout.flush()
    if not args.foreground:
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.is_set() and broker.is_running():
        stop.wait(1.0)
    rc = 0 if stop.is_set() else 3  # 3: the broker died on its own
    broker.stop()
    return rc


def _cmd_stop(args: argparse.Namespace) -> int:
    data_dir = (Path(args.dir) if args.dir else _default_cli_dir()).resolve()
    pid = _read_state(data_dir).get("pid")
    if not isinstance(pid, int) or not _pid_is_our_broker(pid, data_dir):
        print(f"no broker running for {data_dir}")
        return 0
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and _pid_is_our_broker(pid, data_dir):
        time.sleep(0.2)
    if _pid_is_our_broker(pid, data_dir):
        os.kill(pid, signal.SIGKILL)
    print(f"stopped pid {pid}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    data_dir = (Path(args.dir) if args.dir else _default_cli_dir()).resolve()
    state = _read_state(data_dir)
    pid = state.get("pid")
    if isinstance(pid, int) and _pid_is_our_broker(pid, data_dir):
        port = int(str(state["port"]))
        try:
            n = probe("127.0.0.1", port)
        except (OSError, KafkaLocalError, struct.error) as exc:
            print(f"pid {pid} running but not serving on {port}: {exc!r}")
            return 1
        print(f"KAFKA_BOOTSTRAP={state['bootstrap']} KAFKA_PID={pid} brokers={n}")
        return 0
    print(f"no broker running for {data_dir}")
    return 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--version", default=default_version(), help="Kafka version (default %(default)s)"
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("fetch", help="download the broker jars into the cache")
    st = sub.add_parser("start", help="start a broker (detached unless --foreground)")
    st.add_argument("--port", type=int, default=None, help="client port (default: free port)")
    st.add_argument("--dir", default=None, help=f"data dir (default {_default_cli_dir()})")
    st.add_argument("--foreground", action="store_true", help="run until Ctrl-C/SIGTERM")
    st.add_argument("--heap", default=DEFAULT_HEAP)
    st.add_argument("--timeout", type=float, default=DEFAULT_START_TIMEOUT)
    st.add_argument(
        "--tls", action="store_true", help="add an SSL listener (a CA made with openssl)"
    )
    sp = sub.add_parser("stop", help="stop the broker started with `start`")
    sp.add_argument("--dir", default=None)
    sp.add_argument("--timeout", type=float, default=30.0)
    ss = sub.add_parser("status", help="is the broker of --dir up?")
    ss.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    try:
        handler = {
            "fetch": _cmd_fetch, "start": _cmd_start, "stop": _cmd_stop, "status": _cmd_status,
        }[args.cmd]  # fmt: skip
        return handler(args)
    except KafkaLocalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
