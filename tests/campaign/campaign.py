"""A randomized fault campaign: real updaters and relays, a broker that restarts, kill -9.

Several updating processes (tests/campaign/updater.py) and several `fsm relay`
processes work on one database and one local broker, while a chaos loop driven by a
seeded `random.Random` kills processes with SIGKILL (and starts them again), restarts the
broker (a new, empty one on the same port) and, on PostgreSQL, drops the processes'
database connections. An independent consumer (confluent-kafka, tests/campaign/observer.py)
reads the topic throughout. At the end the chaos stops, the relays drain the outbox, and
the database is judged against what the consumer saw (tests/campaign/judge.py).

The chaos schedule is fixed by the seed; how processes interleave is not, so a seed
reproduces the faults, not every timing. CI runs it small (tests/campaign/test_campaign.py);
by hand: `python -m tests.campaign.campaign --seconds 240 --seed 7 [--db-url URL]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url

from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer
from adapters.sqlalchemy import create_engine
from adapters.sqlalchemy.tables import TABLES
from tests.campaign.judge import FINAL_STATES, OutboxRecord, RunRecord, Verdict, judge
from tests.campaign.observer import Observer
from tests.campaign.updater import kafka_config
from tests.schemas import fresh_schema
from userstatus.app import FlowApp
from userstatus.demo import init_schema
from userstatus.events import TOPIC
from userstatus.sql import users

ROOT = Path(__file__).resolve().parents[2]
Progress = Callable[[str], None]

PUBLISH_GRACE = 30.0
"""Seconds an updater holds its run for the publish after the commit (the orchestrator's
default `publish_grace`): a run it held when killed can move only after that."""
INITIAL = ("active", "suspended", "pending_verification", "active")
"""The users' first statuses, by user id modulo its length."""


@dataclass(frozen=True)
class CampaignSettings:
    """How many processes, how often what goes wrong, and the relays' tuning."""

    updaters: int = 3
    relays: int = 2
    users: int = 24
    close_weight: float = 0.003
    """Chance that an update asks for `closed` (final: a closed user only sees refusals)."""
    gap: tuple[float, float] = (0.5, 2.0)
    """Seconds between two faults (uniform)."""
    outage: tuple[float, float] = (0.3, 2.0)
    """Seconds the broker stays down at a restart (uniform)."""
    weights: tuple[tuple[str, float], ...] = (
        ("kill_updater", 2.0),
        ("kill_relay", 1.5),
        ("restart_broker", 3.0),
        ("drop_connections", 1.5),
    )
    """Fault kinds and their weights; drop_connections only happens on PostgreSQL."""
    lease_seconds: float = 20.0
    """The least `fsm relay` accepts with these Kafka bounds (one attempt, 15 s floor, + 5)."""
    max_attempts: int = 8
    batch_size: int = 5
    idle_interval: float = 0.2
    drain_timeout: float = 120.0
    """How long the relays may take to empty the outbox after the chaos."""
    catch_up_timeout: float = 5.0
    """How long the consumer may take to read the broker's end before a broker stop."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault: when (seconds after the start), what, on which process."""

    at: float
    kind: str
    target: int
    duration: float


def plan(seconds: float, seed: int, settings: CampaignSettings, *, postgres: bool) -> list[Fault]:
    """The chaos schedule: a function of the seed and the settings only."""
    rng = random.Random(seed)
    kinds = [k for k, _ in settings.weights if postgres or k != "drop_connections"]
    weights = [w for k, w in settings.weights if postgres or k != "drop_connections"]
    faults: list[Fault] = []
    at = 0.0
    while True:
        at += rng.uniform(*settings.gap)
        kind = rng.choices(kinds, weights)[0]
        target, duration = rng.randrange(1_000_000), rng.uniform(*settings.outage)
        if at >= seconds:
            return faults
        faults.append(Fault(round(at, 3), kind, target, round(duration, 3)))


