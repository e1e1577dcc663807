"""`fsm demo`: the whole flow end to end, with a broker outage, recovery and an honest audit."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.kafka.broker import LocalBroker, free_port
from adapters.kafka.config import KafkaConfig
from adapters.kafka.consumer import AuditConsumer, AuditLog
from adapters.sqlalchemy import create_engine, init_db
from adapters.sqlalchemy.engine import shown_url
from fsm.relay import RelaySettings
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import TOPIC, EventDecodeError, UserStatusChanged
from userstatus.flow import FlowState
from userstatus.orchestrator import UserStatusUpdateOrchestrator
from userstatus.sql import FLOW_TABLES

S = UserStatus
Progress = Callable[[str], None]

# Starting statuses of the demo's users (by position) and the updates, as
# (user position, new status); position 99 is a user that does not exist.
INITIAL = [S.PENDING_VERIFICATION, S.ACTIVE, S.ACTIVE, S.SUSPENDED, S.ACTIVE, S.CLOSED]
INITIAL += [S.PENDING_VERIFICATION, S.ACTIVE, S.SUSPENDED, S.ACTIVE, S.ACTIVE, S.ACTIVE]
MISSING = 99
BEFORE_OUTAGE = [
    (0, S.ACTIVE), (1, S.SUSPENDED), (2, S.CLOSED), (3, S.ACTIVE), (MISSING, S.ACTIVE),
    (5, S.ACTIVE),  # closed -> active: an illegal change
    (6, S.ACTIVE), (7, S.SUSPENDED), (8, S.CLOSED), (9, S.SUSPENDED),
]  # fmt: skip
DURING_OUTAGE = [
    (1, S.ACTIVE), (1, S.SUSPENDED),  # the second waits behind the first (per-user order)
    (4, S.SUSPENDED), (10, S.CLOSED), (11, S.SUSPENDED), (9, S.ACTIVE), (9, S.CLOSED),
]  # fmt: skip
AFTER_RECOVERY = [(1, S.ACTIVE), (0, S.SUSPENDED), (3, S.CLOSED), (11, S.ACTIVE), (4, S.ACTIVE)]

DIAGRAM = Path("diagrams") / "user_status_update.svg"
"""Rendered by `fsm diagram --all` into the project's diagrams/ folder."""


@dataclass
class DemoOptions:
    """What the demo runs against; the defaults are all embedded."""

    db_url: str | None = field(default=None, repr=False)  # it may hold a password
    """None: a new SQLite file in a temporary folder."""
    kafka: KafkaConfig | None = None
    """None: a local Tansu broker started (and stopped) by the demo."""
    progress: Progress = print


@dataclass
class DemoRecord:
    """What the demo did, for the audit at the end."""

    run_ids: list[str] = field(default_factory=list)
    user_ids: dict[int, int] = field(default_factory=dict)
    """Position -> user id."""
    timings: dict[str, float] = field(default_factory=dict)


def run_demo(options: DemoOptions) -> dict[str, Any]:
    """Run the demo and return its summary (see `format_summary`)."""
    say = options.progress
    with _broker(options, say) as (kafka, broker):
        db_url = options.db_url or _temporary_sqlite()
        created = init_schema(db_url)
        made = f" (created tables {', '.join(created)})" if created else ""
        say(f"[1/7] database: {shown_url(db_url)}{made}")
        app = FlowApp.connect(
            db_url,
            kafka,
            relay_settings=RelaySettings(
                batch_size=20,
                lease_seconds=30,
                max_attempts=30,
                backoff_initial=0.2,
                backoff_max=2.0,
                idle_interval=0.2,
            ),
        )
        try:
            return _run(app, broker, kafka, db_url, say)
        finally:
            app.close()


def _run(
    app: FlowApp, broker: LocalBroker | None, kafka: KafkaConfig, db_url: str, say: Progress
) -> dict[str, Any]:
    record = DemoRecord()
    audit = AuditLog()
    orchestrator = app.orchestrator()

    with _timed(record, "setup"):
        _create_users(app, record)
    say(f"[2/7] created {len(INITIAL)} users (ids {_id_range(record)})")

    with _timed(record, "before_outage"):
        say(f"[3/7] {len(BEFORE_OUTAGE)} status updates, broker up")
        _perform(orchestrator, BEFORE_OUTAGE, record, say)
        # The audit service consumes as events arrive: it has these before the outage.
        _consume(kafka, audit, app, record, say, quiet=0.3)

    with _timed(record, "outage"):
        if broker is not None:
            broker.stop()
            say("[4/7] broker stopped: the next updates commit but cannot be published")
            outage_orchestrator = orchestrator
        else:
            # A real cluster is not ours to stop: publish to an address nobody listens on.
            dead = KafkaConfig(
                bootstrap_servers=f"127.0.0.1:{free_port()}",
                request_timeout_ms=500,
                delivery_timeout_ms=800,
                max_block_ms=500,
            )
            outage_orchestrator = app.orchestrator(app.publisher(dead))
            say("[4/7] outage simulated: publishing to an unreachable address")
        say(f"      {len(DURING_OUTAGE)} status updates, broker down")
        _perform(outage_orchestrator, DURING_OUTAGE, record, say)

    with _timed(record, "recovery"):
        if broker is not None:
            broker.start()
            say(f"[5/7] broker back on {broker.bootstrap_servers} (empty: storage is in memory)")
        else:
            say("[5/7] outage over")
        _relay_until_idle(app, say)

    with _timed(record, "after_recovery"):
        say(f"[6/7] {len(AFTER_RECOVERY)} status updates, broker up again")
        _perform(orchestrator, AFTER_RECOVERY, record, say)
        _relay_until_idle(app, say)  # in case a publish failed again

    with _timed(record, "audit"):
        say(f"[7/7] audit service reading {TOPIC}")
        _consume(kafka, audit, app, record, say, quiet=1.0)
    return _summary(app, record, audit, db_url, kafka, broker)


