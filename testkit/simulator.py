"""Deterministic fault simulation of the sequencer (VOPR-style), one seed at a time.

One process, one ``random.Random`` per concern, all derived from the seed: feeders send
realistic streams (levered fills, crashes and spikes, thin books, a small fund, round trips
that leave accounts bankrupt, so liquidations, fund draws, clawbacks and bad debt happen)
mixed with hostile inputs, in batches, to a real ``Sequencer`` (the one the Kafka daemon
runs: every batch goes through ``Sequencer.step``, on the Python or the native core) over
a real ``LocalJournal`` and snapshot directory. Faults are injected through the storage
the journal and the snapshot writer are given (``testkit.storage.FaultyStorage``), never
by patching. Between and inside batches the simulator injects:

* crashes: the sequencer is dropped without ``close`` (its file descriptors go away as the
  kernel would close them), sometimes after the batch was journaled but before the feeder
  got the acknowledgement; with ``fsync`` batch, a power loss also tears the bytes of the
  batch being written at a random byte, sometimes leaving a zero-filled tail;
* crashes inside the journal write (a random prefix of the frames reaches the file);
* I/O errors inside the journal write (ENOSPC, EIO, EDQUOT after a random prefix), fsync
  failures (EIO), a read-only file system when a segment is created (EROFS), and snapshot
  writes failing with ENOSPC;
* snapshot damage while the process is down: the newest snapshot deleted, bit-flipped,
  truncated or extended, every snapshot deleted, a stray temp file, a corrupt file named as
  a snapshot ahead of the journal;
* clean restarts, explicit snapshots, and redeliveries: each feeder commits its position
  only now and then, so after a restart it re-sends from its last committed position, and
  at any time it may re-send a window it already sent (at-least-once delivery).

The sequencer side skips what the journal already holds, per source, like ``clearing
ingest`` does with its ``file:<path>:<line>`` sources: after each restart it rebuilds each
source's position from the newest journal records (``journaled_positions``).

Checked after every step: the SPEC invariants (the engine's check, plus an independent
tally: cash sums to accepted deposits minus accepted withdrawals, positions sum to zero per
market), no user account left liquidatable or bankrupt after an input, every output of an
acknowledged batch byte-equal to a shadow engine fed exactly the journaled inputs once,
every reject as the generator expected. Every 20 steps and after every restart (on the
native core, every step, as its ledger is walked through the shadow's): the full state
(``dump_state``) equals the shadow's. After every restart: no acknowledged input lost,
nothing journaled that was not sent, the journal verifies (the open itself checks every
frame and the whole chain; ``clearing.journal.verify`` is run too after every interrupted
write and every 4th restart), the rebuilt source positions are right. Journal records are
read back (CRC and hash chain) and compared with what was submitted. At the end of a seed:
a full replay of the journal without snapshots equals the shadow, and every source position
is in the journal exactly once.

A failing seed prints the command that reproduces it (the seed, with the core, decides
everything); ``tools/simulate.py`` is the command line:

    python tools/simulate.py --seed 17                     # one seed, 20,000 inputs
    python tools/simulate.py --seeds 1-500 --jobs 2        # 500 seeds x 20,000 = 10M inputs
    python tools/simulate.py --seeds 1-4 --events 5000     # a quick look
    python tools/simulate.py --seed 17 --core native       # the native fast path
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from clearing.engine import Engine, OutputEvent, encode_output
from clearing.engine.persist import dump_state
from clearing.journal import JournalCorrupt, LocalJournal, repair_truncate, verify
from clearing.sequencer import RecoveryResult, Sequencer, encode_outputs, recover
from clearing.snapshot import list_snapshots
from testkit.storage import Fault, FaultyStorage, SimulatedCrash
from tools.fuzz_inputs import (
    Case,
    HostileGenerator,
    StreamModel,
    check_outcome,
    known_bug,
    peak_rss_bytes,
    valid_case,
)

__all__ = [
    "SeedResult",
    "Simulation",
    "SimulationFailure",
    "as_json",
    "journaled_positions",
    "run_seed",
]

E8: Final = 10**8
SYSTEM: Final = frozenset(("insurance-fund", "fee-pool", "bad-debt"))
GENESIS: Final = "genesis"
FULL_CHECK_EVERY_STEPS: Final = 20
READ_BACK_EVERY_STEPS: Final = 10


# The simulator's fault names, as the storage fault each one arms (the rest are the same).
_STORAGE_FAULTS: Final[dict[str, Fault]] = {
    "power_loss_in_write": "crash_in_write",  # the tear comes after, in tear_tail
    "snapshot_enospc": "write_enospc",
}


class SimulationFailure(AssertionError):
    """A property did not hold; the message says which, at which step."""


def source_of(name: str, pos: int) -> str:
    return f"sim:{name}:{pos}"


def parse_source(source: str) -> tuple[str, int]:
    _, name, pos = source.split(":")
    return name, int(pos)


def journaled_positions(journal: LocalJournal, names: Iterable[str]) -> dict[str, int]:
    """Per source, the position of its newest record in the journal (0 if it has none).

    The sequencer side of deduplication, as ``clearing ingest`` resumes a file: look at the
    newest record, and further back (in growing windows) for sources not seen yet.
    """
    wanted = set(names)
    found: dict[str, int] = {}
    end = journal.last_seq
    window = 256
    while end >= 1 and wanted - found.keys():
        start = max(1, end - window + 1)
        newest: dict[str, int] = {}
        for record in journal.read(start, end):
            name, pos = parse_source(record.source)
            newest[name] = pos
        for name, pos in newest.items():
            found.setdefault(name, pos)
        end = start - 1
        window *= 4
    return {name: found.get(name, 0) for name in wanted}


# ---------------------------------------------------------------------------------------


@dataclass
class Config:
    """Per-seed knobs, drawn from the seed."""

    fsync: str
    segment_bytes: int | None  # None: Sequencer.open_local's default (64 MiB)
    snapshot_every: int
    keep_snapshots: int
    invariant_check_inputs: int
    feeders: int
    valid_share: float
    crash_rate: float  # per step
    fault_rate: float  # per submit: an injected fault inside it
    commit_rate: float  # per acknowledged batch: the feeder commits its position
    big_batches: bool

    @classmethod
    def draw(cls, rng: random.Random, fsync: str | None) -> Config:
        return cls(
            # A process crash loses nothing written under any policy; "batch" adds power
            # loss (torn tails) at the price of an fdatasync per submit.
            fsync=fsync or rng.choice(("never", "never", "never", "batch")),
            segment_bytes=rng.choice((None, 2048, 16_384, 262_144, 1 << 20)),
            # 10**9: never on its own (recovery replays the whole journal).
            snapshot_every=rng.choice((100, 500, 500, 1000, 1000, 3000, 3000, 5000, 10**9)),
            keep_snapshots=rng.randint(1, 4),
            invariant_check_inputs=rng.choice((1, 100, 10_000, 100_000)),
            feeders=rng.randint(1, 4),
            valid_share=rng.choice((0.97, 0.9, 0.8, 0.5)),
            crash_rate=rng.choice((0.002, 0.01, 0.03)),
            fault_rate=rng.choice((0.0, 0.005, 0.02)),
            commit_rate=rng.choice((1.0, 0.5, 0.1)),
            big_batches=rng.random() < 0.3,
        )


class Feeder:
    """One input source: a log of generated inputs by position (1-based), re-readable."""

    def __init__(self, name: str, seed: int, world: StreamModel, valid_share: float) -> None:
        rng = random.Random(f"{seed}:feeder:{name}")
        model = StreamModel(rng, tag=f"{name}.", users=0, markets=0)
        # Same world as every feeder (markets, users, scale): only the genesis creates it.
        model.markets = list(world.markets)
        model.users = list(world.users)
        model.scale = world.scale
        model.price = dict(world.price)
        self.name = name
        self.gen = HostileGenerator(rng, model, valid_share=valid_share, state_free=True)
        self.base = 1  # position of log[0]; older entries are dropped once committed
        self.log: list[Case] = []
        self.digests: list[bytes] = []  # of every input ever generated, by position - 1
        self.next_pos = 1  # next position to send
        self.acked = 0  # highest position acknowledged to this feeder (lost on restart)
        self.committed = 0  # durable: where a restarted feeder resumes

    def case(self, pos: int) -> Case:
        assert pos >= self.base, f"{self.name}: position {pos} was dropped after its commit"
        while pos >= self.base + len(self.log):
            case = self.gen.next_case()
            self.log.append(case)
            self.digests.append(_digest(case.raw))
        return self.log[pos - self.base]

    def take(self, count: int) -> list[tuple[int, Case]]:
        items = [(pos, self.case(pos)) for pos in range(self.next_pos, self.next_pos + count)]
        self.next_pos += count
        return items

    def commit(self) -> None:
        self.committed = self.acked
        drop = self.committed - self.base + 1
        if drop > 4096:  # keep memory flat; re-sends only go back to `committed`
            del self.log[:drop]
            self.base += drop


class Genesis:
    """The world's first inputs (markets, deposits) as a source of its own."""

    def __init__(self, world: StreamModel) -> None:
        self.name = GENESIS
        self.cases = [valid_case(f) for f in world.genesis()]