@dataclass
class CampaignReport:
    """The campaign's figures and its verdict."""

    db: str
    seed: int
    seconds: float
    settings: CampaignSettings
    workdir: str
    duration: float = 0.0
    drain_seconds: float = 0.0
    updates_attempted: int = 0
    update_results: dict[str, int] = field(default_factory=dict)
    update_errors: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    broker_restarts: int = 0
    connection_drops: int = 0
    connections_dropped: int = 0
    unexpected_exits: list[str] = field(default_factory=list)
    """Processes that died without being killed: name and exit status."""
    restarts_not_caught_up: int = 0
    """Broker stops before which the consumer could not read to the end (losses then may
    be the consumer's, not the flow's)."""
    drained: bool = False
    """The outbox had nothing pending when the campaign ended."""
    pending_left: int = 0
    verdict: Verdict = field(default_factory=Verdict)
    lost_detail: list[str] = field(default_factory=list)
    reread_missed: list[str] = field(default_factory=list)
    """Events a second reader (kafka-python) found on the last broker that the observer
    did not see there: a fault of the harness, which would make its losses doubtful."""
    reread_extra: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """What went wrong, one line each; empty for a clean campaign."""
        lines = self.verdict.problems()
        if not self.drained:
            lines.append(f"outbox not drained: {self.pending_left} pending")
        if self.reread_missed or self.reread_extra:
            lines.append(
                f"the observer and a second reader disagree on the last broker: "
                f"{len(self.reread_missed)} missed, {len(self.reread_extra)} extra"
            )
        if self.unexpected_exits:
            lines.append(f"processes that died by themselves: {self.unexpected_exits[:5]}")
        return lines

    def format(self) -> str:
        """The figures, one per line, and the verdict."""
        v = self.verdict
        kills = ", ".join(f"{k} {n}" for k, n in sorted(self.kills.items())) or "none"
        states = "\n".join(f"    {s:<16}{n}" for s, n in v.runs_by_state.items())
        results = ", ".join(f"{s} {n}" for s, n in sorted(self.update_results.items()))
        lines = [
            f"fault campaign on {self.db}, seed {self.seed}, {self.seconds:g} s of chaos "
            f"({self.settings.updaters} updaters, {self.settings.relays} relays, "
            f"{self.settings.users} users)",
            f"  duration                  {self.duration:.1f} s (drain {self.drain_seconds:.1f} s)",
            f"  updates attempted         {self.updates_attempted} ({results}; "
            f"errors {self.update_errors})",
            f"  status changes committed  {v.committed}",
            f"  kills (-9)                {kills}",
            f"  broker restarts           {self.broker_restarts} "
            f"(consumer not caught up before {self.restarts_not_caught_up})",
            f"  connection drops          {self.connection_drops} "
            f"({self.connections_dropped} connections)",
            f"  unexpected exits          {len(self.unexpected_exits)}",
            f"  events published (DB)     {v.published}",
            f"  events seen (distinct)    {v.seen_distinct} ({v.received} messages)",
            f"  events lost               {len(v.lost)}",
            f"  second reader disagrees   {len(self.reread_missed) + len(self.reread_extra)} "
            "(kafka-python re-read of the last broker)",
            f"  events without a commit   {len(v.invented)}",
            f"  duplicates                {v.duplicates} "
            f"({v.duplicates_within_incarnation} within one broker)",
            f"  dead-lettered             {v.dead} ({v.lost_dead} of them never seen)",
            f"  order violations          {len(v.order_violations)} per broker, "
            f"{len(v.stream_order_violations)} in the whole de-duplicated stream",
            f"  runs                      {sum(v.runs_by_state.values())}, by state:",
            states,
            f"  runs not final            {len(v.non_final)}",
            f"  state/outbox disagreements {len(v.disagreements)}",
            f"  final status mismatches   {len(v.status_mismatches)}",
            f"  outbox pending at the end {self.pending_left}",
            f"  logs                      {self.workdir}",
        ]
        problems = self.problems()
        if self.lost_detail:
            lines.append("  lost events:\n    " + "\n    ".join(self.lost_detail[:20]))
        lines.append("FAILED:\n  " + "\n  ".join(problems) if problems else "OK: nothing lost")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The report as one JSON-ready object."""
        data = asdict(self)
        data["problems"] = self.problems()
        return data


class Worker:
    """One restartable child process (an updater or a relay), its log appended to a file."""

    def __init__(self, name: str, argv: Callable[[int], list[str]], log_dir: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_dir / f"{name}.log"
        self.generation = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the next generation of the process."""
        self.generation += 1
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                self.argv(self.generation),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )

    def exited(self) -> int | None:
        """The exit status if the process ended, else None."""
        return None if self.process is None else self.process.poll()

    def send(self, signum: int) -> None:
        """Send a signal if the process is alive."""
        if self.process is not None and self.process.poll() is None:
            with suppress(ProcessLookupError):
                self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL, and reap it."""
        self.send(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self, timeout: float) -> None:
        """SIGTERM (SIGCONT too, in case it is paused), then SIGKILL after `timeout`."""
        self.send(signal.SIGTERM)
        self.send(signal.SIGCONT)
        if self.process is None:
            return
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


def _die_with_parent() -> None:
    """In the child: be killed when the campaign dies, so nothing outlives it (Linux)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Campaign:
    """One campaign's processes, broker, consumer and counts."""

    def __init__(
        self,
        db_url: str,
        seconds: float,
        seed: int,
        settings: CampaignSettings,
        workdir: Path,
        progress: Progress,
    ) -> None:
        self.db_url = db_url
        self.seconds = seconds
        self.seed = seed
        self.settings = settings
        self.workdir = workdir
        self.say = progress
        self.postgres = make_url(db_url).get_backend_name() == "postgresql"
        self.tag = f"campaign-{uuid.uuid4().hex[:8]}"
        self.broker = LocalBroker(log_path=workdir / "broker.log")
        self.incarnation = 0
        self.broker_starts: list[datetime] = []
        self.observer = Observer(self.broker.bootstrap_servers, TOPIC)
        self.stop_event = threading.Event()
        self.report = CampaignReport(
            db=make_url(db_url).get_backend_name(),
            seed=seed,
            seconds=seconds,
            settings=settings,
            workdir=str(workdir),
        )
        self.initial = {u: INITIAL[u % len(INITIAL)] for u in range(1, settings.users + 1)}
        self.updaters = [
            Worker(f"updater-{n}", self._updater_argv(n), workdir) for n in range(settings.updaters)
        ]
        self.relays = [
            Worker(f"relay-{n}", self._relay_argv(n), workdir) for n in range(settings.relays)
        ]
        self.engine: Engine = create_engine(db_url)

    # -- the processes' command lines

    def _worker_url(self, name: str) -> str:
        """The database URL, naming the process in pg_stat_activity (to drop its connections)."""
        url = make_url(self.db_url)
        if self.postgres:
            url = url.update_query_dict({"application_name": f"{self.tag}-{name}"})
        return url.render_as_string(hide_password=False)

    def _updater_argv(self, n: int) -> Callable[[int], list[str]]:
        def argv(generation: int) -> list[str]:
            return [
                sys.executable, "-m", "tests.campaign.updater",
                "--db-url", self._worker_url(f"updater-{n}"),
                "--bootstrap-servers", self.broker.bootstrap_servers,
                "--seed", str(self.seed * 1_000_003 + n * 1_009 + generation),
                "--users", str(self.settings.users),
                "--close-weight", str(self.settings.close_weight),
                "--journal", str(self.workdir / f"updater-{n}.jsonl"),
                "--max-seconds", str(self.seconds + self.settings.drain_timeout + 60),
            ]  # fmt: skip

        return argv

    def _relay_argv(self, n: int) -> Callable[[int], list[str]]:
        config = kafka_config(self.broker.bootstrap_servers)
        s = self.settings

        def argv(generation: int) -> list[str]:
            return [
                sys.executable, "-m", "fsm", "relay",
                "--db-url", self._worker_url(f"relay-{n}"),
                "--bootstrap-servers", config.bootstrap_servers,
                "--request-timeout-ms", str(config.request_timeout_ms),
                "--delivery-timeout-ms", str(config.delivery_timeout_ms),
                "--max-block-ms", str(config.max_block_ms),
                "--lease-seconds", str(s.lease_seconds),
                "--batch-size", str(s.batch_size),
                "--max-attempts", str(s.max_attempts),
                "--idle-interval", str(s.idle_interval),
                "--owner", f"relay-{n}.{generation}",
            ]  # fmt: skip

        return argv

    # -- the campaign

    def run(self) -> CampaignReport:
        started = time.monotonic()
        self._setup()
        try:
            self._chaos(plan(self.seconds, self.seed, self.settings, postgres=self.postgres))
            self._drain()
        finally:
            for worker in [*self.updaters, *self.relays]:
                worker.stop(timeout=20)
            self.observer.stop()
            self.broker.stop()
        self._judge()
        self.report.duration = time.monotonic() - started
        self.engine.dispose()
        return self.report

    def _setup(self) -> None:
        init_schema(self.db_url)
        app = FlowApp.connect(self.db_url, kafka_config(self.broker.bootstrap_servers))
        try:
            with app.unit_of_work() as uow:
                if uow.outbox.counts().get("pending", 0) or uow.users.get(1) is not None:
                    raise RuntimeError(f"the campaign needs an empty database: {self.db_url}")
                for user_id, status in self.initial.items():
                    uow.users.create(user_id, status)
        finally:
            app.close()
        self.observer.start()
        self._start_broker()
        for worker in [*self.relays, *self.updaters]:
            worker.start()
        self.say(f"campaign: {len(self.updaters)} updaters, {len(self.relays)} relays started")

    def _start_broker(self) -> None:
        self.broker.start()
        self.broker_starts.append(datetime.now(UTC))
        self.incarnation += 1
        self.observer.open(self.incarnation)

    def _chaos(self, faults: list[Fault]) -> None:
        start = time.monotonic()
        for fault in faults:
            self._watch_until(start + fault.at)
            self._apply(fault)
        self._watch_until(start + self.seconds)

    def _watch_until(self, moment: float) -> None:
        """Until `moment` (monotonic), restart any process that died by itself."""
        while True:
            self._restart_the_dead()
            left = moment - time.monotonic()
            if left <= 0:
                return
            self.stop_event.wait(min(0.2, left))

    def _apply(self, fault: Fault) -> None:
        if fault.kind == "kill_updater":
            self._kill(self.updaters[fault.target % len(self.updaters)])
        elif fault.kind == "kill_relay":
            self._kill(self.relays[fault.target % len(self.relays)])
        elif fault.kind == "restart_broker":
            self._restart_broker(fault.duration)
        elif fault.kind == "drop_connections":
            self._drop_connections(fault.target)
        else:
            raise ValueError(f"unknown fault {fault.kind!r}")

    def _kill(self, worker: Worker) -> None:
        worker.kill()
        kind = worker.name.split("-")[0]
        self.report.kills[kind] = self.report.kills.get(kind, 0) + 1
        worker.start()

    def _restart_broker(self, outage: float) -> None:
        """Stop the broker at a point where the consumer has read all it stored, then start
        a new one after `outage` seconds.

        The workers are paused (SIGSTOP) while the consumer reads to the end, so no
        acknowledged message is lost with the broker before the consumer saw it: a message
        the database calls published and the consumer never saw was never stored.
        """
        workers = [*self.updaters, *self.relays]
        for worker in workers:
            worker.send(signal.SIGSTOP)
        try:
            # A produce request written just before the pause may still sit in the broker's
            # socket buffer: give the broker a moment to store it before reading to the end.
            self.stop_event.wait(0.1)
            if not self.observer.catch_up(self.settings.catch_up_timeout):
                self.report.restarts_not_caught_up += 1
            self.observer.close()
            self.broker.stop()
        finally:
            for worker in workers:
                worker.send(signal.SIGCONT)
        self.report.broker_restarts += 1
        self.stop_event.wait(outage)
        self._start_broker()

    def _drop_connections(self, target: int) -> None:
        """Terminate the database connections of one process, or of all (PostgreSQL)."""
        names = [w.name for w in [*self.updaters, *self.relays]]
        chosen = "%" if target % (len(names) + 1) == len(names) else names[target % len(names)]
        with self.engine.begin() as connection:
            dropped = connection.execute(
                text(
                    "select count(pg_terminate_backend(pid)) from pg_stat_activity "
                    "where application_name like :name and pid <> pg_backend_pid()"
                ),
                {"name": f"{self.tag}-{chosen}"},
            ).scalar_one()
        self.report.connection_drops += 1
        self.report.connections_dropped += int(dropped)

    def _attribute(self, outbox: list[OutboxRecord]) -> list[str]:
        """For each lost event: who it belongs to, when it was marked published, and how
        long after the latest broker start (a send right after a restart is suspect)."""
        rows = {row.event_id: row for row in outbox}
        lines = []
        for event_id in self.report.verdict.lost:
            row = rows.get(event_id)
            at = row.published_at if row else None
            if row is None or at is None:
                lines.append(f"{event_id}: run published, outbox row not (see disagreements)")
                continue
            starts = [s for s in self.broker_starts if s <= at]
            since = f"{(at - starts[-1]).total_seconds():.2f} s after broker {len(starts)} started"
            lines.append(f"{event_id} user {row.key} outbox {row.id}: published {since}")
        return lines

    def _restart_the_dead(self) -> None:
        for worker in [*self.updaters, *self.relays]:
            code = worker.exited()
            if code is not None:
                self.report.unexpected_exits.append(f"{worker.name}.{worker.generation}: {code}")
                worker.start()

    def _drain(self) -> None:
        """Stop the updaters, let the relays empty the outbox, read the topic to its end."""
        started = time.monotonic()
        if not self.broker.running:
            self._start_broker()
        for worker in self.updaters:
            worker.stop(timeout=20)
        self._restart_the_dead_relays()
        deadline = started + self.settings.drain_timeout
        pending, non_final = self._counts()
        while pending and time.monotonic() < deadline:
            self.stop_event.wait(0.5)
            self._restart_the_dead_relays()
            pending, non_final = self._counts()
        # Runs still moving after their event settled get a moment; stuck ones are reported.
        # A run a killed updater held when a relay published its event is moved by the
        # relays' sweep once that claim (the publish grace, 30 s) runs out.
        settle = time.monotonic() + PUBLISH_GRACE + 5
        while non_final and time.monotonic() < min(settle, deadline):
            self.stop_event.wait(0.5)
            pending, non_final = self._counts()
        self.report.drained = pending == 0
        self.report.pending_left = pending
        for worker in self.relays:
            worker.stop(timeout=20)
        self.observer.catch_up(timeout=15)
        # Quiet: nothing new arrives for a second (no relay is left to send anything).
        seen = -1
        while seen != self.observer.seen_count():
            seen = self.observer.seen_count()
            self.observer.catch_up(timeout=1)
            self.stop_event.wait(1.0)
        self._reread()
        self.report.drain_seconds = time.monotonic() - started

    def _reread(self) -> None:
        """Read the last broker once more with kafka-python: the observer must have seen the
        same events (a check of the harness, not of the flow)."""
        config = kafka_config(self.broker.bootstrap_servers)
        log = AuditConsumer(config, TOPIC).read_all(timeout=15, quiet=0.5)
        last = {s.event_id for s in self.observer.sightings if s.incarnation == self.incarnation}
        self.report.reread_missed = sorted(log.events.keys() - last)
        self.report.reread_extra = sorted(last - log.events.keys())

    def _restart_the_dead_relays(self) -> None:
        for worker in self.relays:
            code = worker.exited()
            if code is not None:
                self.report.unexpected_exits.append(f"{worker.name}.{worker.generation}: {code}")
                worker.start()

    def _counts(self) -> tuple[int, int]:
        with self.engine.connect() as connection:
            pending = connection.execute(
                select(func.count())
                .select_from(TABLES.outbox)
                .where(TABLES.outbox.c.status == "pending")
            ).scalar_one()
            non_final = connection.execute(
                select(func.count())
                .select_from(TABLES.runs)
                .where(TABLES.runs.c.state.not_in(FINAL_STATES))
            ).scalar_one()
        return int(pending), int(non_final)

    def _judge(self) -> None:
        with self.engine.connect() as connection:
            outbox = [
                OutboxRecord(
                    id=row.id,
                    event_id=row.event_id,
                    key=row.key,
                    status=row.status,
                    run_id=row.run_id,
                    new_status=str(json.loads(row.value)["new_status"]),
                    published_at=row.published_at,
                )
                for row in connection.execute(select(TABLES.outbox)).all()
            ]
            runs = [
                RunRecord(row.id, row.state.lower(), _event_id(row.context))
                for row in connection.execute(
                    select(TABLES.runs.c.id, TABLES.runs.c.state, TABLES.runs.c.context)
                )
            ]
            statuses = {
                r.id: r.status for r in connection.execute(select(users.c.id, users.c.status))
            }
        self.report.verdict = judge(outbox, runs, statuses, self.initial, self.observer.sightings)
        self.report.lost_detail = self._attribute(outbox)
        attempts, results, errors = 0, Counter[str](), 0
        for journal in self.workdir.glob("updater-*.jsonl"):
            for line in _lines(journal):
                record = json.loads(line)
                attempts += "attempt" in record
                errors += "error" in record
                if "state" in record:
                    results[record["state"]] += 1
        self.report.updates_attempted = attempts
        self.report.update_results = dict(results)
        self.report.update_errors = errors