def _create_users(app: FlowApp, record: DemoRecord) -> None:
    uow = app.unit_of_work()
    with uow:
        # Fresh ids after any earlier demo's users (a reused PostgreSQL keeps them).
        base = uow.users.highest_id() + 1
        for position, status in enumerate(INITIAL):
            uow.users.create(base + position, status.value)
            record.user_ids[position] = base + position
    record.user_ids[MISSING] = base + 1000  # never created


def _perform(
    orchestrator: UserStatusUpdateOrchestrator,
    plan: list[tuple[int, UserStatus]],
    record: DemoRecord,
    say: Progress,
) -> None:
    for position, status in plan:
        user_id = record.user_ids[position]
        run = orchestrator.perform(UpdateUserStatusPayload(user_id, status))
        record.run_ids.append(run.id)
        detail = getattr(run.outcome, "error", None) or type(run.outcome).__name__
        detail = str(detail).rpartition(" failed: ")[2]  # the cause, without the event id
        say(f"      user {user_id} -> {status.value}: {run.state.value} ({_short(detail)})")


def _relay_until_idle(app: FlowApp, say: Progress, max_seconds: float = 120.0) -> None:
    relay = app.relay(owner="demo-relay")
    say(f"      relay: {relay.pending()} event(s) pending")
    report = relay.run(until_idle=True, max_seconds=max_seconds)
    pending = relay.pending()
    say(
        f"      relay: published {report.published}, failed {report.failed}, "
        f"dead-lettered {report.dead}; {pending} pending"
    )
    if pending:
        say(f"      relay: gave up waiting after {max_seconds:.0f} s with {pending} pending")


def _consume(
    kafka: KafkaConfig,
    audit: AuditLog,
    app: FlowApp,
    record: DemoRecord,
    say: Progress,
    *,
    quiet: float,
) -> None:
    expected = {e for e, _ in _published_events(app, record)}
    AuditConsumer(kafka, TOPIC).read_all(expect=expected, timeout=30, quiet=quiet, log=audit)
    mine = [e for e in audit.events if e in expected]
    say(f"      audit: {len(mine)} of {len(expected)} published event(s) seen so far")


def _published_events(app: FlowApp, record: DemoRecord) -> list[tuple[str, str]]:
    """(event id, run id) of the demo's runs the database says were published."""
    machine = app.runs()
    found = []
    for run_id in record.run_ids:
        run = machine.load(run_id)
        if run.state == FlowState.PUBLISHED:
            found.append((run.context["event"]["event_id"], run_id))
    return found


def _summary(
    app: FlowApp,
    record: DemoRecord,
    audit: AuditLog,
    db_url: str,
    kafka: KafkaConfig,
    broker: LocalBroker | None,
) -> dict[str, Any]:
    runs = app.runs()
    by_state: dict[str, int] = {state.value: 0 for state in FlowState}
    committed: list[UserStatusChanged] = []  # in commit order (the demo runs one at a time)
    dead: list[str] = []
    run_ids = set(record.run_ids)
    for run_id in record.run_ids:
        run = runs.load(run_id)
        by_state[run.state.value] += 1
        if "event" in run.context:
            committed.append(UserStatusChanged.from_json(run.context["event"]))
        if run.state == FlowState.DEAD_LETTERED:
            dead.append(run.context["event"]["event_id"])
    committed_ids = {event.event_id for event in committed}

    seen: dict[str, UserStatusChanged] = {}
    arrivals: dict[str, list[str]] = {}
    for key, events in audit.by_key().items():
        for consumed in events:
            try:
                event = UserStatusChanged.decode(consumed.value)
            except EventDecodeError:
                continue
            if event.run_id not in run_ids:
                continue  # an earlier demo's event on a reused topic
            seen[event.event_id] = event
            arrivals.setdefault(key, []).append(event.event_id)
    # Duplicates among this demo's events: copies the consumer dropped by event id.
    duplicates = audit.duplicates_among(seen.keys())

    lost = sorted(committed_ids - seen.keys())
    phantom = sorted(seen.keys() - committed_ids)
    expected_order: dict[str, list[str]] = {}
    for event in committed:
        if event.event_id in seen:
            expected_order.setdefault(str(event.user_id), []).append(event.event_id)
    order_violations = sorted(
        key for key in expected_order if arrivals.get(key) != expected_order[key]
    )
    mismatched = _status_mismatches(app, record, committed)
    with app.unit_of_work() as uow:
        outbox = uow.outbox.counts()

    return {
        "runs": len(record.run_ids),
        "runs_by_state": by_state,
        "status_changes_committed": len(committed),
        "events_published": len(seen),
        "duplicates": duplicates,
        "events_lost": len(lost),
        "lost_event_ids": lost,
        "events_without_commit": len(phantom),
        "dead_lettered": len(dead),
        "per_user_order_violations": len(order_violations),
        "final_status_mismatches": mismatched,
        "outbox_pending": outbox.get("pending", 0),
        "database": shown_url(db_url),
        "broker": "embedded Tansu (started and stopped by the demo)"
        if broker is not None
        else kafka.bootstrap_servers,
        "topic": TOPIC,
        "diagram": _diagram_hint(),
        "seconds": {k: round(v, 2) for k, v in record.timings.items()},
    }