@dataclass
class SeedResult:
    seed: int
    events: int = 0  # unique inputs journaled and acknowledged
    redelivered: int = 0  # inputs re-sent that the sequencer side skipped
    steps: int = 0
    seconds: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    recoveries: Counter[str] = field(default_factory=Counter)
    outputs: Counter[str] = field(default_factory=Counter)
    rejects: Counter[str] = field(default_factory=Counter)
    checks: Counter[str] = field(default_factory=Counter)
    known_bugs: Counter[str] = field(default_factory=Counter)
    observations: Counter[str] = field(default_factory=Counter)
    config: dict[str, Any] = field(default_factory=dict)
    failure: str | None = None
    peak_rss: int = 0

    def line(self) -> str:
        status = "OK" if self.failure is None else "FAILED"
        out = self.outputs
        return (
            f"seed {self.seed}: {status} {self.events:,} inputs (+{self.redelivered:,} "
            f"redelivered and skipped) in {self.steps:,} steps, {self.seconds:.1f} s; "
            f"faults {dict(sorted(self.faults.items()))}; "
            f"recoveries {dict(sorted(self.recoveries.items()))}; "
            f"liquidation={out['Liquidation']} fund_draw={out['FundDraw']} "
            f"clawback={out['Clawback']} bad_debt={out['BadDebt']} reject={out['Reject']}"
        )