def _event_id(context: Any) -> str | None:
    if isinstance(context, str):
        context = json.loads(context)
    event = context.get("event") if isinstance(context, dict) else None
    return str(event["event_id"]) if isinstance(event, dict) else None


def _lines(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.endswith("\n"):  # a process killed mid-write leaves half a line
                yield line


def run_campaign(
    db_url: str,
    seconds: float,
    seed: int,
    *,
    settings: CampaignSettings | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> CampaignReport:
    """Run the campaign on an empty database (tables are created) and judge it.

    `workdir` keeps the processes' logs and journals (default: a new temporary folder).
    """
    folder = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fsm-campaign-"))
    folder.mkdir(parents=True, exist_ok=True)
    campaign = Campaign(
        db_url, seconds, seed, settings or CampaignSettings(), folder, progress or _silent
    )
    return campaign.run()


def _silent(line: str) -> None:
    """Progress that goes nowhere."""


@contextmanager
def fresh_database(db_url: str | None, workdir: Path) -> Iterator[str]:
    """A new SQLite file (no URL), or a new schema on the PostgreSQL URL, dropped afterwards."""
    if db_url is None:
        yield f"sqlite:///{workdir / 'campaign.sqlite3'}"
        return
    url = make_url(db_url)
    if url.get_backend_name() != "postgresql":
        yield db_url
        return
    with fresh_schema(db_url, "fsm_campaign") as scoped:
        yield scoped


def main(argv: Sequence[str] | None = None) -> int:
    """Run one campaign from the command line; exit 0 if nothing was found wrong."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.campaign.campaign", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--db-url",
        default=None,
        help="a PostgreSQL URL (a fresh schema is made on it and dropped after) or a SQLite "
        "URL of an empty database (default: a new SQLite file in the work folder)",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="chaos time (default 60)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--updaters", type=int, default=CampaignSettings.updaters)
    parser.add_argument("--relays", type=int, default=CampaignSettings.relays)
    parser.add_argument("--users", type=int, default=CampaignSettings.users)
    parser.add_argument("--workdir", default=None, help="where logs go (default: a temp folder)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="fsm-campaign-"))
    workdir.mkdir(parents=True, exist_ok=True)
    settings = CampaignSettings(updaters=args.updaters, relays=args.relays, users=args.users)
    progress = _stderr
    with fresh_database(args.db_url, workdir) as db_url:
        report = run_campaign(
            db_url, args.seconds, args.seed, settings=settings, workdir=workdir, progress=progress
        )
    out: IO[str] = sys.stdout
    if args.json:
        print(json.dumps(report.to_json(), sort_keys=True, default=str), file=out)
    else:
        print(report.format(), file=out)
    return 1 if report.problems() else 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