def _status_mismatches(app: FlowApp, record: DemoRecord, committed: list[UserStatusChanged]) -> int:
    """Users whose stored status differs from the last committed change announced for them."""
    last: dict[int, str] = {}
    for event in committed:
        last[event.user_id] = event.new_status.value
    with app.unit_of_work() as uow:
        stored = {uid: uow.users.get(uid) for uid in last}
    return sum(
        1 for uid, status in last.items() if (u := stored[uid]) is None or u.status != status
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as people read it."""
    states = summary["runs_by_state"]
    width = max(len(s) for s in states)
    lines = [
        "",
        "Summary",
        f"  database   {summary['database']}",
        f"  broker     {summary['broker']}",
        f"  runs       {summary['runs']}, by final state:",
        *(f"    {state:<{width}}  {count}" for state, count in states.items()),
        f"  status changes committed  {summary['status_changes_committed']}",
        f"  events published          {summary['events_published']} "
        f"(distinct, on {summary['topic']})",
        f"  duplicates                {summary['duplicates']} (dropped by event id)",
        f"  events lost               {summary['events_lost']}",
        f"  events without a commit   {summary['events_without_commit']}",
        f"  dead-lettered             {summary['dead_lettered']}",
        f"  per-user order violations {summary['per_user_order_violations']}",
        f"  outbox still pending      {summary['outbox_pending']}",
        f"  flow diagram              {summary['diagram']}",
    ]
    verdict = "OK: no event lost" if demo_ok(summary) else "FAILED: see the counts above"
    lines += ["", verdict]
    return "\n".join(lines)


def demo_ok(summary: dict[str, Any]) -> bool:
    """True when nothing was lost, invented, reordered or left pending."""
    return bool(
        summary["events_lost"] == 0
        and summary["events_without_commit"] == 0
        and summary["per_user_order_violations"] == 0
        and summary["final_status_mismatches"] == 0
        and summary["outbox_pending"] == 0
    )


# -- helpers -------------------------------------------------------------------------------


@contextmanager
def _broker(
    options: DemoOptions, say: Progress
) -> Iterator[tuple[KafkaConfig, LocalBroker | None]]:
    if options.kafka is not None:
        say(f"[0/7] broker: {options.kafka.bootstrap_servers} (external)")
        yield options.kafka, None
        return
    with LocalBroker() as broker:
        say(f"[0/7] broker: embedded Tansu on {broker.bootstrap_servers}")
        # Short bounds (the broker is local) keep the outage phase to seconds.
        local = KafkaConfig(
            bootstrap_servers=broker.bootstrap_servers,
            request_timeout_ms=800,
            delivery_timeout_ms=1_000,
            max_block_ms=500,
        )
        yield local, broker


@contextmanager
def _timed(record: DemoRecord, phase: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        record.timings[phase] = time.monotonic() - started


def init_schema(db_url: str) -> list[str]:
    """Create the tables the demo's database lacks (the demo owns it); return their names."""
    engine = create_engine(db_url)
    try:
        return init_db(engine, extra=FLOW_TABLES)
    finally:
        engine.dispose()


def _temporary_sqlite() -> str:
    folder = Path(tempfile.mkdtemp(prefix="fsm-demo-"))
    return f"sqlite:///{folder / 'demo.sqlite3'}"


def _id_range(record: DemoRecord) -> str:
    ids = [uid for pos, uid in record.user_ids.items() if pos != MISSING]
    return f"{min(ids)}-{max(ids)}"


def _short(text: str, limit: int = 70) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _diagram_hint() -> str:
    checkout = Path(__file__).resolve().parents[1]  # a clone or an editable install
    for candidate in (checkout / DIAGRAM, Path.cwd() / DIAGRAM):
        if candidate.exists():
            return str(candidate)
    return f"{DIAGRAM} (draw it: fsm diagram userstatus.flow:machine --format svg -o flow.svg)"


def quiet_library_logs() -> None:
    """kafka-python logs every reconnect attempt; the demo's own lines say what happens."""
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