class _TornTailCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "torn tail" in record.getMessage():
            self.count += 1


# ---------------------------------------------------------------------------------------


class Simulation:
    def __init__(
        self,
        seed: int,
        events: int,
        workdir: str,
        *,
        fsync: str | None = None,
        core: str = "python",
    ) -> None:
        self.seed = seed
        self.target = events
        self.core = core  # the sequencer's engine core; the shadow is always Python's
        self.cfg = Config.draw(random.Random(f"{seed}:config"), fsync)
        self.rng = random.Random(f"{seed}:faults")
        # What the journal and the snapshot writer write through: faults are armed here.
        self.journal_disk = FaultyStorage(self.rng)
        self.snapshot_disk = FaultyStorage(self.rng)
        self.journal_dir = os.path.join(workdir, "journal")
        self.snapshot_dir = os.path.join(workdir, "snapshots")
        world = StreamModel(random.Random(f"{seed}:world"), tag="world.")
        self.genesis = Genesis(world)
        self.feeders = [
            Feeder(f"feed{i}", seed, world, self.cfg.valid_share) for i in range(self.cfg.feeders)
        ]
        self.by_name: dict[str, Feeder] = {f.name: f for f in self.feeders}
        self.result = SeedResult(seed, config=vars(self.cfg).copy())
        self.sequencer: Sequencer | None = None
        self.journal: LocalJournal | None = None  # the sequencer's, while it is up
        self.shadow = Engine()
        # The truth about what the journal holds, per source (checked against the rebuild).
        self.journaled: dict[str, int] = {GENESIS: 0, **{f.name: 0 for f in self.feeders}}
        self.gate: dict[str, int] = dict(self.journaled)  # the sequencer side's view
        self.inflight: list[tuple[str, int, Case]] = []  # sent, outcome unknown
        self.inflight_sizes: dict[str, int] = {}  # segment sizes before the inflight append
        self.unverified: list[tuple[int, str, bytes, bytes]] = []  # read back pending
        self.tally_e16 = 0  # accepted deposits minus accepted withdrawals
        self.step_no = 0
        self.fault_fired = False  # the fault injected into the current submit acted
        self.restarts = 0
        self.write_interrupted = False  # a journal write failed or was cut since the last open
        self.zero_filled_tail = False  # the last tear left zeros after the cut
        self.torn = _TornTailCounter()

    # -- helpers ---------------------------------------------------------------------

    def fail(self, what: str) -> SimulationFailure:
        return SimulationFailure(f"seed {self.seed} step {self.step_no}: {what}")

    def digest_of(self, name: str, pos: int) -> bytes:
        if name == GENESIS:
            return _digest(self.genesis.cases[pos - 1].raw)
        feeder = self.by_name[name]
        return feeder.digests[pos - 1]

    def open_sequencer(self) -> tuple[Sequencer, RecoveryResult]:
        """``Sequencer.open_local`` over the faulty disks (small segments on some seeds,
        so that rolls happen often); sets ``self.journal``."""
        cfg = self.cfg
        sizing = {} if cfg.segment_bytes is None else {"segment_bytes": cfg.segment_bytes}
        journal = LocalJournal(
            self.journal_dir,
            fsync=cfg.fsync,  # type: ignore[arg-type]
            storage=self.journal_disk,
            **sizing,  # type: ignore[arg-type]
        )
        opened = Sequencer.over(
            journal,
            self.snapshot_dir,
            core=self.core,
            storage=self.snapshot_disk,
            snapshot_every_inputs=cfg.snapshot_every,
            keep_snapshots=cfg.keep_snapshots,
            invariant_check_inputs=cfg.invariant_check_inputs,
        )
        self.journal = journal
        return opened

    def up(self) -> Sequencer:
        assert self.sequencer is not None
        return self.sequencer

    def up_journal(self) -> LocalJournal:
        assert self.sequencer is not None and self.journal is not None
        return self.journal

    # -- the shadow ------------------------------------------------------------------

    def shadow_apply(self, name: str, pos: int, case: Case) -> list[OutputEvent]:
        """Feed one journaled input to the shadow; check its outcome and keep the tally."""
        outputs = self.shadow.apply(case.raw)
        problem = check_outcome(case, self.shadow.seq, outputs)
        if problem is not None:
            bug = known_bug(case, problem)
            if bug is None:
                raise self.fail(f"input {source_of(name, pos)} ({case.kind}): {problem}")
            self.result.known_bugs[bug] += 1
        rejected = bool(outputs) and type(outputs[0]).__name__ == "Reject"
        for event in outputs:
            self.result.outputs[type(event).__name__] += 1
        if rejected:
            self.result.rejects[outputs[0].reason] += 1  # type: ignore[union-attr]
            return outputs
        money = case.money or _money_from_json(case.raw)
        if money is not None:
            kind, _account, amount_e8 = money
            if kind == "deposit":
                self.tally_e16 += amount_e8 * E8
            else:
                paid = [e for e in outputs if type(e).__name__ == "Withdrawal"]
                if len(paid) != 1 or _e8(paid[0].amount) != amount_e8:  # type: ignore[union-attr]
                    raise self.fail(f"withdrawal {source_of(name, pos)}: outputs {outputs}")
                self.tally_e16 -= amount_e8 * E8
        return outputs

    # -- steps -----------------------------------------------------------------------

    def run(self) -> SeedResult:
        started = time.perf_counter()
        log = logging.getLogger("clearing")
        log.addHandler(self.torn)
        try:
            self.sequencer, _ = self.open_sequencer()
            self.result.recoveries["fresh"] += 1
            self.submit(GENESIS, [(i + 1, c) for i, c in enumerate(self.genesis.cases)], False)
            while self.result.events < self.target:
                self.step_no += 1
                self.step()
            self.finish()
        finally:
            log.removeHandler(self.torn)
            if self.sequencer is not None:
                self.drop()
            self.result.steps = self.step_no
            self.result.seconds = time.perf_counter() - started
            self.result.faults["torn_tail_truncated_on_open"] = self.torn.count
        return self.result

    def step(self) -> None:
        rng = self.rng
        cfg = self.cfg
        if self.sequencer is None:
            self.restart()
        else:
            roll = rng.random()
            if roll < cfg.crash_rate:
                self.crash("crash_between_batches")
            elif roll < cfg.crash_rate + 0.003:
                self.clean_restart()
            elif roll < cfg.crash_rate + 0.013:
                self.duplicate_delivery()
            elif roll < cfg.crash_rate + 0.016:
                self.explicit_snapshot()
            else:
                feeder = rng.choice(self.feeders)
                self.submit(feeder.name, feeder.take(self.batch_size()), True)
        if self.sequencer is not None:
            self.check_step()

    def batch_size(self) -> int:
        rng = self.rng
        roll = rng.random()
        if roll < 0.05:
            return 1
        if roll < 0.4:
            return rng.randint(2, 20)
        if roll < 0.95 or not self.cfg.big_batches:
            return rng.randint(20, 300)
        return rng.randint(300, 3000)

    def submit(self, name: str, items: list[tuple[int, Case]], faults: bool) -> None:
        sequencer = self.up()
        # The sequencer side: skip what the journal already holds from this source.
        fresh = [(pos, case) for pos, case in items if pos > self.gate[name]]
        self.result.redelivered += len(items) - len(fresh)
        if not fresh:
            return
        if fresh[0][0] != self.gate[name] + 1:
            raise self.fail(f"gap from {name}: sent {fresh[0][0]} after {self.gate[name]}")
        self.inflight = [(name, pos, case) for pos, case in fresh]
        before_seq = sequencer.engine.seq
        fault = self.choose_fault() if faults else None
        self.fault_fired = False
        self.inflight_sizes = {}
        if fault in ("crash_in_write", "power_loss_in_write"):
            # Sizes before the append: a power loss can only tear what comes after.
            active = self.up_journal().segments()[-1:]
            self.inflight_sizes = {s.path: s.size_bytes for s in active}
        try:
            with self.inject(fault):
                produced = sequencer.submit([(source_of(name, p), c.raw) for p, c in fresh])
        except SimulatedCrash:
            self.result.faults[f"{fault}"] += 1
            self.crash_during_write()
            return
        except Exception as exc:
            if fault is None:
                raise self.fail(f"submit raised without an injected fault: {exc!r}") from exc
            self.result.faults[f"{fault}"] += 1
            self.after_failed_submit(fault, before_seq)
            return
        if fault is not None and not self.fault_fired:
            self.result.faults[f"{fault}_not_triggered"] += 1
        elif fault == "snapshot_enospc":
            # Since the B2 fix a failed snapshot inside submit is logged and the batch's
            # outputs are returned (a snapshot is only an optimisation).
            self.result.faults["snapshot_enospc_absorbed"] += 1
        elif fault is not None:
            raise self.fail(f"injected {fault} fired inside submit, which returned normally")
        if faults and self.rng.random() < self.cfg.crash_rate * 0.5:
            # Journaled, but the process died before the feeder heard back.
            self.crash("crash_before_ack")
            return
        self.acknowledge(produced)

    def acknowledge(self, produced: list[OutputEvent]) -> None:
        expected: list[bytes] = []
        for name, pos, case in self.inflight:
            outputs = self.shadow_apply(name, pos, case)
            expected.extend(encode_output(e) for e in outputs)
            self.unverified.append(
                (self.shadow.seq, source_of(name, pos), case.raw, encode_outputs(outputs))
            )
            self.journaled[name] = self.gate[name] = pos
            self.result.events += 1
        got = [encode_output(e) for e in produced]
        if got != expected:
            first = next(i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b)
            raise self.fail(f"outputs differ from the shadow's at output {first}")
        name = self.inflight[-1][0]
        feeder = self.by_name.get(name)
        if feeder is not None:
            feeder.acked = self.inflight[-1][1]
            if self.rng.random() < self.cfg.commit_rate:
                feeder.commit()
        self.inflight = []
        self.result.checks["batch_outputs_equal_shadow"] += 1

    def choose_fault(self) -> str | None:
        rng = self.rng
        if rng.random() >= self.cfg.fault_rate:
            return None
        kinds = ["crash_in_write", "enospc_in_write", "eio_in_write", "snapshot_enospc"]
        if self.cfg.fsync != "never":
            kinds += ["fsync_eio", "power_loss_in_write"]
        kinds.append("erofs_on_segment_create")
        return rng.choice(kinds)

    @contextlib.contextmanager
    def inject(self, fault: str | None) -> Iterator[None]:
        """Arm the named fault on the disk it belongs to (the snapshot writer's for
        ``snapshot_enospc``, else the journal's) for the body; ``fault_fired`` says
        whether it acted."""
        if fault is None:
            yield
            return
        disk = self.snapshot_disk if fault == "snapshot_enospc" else self.journal_disk
        disk.arm(_STORAGE_FAULTS.get(fault, fault))  # type: ignore[arg-type]
        try:
            yield
        finally:
            self.fault_fired = disk.fired
            disk.disarm()

    def after_failed_submit(self, fault: str, before_seq: int) -> None:
        sequencer = self.up()
        if fault == "snapshot_enospc":
            # Before the B2 fix: the batch was journaled, the snapshot after it failed and
            # submit raised without breaking the sequencer (a retry would apply the batch
            # twice). The feeder cannot know, so it treats the batch as failed: the process
            # restarts and the sequencer side skips what is journaled.
            if self.up_journal().last_seq != before_seq + len(self.inflight):
                raise self.fail("snapshot failure: the batch is not in the journal")
            self.result.observations["submit_raised_after_commit_not_broken"] += 1
            self.clean_restart(keep_inflight=True)
            return
        # A failed journal write must leave the sequencer refusing work.
        self.write_interrupted = True
        try:
            sequencer.submit([])
        except Exception as exc:
            if type(exc).__name__ != "SequencerBroken":
                raise self.fail(f"after {fault}: {exc!r} instead of SequencerBroken") from exc
            self.result.checks["broken_after_write_failure"] += 1
        else:
            raise self.fail(f"after {fault} the sequencer still accepts batches")
        # close() must release the journal even though the sync it tries fails.
        try:
            sequencer.close()
        except Exception:
            self.result.observations["close_after_write_failure_raised"] += 1
        self.sequencer = self.journal = None

    # -- crashes and restarts --------------------------------------------------------

    def drop(self) -> None:
        """The process dies: no close, no sync, no snapshot; the kernel closes the files
        (which also releases the journal's flock)."""
        journal = self.up_journal()
        journal._release()  # what process exit does to its file descriptors
        self.sequencer = self.journal = None

    def crash(self, kind: str) -> None:
        self.result.faults[kind] += 1
        if not self.inflight:
            self.inflight_sizes = {}
        self.drop()
        self.damage_snapshots()

    def crash_during_write(self) -> None:
        self.write_interrupted = True
        self.drop()
        if self.cfg.fsync != "never" and self.rng.random() < 0.5:
            self.tear_tail()
        self.damage_snapshots()

    def tear_tail(self) -> None:
        """Power loss during the append: only bytes written since the last fsync (this
        batch's) may be lost, from a random byte on, maybe leaving zeros behind."""
        rng = self.rng
        segments = sorted(
            os.path.join(self.journal_dir, n)
            for n in os.listdir(self.journal_dir)
            if n.endswith(".seg")
        )
        if not segments:
            return
        last = segments[-1]
        size = os.path.getsize(last)
        start = self.inflight_sizes.get(last, 0)
        if size <= start:
            return
        cut = rng.randint(start, size)
        with open(last, "r+b") as f:
            f.truncate(cut)
            if rng.random() < 0.3:
                # The file grew but the last sectors never landed: they read as zeros.
                f.seek(cut)
                f.write(b"\0" * rng.randint(1, 4096))
                self.zero_filled_tail = True
        self.result.faults["power_loss_tail_torn"] += 1

    def damage_snapshots(self) -> None:
        rng = self.rng
        if rng.random() >= 0.3 or not os.path.isdir(self.snapshot_dir):
            return
        snaps = sorted(
            os.path.join(self.snapshot_dir, n)
            for n in os.listdir(self.snapshot_dir)
            if n.startswith("snapshot-") and n.endswith(".snap")
        )
        kind = rng.choice(
            ("delete_newest", "flip", "truncate", "extend", "delete_all", "temp", "ahead")
        )
        if kind in ("delete_newest", "flip", "truncate", "extend") and not snaps:
            return
        newest = snaps[-1] if snaps else ""
        if kind == "delete_newest":
            os.unlink(newest)
        elif kind == "flip":
            size = os.path.getsize(newest)
            at = rng.randrange(size)
            with open(newest, "r+b") as f:
                f.seek(at)
                byte = f.read(1)[0]
                f.seek(at)
                f.write(bytes([byte ^ (1 << rng.randrange(8))]))
        elif kind == "truncate":
            os.truncate(newest, rng.randrange(os.path.getsize(newest)))
        elif kind == "extend":
            with open(newest, "ab") as f:
                f.write(rng.randbytes(rng.randint(1, 64)))
        elif kind == "delete_all":
            for path in snaps:
                os.unlink(path)
        elif kind == "temp":
            name = f".snapshot-{rng.randrange(10**6):020d}.snap.1.dead.tmp"
            with open(os.path.join(self.snapshot_dir, name), "wb") as f:
                f.write(rng.randbytes(100))
        else:  # a corrupt file named as a snapshot far ahead of the journal
            name = f"snapshot-{10**12 + rng.randrange(10**6):020d}.snap"
            with open(os.path.join(self.snapshot_dir, name), "wb") as f:
                f.write(b"CLSNAP" + rng.randbytes(200))
        self.result.faults[f"snapshot_{kind}"] += 1

    def clean_restart(self, keep_inflight: bool = False) -> None:
        sequencer = self.up()
        try:
            sequencer.close()
        except OSError:
            # The final snapshot failed (injected ENOSPC still counted); the journal is
            # closed by close()'s finally clause.
            self.result.observations["close_raised"] += 1
        self.sequencer = self.journal = None
        if not keep_inflight:
            self.result.faults["clean_restart"] += 1
        self.restart()

    def restart(self) -> None:
        """Recover, and check the recovered ledger against what was acknowledged."""
        try:
            try:
                self.sequencer, recovery = self.open_sequencer()
            except JournalCorrupt:
                if not self.zero_filled_tail:
                    raise
                # B4: a torn tail followed by zeros is refused as corruption. The operator's
                # remedy (``clearing journal verify --repair-truncate``) must then give back
                # exactly the acknowledged ledger.
                self.result.known_bugs["B4-zero-filled-torn-tail-refused"] += 1
                repair_truncate(self.journal_dir)
                self.sequencer, recovery = self.open_sequencer()
        except Exception as exc:
            raise self.fail(f"recovery refused: {exc!r}") from exc
        self.zero_filled_tail = False
        sequencer = self.sequencer
        journal = self.up_journal()
        acked = self.shadow.seq
        last = journal.last_seq
        if last < acked:
            raise self.fail(f"acknowledged inputs lost: journal ends at {last}, acked {acked}")
        extra = last - acked
        if extra > len(self.inflight):
            raise self.fail(f"journal holds {extra} inputs past the acknowledged ones")
        # Inputs journaled but never acknowledged (the batch the crash interrupted): they
        # are in the ledger now; the shadow takes them in journal order.
        if extra:
            for record, (name, pos, case) in zip(
                journal.read(acked + 1, last), self.inflight[:extra], strict=True
            ):
                if record.source != source_of(name, pos) or record.payload != case.raw:
                    raise self.fail(f"journal seq {record.seq} is not the input that was sent")
                outputs = self.shadow_apply(name, pos, case)
                if record.outputs != encode_outputs(outputs):
                    raise self.fail(f"journal seq {record.seq}: recorded outputs differ")
                self.journaled[name] = pos
                self.result.events += 1
            self.result.checks["unacknowledged_but_journaled"] += extra
        self.inflight = []
        self.unverified.clear()  # opening the journal verified every frame and the chain
        if dump_state(sequencer.engine) != dump_state(self.shadow):
            raise self.fail("recovered state differs from the shadow's")
        self.restarts += 1
        if self.write_interrupted or self.restarts % 4 == 0:
            # The open already ran a full scan; the operator's tool must agree with it
            # (always after a write was interrupted, else every 4th restart, for speed).
            report = verify(self.journal_dir)
            if not report.ok or report.last_seq != last or report.head_hash != journal.head_hash:
                raise self.fail(f"journal does not verify after recovery: {report.problem}")
            self.result.checks["journal_verified"] += 1
        self.write_interrupted = False
        # The sequencer side rebuilds its per-source positions from the journal.
        self.gate = journaled_positions(journal, self.journaled)  # type: ignore[arg-type]
        if self.gate != self.journaled:
            raise self.fail(f"source positions rebuilt as {self.gate}, truth {self.journaled}")
        # Restarted feeders resume from their last committed position.
        for feeder in self.feeders:
            feeder.next_pos = feeder.committed + 1
            feeder.acked = feeder.committed
        used = "snapshot" if recovery.snapshot_path else "full_replay"
        self.result.recoveries[used] += 1
        self.result.checks["recovered_state_equals_shadow"] += 1

    def duplicate_delivery(self) -> None:
        """At-least-once delivery: a feeder re-sends a window it already sent."""
        feeder = self.rng.choice(self.feeders)
        if feeder.next_pos <= feeder.committed + 1:
            return
        start = self.rng.randint(feeder.committed + 1, feeder.next_pos - 1)
        end = min(feeder.next_pos - 1, start + self.rng.randint(0, 50))
        items = [(pos, feeder.case(pos)) for pos in range(start, end + 1)]
        fresh = [(pos, case) for pos, case in items if pos > self.gate[feeder.name]]
        if fresh:
            raise self.fail(f"re-sent window {start}..{end} of {feeder.name} not all journaled")
        self.submit(feeder.name, items, False)
        self.result.faults["duplicate_delivery"] += 1

    def explicit_snapshot(self) -> None:
        sequencer = self.up()
        fault = "snapshot_enospc" if self.rng.random() < self.cfg.fault_rate * 5 else None
        try:
            with self.inject(fault):
                sequencer.snapshot()
        except OSError:
            if fault is None:
                raise
            self.result.faults["explicit_snapshot_enospc"] += 1
            return
        self.result.faults["explicit_snapshot"] += 1

    # -- checks ----------------------------------------------------------------------

    def check_step(self) -> None:
        sequencer = self.up()
        engine = sequencer.engine
        if engine.seq != self.shadow.seq:
            raise self.fail(f"engine at seq {engine.seq}, shadow at {self.shadow.seq}")
        engine.check_invariants()
        ledger = getattr(engine, "ledger", None)
        if ledger is None:
            # The native core keeps its ledger in Rust: prove it byte-equal to the
            # shadow's, then walk the shadow's.
            if dump_state(engine) != dump_state(self.shadow):
                raise self.fail("live state differs from the shadow's")
            self.result.checks["native_state_equals_shadow"] += 1
            ledger = self.shadow.ledger
        cash = sum(a.cash_e16 for a in ledger.accounts.values())
        if cash != self.tally_e16:
            raise self.fail(f"cash sums to {cash} e-16; deposits - withdrawals = {self.tally_e16}")
        totals: Counter[str] = Counter()
        for account in ledger.accounts.values():
            for market_id, position in account.positions.items():
                totals[market_id] += position.qty_e8
            if account.id in SYSTEM:
                continue
            if _liquidatable_or_bankrupt(account, ledger.markets):
                raise self.fail(f"account {account.id!r} left liquidatable or bankrupt")
        if any(totals.values()):
            raise self.fail(f"positions do not sum to 0: {dict(totals)}")
        self.result.checks["invariants"] += 1
        if self.step_no % READ_BACK_EVERY_STEPS == 0 and self.unverified:
            self.read_back()
        if self.step_no % FULL_CHECK_EVERY_STEPS == 0:
            if dump_state(engine) != dump_state(self.shadow):
                raise self.fail("live state differs from the shadow's")
            self.result.checks["live_state_equals_shadow"] += 1

    def read_back(self) -> None:
        """Read the records appended since the last read-back (CRC, seq and hash chain are
        checked by the journal) and compare them with what was submitted."""
        journal = self.up_journal()
        first = self.unverified[0][0]
        records = list(journal.read(first, self.unverified[-1][0]))
        expected = self.unverified
        if len(records) != len(expected):
            raise self.fail(f"read back {len(records)} records, expected {len(expected)}")
        for record, (seq, source, payload, outputs) in zip(records, expected, strict=True):
            if (record.seq, record.source, record.payload, record.outputs) != (
                seq,
                source,
                payload,
                outputs,
            ):
                raise self.fail(f"journal record {record.seq} differs from what was submitted")
        self.result.checks["records_read_back"] += len(records)
        self.unverified = []

    def finish(self) -> None:
        """Close cleanly; replay the whole journal without snapshots; check every source."""
        if self.sequencer is None:
            self.restart()
        sequencer = self.up()
        sequencer.close()
        self.sequencer = self.journal = None
        journal = LocalJournal(self.journal_dir, readonly=True)
        try:
            full = recover(None, journal)
            if dump_state(full.engine) != dump_state(self.shadow):
                raise self.fail("full replay of the journal differs from the shadow")
            positions: dict[str, int] = {}
            for record in journal.read():
                name, pos = parse_source(record.source)
                if pos != positions.get(name, 0) + 1:
                    raise self.fail(f"journal seq {record.seq}: {record.source} out of order")
                positions[name] = pos
                if _digest(record.payload) != self.digest_of(name, pos):
                    raise self.fail(f"journal seq {record.seq}: payload is not the input sent")
            if positions != {k: v for k, v in self.journaled.items() if v}:
                raise self.fail(f"journal holds positions {positions}, truth {self.journaled}")
        finally:
            journal.close()
        report = verify(self.journal_dir)
        if not report.ok:
            raise self.fail(f"final journal does not verify: {report.problem}")
        snaps = list_snapshots(self.snapshot_dir) if os.path.isdir(self.snapshot_dir) else []
        self.result.checks["final_full_replay_equals_shadow"] += 1
        self.result.checks["snapshots_at_end"] = len(snaps)


def _digest(raw: bytes) -> bytes:
    return hashlib.blake2b(raw, digest_size=16).digest()


def _e8(text: str) -> int:
    whole, _, frac = text.partition(".")
    sign = -1 if whole.startswith("-") else 1
    return sign * (abs(int(whole)) * E8 + int(frac.ljust(8, "0") or "0"))


def _money_from_json(raw: bytes) -> tuple[str, str, int] | None:
    """(kind, account, amount e8) of an accepted deposit or withdrawal given as raw JSON.

    Numbers stay text (no int conversion limit, no floats): an accepted input holds valid
    wire numbers only where it matters."""
    obj = json.loads(raw.decode("utf-8"), parse_int=str, parse_float=str)
    kind = obj.get("type")
    if kind not in ("deposit", "withdraw"):
        return None
    return kind, obj["account"], _e8(str(obj["amount"]))


def _liquidatable_or_bankrupt(account: Any, markets: dict[str, Any]) -> bool:
    """SPEC §4, computed here from the raw ledger: E < MM with a position, C < 0 without."""
    if not account.positions:
        return bool(account.cash_e16 < 0)
    equity_e16 = account.cash_e16
    maintenance_e24 = 0
    for market_id, position in account.positions.items():
        market = markets[market_id]
        equity_e16 += position.qty_e8 * market.mark_e8
        maintenance_e24 += abs(position.qty_e8) * market.mark_e8 * market.mmr_e8
    return bool(equity_e16 * E8 < maintenance_e24)


# ---------------------------------------------------------------------------------------


def run_seed(
    seed: int,
    events: int,
    base_dir: str | None = None,
    keep: bool = False,
    fsync: str | None = None,
    core: str = "python",
) -> SeedResult:
    """Run one seed in a fresh directory (kept on failure, or with ``keep``)."""
    workdir = tempfile.mkdtemp(prefix=f"sim-{seed}-", dir=base_dir)
    sim = Simulation(seed, events, workdir, fsync=fsync, core=core)
    try:
        result = sim.run()
    except SimulationFailure as exc:
        sim.result.failure = str(exc)
        sim.result.observations["workdir_kept:" + workdir] += 1
        result = sim.result
        keep = True
    except Exception as exc:  # an unexpected crash is a failure too, with its repro
        sim.result.failure = f"seed {seed} step {sim.step_no}: unexpected {exc!r}"
        sim.result.observations["workdir_kept:" + workdir] += 1
        result = sim.result
        keep = True
    result.peak_rss = peak_rss_bytes()
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def as_json(r: SeedResult) -> dict[str, Any]:
    """One seed's result as a JSON object (``tools/simulate.py --json``)."""
    return {
        "seed": r.seed,
        "events": r.events,
        "redelivered": r.redelivered,
        "steps": r.steps,
        "seconds": round(r.seconds, 2),
        "faults": dict(r.faults),
        "recoveries": dict(r.recoveries),
        "outputs": dict(r.outputs),
        "rejects": dict(r.rejects),
        "checks": dict(r.checks),
        "known_bugs": dict(r.known_bugs),
        "observations": dict(r.observations),
        "config": r.config,
        "failure": r.failure,
        "peak_rss": r.peak_rss,
    }
