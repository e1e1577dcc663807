"""Fault tests: the flow on SQLite and PostgreSQL against a real broker that goes away."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer, AuditLog
from adapters.sqlalchemy.tables import TABLES
from fsm.relay import RelayReport
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.flow import FlowState
from userstatus.orchestrator import UserStatusUpdateOrchestrator
from userstatus.outcomes import StorageError
from userstatus.relay import OutboxRelay

from .conftest import sql_app

S = UserStatus
F = FlowState
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def app(db_url: str, broker: LocalBroker) -> Iterator[FlowApp]:
    """The flow on a fresh database and broker, with users 1-6 active."""
    flow = sql_app(db_url, broker)
    with flow.unit_of_work() as uow:
        for user_id in range(1, 7):
            uow.users.create(user_id, "active")
    yield flow
    flow.close()


def update(app: FlowApp, user_id: int, status: UserStatus) -> tuple[str, F]:
    run = app.orchestrator().perform(UpdateUserStatusPayload(user_id, status))
    return run.id, run.state


def stored_run(app: FlowApp, run_id: str) -> tuple[F, dict[str, object]]:
    run = app.runs().load(run_id)
    return run.state, run.context


def audit(app: FlowApp, expect: set[str]) -> AuditLog:
    return AuditConsumer(app.kafka, TOPIC).read_all(expect=expect, timeout=15, quiet=0.2)


def event_id(app: FlowApp, run_id: str) -> str:
    _, context = stored_run(app, run_id)
    event = context["event"]
    assert isinstance(event, dict)
    return str(event["event_id"])


def statuses_by_user(log: AuditLog) -> dict[str, list[str]]:
    return {
        key: [UserStatusChanged.decode(e.value).new_status.value for e in events]
        for key, events in log.by_key().items()
    }


class TestBrokerOutage:
    def test_publish_failed_then_relay_publishes_all(
        self, app: FlowApp, broker: LocalBroker
    ) -> None:
        """Broker down: publish_failed; broker back: the relay publishes, nothing is lost."""
        broker.stop()
        runs = [update(app, 1, S.SUSPENDED), update(app, 2, S.CLOSED), update(app, 1, S.ACTIVE)]
        assert [state for _, state in runs] == [F.PUBLISH_FAILED] * 3
        with app.unit_of_work() as uow:
            assert uow.users.get(1).status == "active"  # type: ignore[union-attr]
            assert uow.outbox.counts()["pending"] == 3
        broker.start()
        report = app.relay().run(until_idle=True, max_seconds=30)
        assert report.published == 3
        ids = {event_id(app, run_id) for run_id, _ in runs}
        log = audit(app, ids)
        assert ids <= log.events.keys()
        assert {stored_run(app, run_id)[0] for run_id, _ in runs} == {F.PUBLISHED}
        assert statuses_by_user(log) == {"1": ["suspended", "active"], "2": ["closed"]}

    def test_retries_exhausted_dead_letters_and_reports(
        self, db_url: str, broker: LocalBroker
    ) -> None:
        """With the broker gone for good the relay dead-letters the event and says so."""
        app = sql_app(db_url, broker, max_attempts=2)
        with app.unit_of_work() as uow:
            uow.users.create(1, "active")
        broker.stop()
        run_id, state = update(app, 1, S.SUSPENDED)
        assert state == F.PUBLISH_FAILED
        report = app.relay().run(until_idle=True, max_seconds=30)
        assert (report.failed, report.dead) == (0, 1)  # attempt 1 was the immediate publish
        dead_id = event_id(app, run_id)
        assert report.dead_events == [dead_id]
        state, _ = stored_run(app, run_id)
        assert state == F.DEAD_LETTERED
        with app.unit_of_work() as uow:
            assert uow.outbox.counts() == {"pending": 0, "published": 0, "dead": 1}
            entry = uow.outbox.get(dead_id)
            assert entry is not None and "gave up after 2 attempts" in (entry.last_error or "")
        app.close()


class TestRestartedBroker:
    def test_no_run_is_published_unless_the_broker_stored_its_event(
        self, db_url: str, broker: LocalBroker
    ) -> None:
        """Two apps and a restart that re-issues producer ids: every published run's event is
        on the topic (before the fix, A's last run was `published` and its event nowhere)."""
        a, b = sql_app(db_url, broker), sql_app(db_url, broker)
        with a.unit_of_work() as uow:
            uow.users.create(1, "active")
        oa, ob = a.orchestrator(), b.orchestrator()  # one producer each, kept

        def perform(orchestrator: UserStatusUpdateOrchestrator, status: UserStatus) -> str:
            return orchestrator.perform(UpdateUserStatusPayload(1, status)).id

        perform(oa, S.SUSPENDED)  # A's producer gets id 1 from this broker
        broker.restart()  # the new broker hands id 1 out again, to B
        after = [perform(ob, S.ACTIVE), perform(ob, S.SUSPENDED), perform(oa, S.ACTIVE)]
        a.relay().run(until_idle=True, max_seconds=30)  # A's refused send is retried here
        ids = {event_id(a, run_id) for run_id in after}
        log = audit(a, ids)
        assert {stored_run(a, run_id)[0] for run_id in after} == {F.PUBLISHED}
        assert ids <= log.events.keys()
        assert statuses_by_user(log)["1"][-1] == "active"  # the topic agrees with the database
        for app in (a, b):
            app.close()


class TestCrashBetweenCommitAndPublish:
    def test_killed_process_event_is_published_by_the_relay(
        self, app: FlowApp, db_url: str, broker: LocalBroker
    ) -> None:
        """A process killed right after its commit leaves a pending event the relay publishes."""
        script = textwrap.dedent(
            f"""
            import os
            from datetime import timedelta
            from adapters.kafka.config import KafkaConfig
            from userstatus.app import FlowApp
            from userstatus.domain import UpdateUserStatusPayload, UserStatus

            class DieOnPublish:
                def publish(self, message):
                    os._exit(9)  # killed after the commit, before the broker saw anything

            app = FlowApp.connect(
                {db_url!r},
                KafkaConfig({broker.bootstrap_servers!r}),
                publish_grace=timedelta(seconds=3),
            )
            app.orchestrator(DieOnPublish()).perform(UpdateUserStatusPayload(3, UserStatus.CLOSED))
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, capture_output=True, timeout=60
        )
        assert done.returncode == 9, done.stderr.decode()
        with app.unit_of_work() as uow:
            assert uow.users.get(3).status == "closed"  # type: ignore[union-attr]
            assert uow.outbox.counts()["pending"] == 1
            run_id, event = uow.session.execute(
                select(TABLES.outbox.c.run_id, TABLES.outbox.c.event_id)
            ).one()
        assert run_id is not None
        assert stored_run(app, run_id)[0] == F.STATUS_UPDATED
        relay = app.relay()
        assert relay.run_once().claimed == 0  # held for the dead process until its grace ends
        report = relay.run(until_idle=True, max_seconds=30)  # polls until the hold runs out
        assert report.published == 1
        assert stored_run(app, run_id)[0] == F.PUBLISHED
        assert event in audit(app, {event}).events


class TestIdempotencyAcrossProcesses:
    def test_two_processes_racing_with_one_key_make_one_run_and_one_event(
        self, app: FlowApp, db_url: str, broker: LocalBroker
    ) -> None:
        """The same request sent by two processes at the same instant applies once."""
        start_at = time.time() + 4  # both are imported and connected by then
        script = textwrap.dedent(
            f"""
            import time
            from adapters.kafka.config import KafkaConfig
            from userstatus.app import FlowApp
            from userstatus.domain import UpdateUserStatusPayload, UserStatus

            app = FlowApp.connect({db_url!r}, KafkaConfig({broker.bootstrap_servers!r}))
            orchestrator = app.orchestrator()
            from userstatus.orchestrator import RunNotSettled
            time.sleep(max(0.0, {start_at!r} - time.time()))
            try:
                run = orchestrator.perform(
                    UpdateUserStatusPayload(2, UserStatus.SUSPENDED), idempotency_key="pay-123"
                )
                print(run.id, run.state.value)
            except RunNotSettled as error:  # the other one is publishing it right now
                print(error.run_id, "not_settled")
            app.close()
            """
        )
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(2)
        ]
        outputs = [p.communicate(timeout=60) for p in processes]
        assert [p.returncode for p in processes] == [0, 0], [err.decode() for _, err in outputs]
        answers = [out.decode().split() for out, _ in outputs]
        run_ids = {run_id for run_id, _ in answers}
        assert len(run_ids) == 1
        states = sorted(state for _, state in answers)
        assert states[0] in ("not_settled", "publish_failed", "published")
        assert states[1] in ("publish_failed", "published")  # one of them saw it through
        with app.unit_of_work() as uow:
            rows = uow.session.execute(
                select(TABLES.outbox.c.event_id, TABLES.outbox.c.run_id)
            ).all()
            assert uow.users.get(2).version == 2  # type: ignore[union-attr]
        assert [run_id for _, run_id in rows] == list(run_ids)
        assert audit(app, {rows[0][0]}).events.keys() == {rows[0][0]}


class TestFailedUpdate:
    def test_failed_database_write_publishes_nothing(self, app: FlowApp) -> None:
        """A write the database refuses rolls the whole step back: no status change, no event."""
        with app.unit_of_work() as uow:  # an older event already holds the id "taken"
            uow.outbox.add(
                UserStatusChanged("taken", 6, S.ACTIVE, S.SUSPENDED, app.clock()).to_message()
            )
            uow.outbox.mark_published("taken", owner="test", now=app.clock())
        orchestrator = app.orchestrator()
        orchestrator.ids = iter(["run-1", "taken"]).__next__  # the new event collides
        run = orchestrator.perform(UpdateUserStatusPayload(1, S.SUSPENDED))
        assert run.state == F.UPDATE_FAILED
        assert isinstance(run.outcome, StorageError)
        # What is stored names the error and the constraint, never the values (the SQL's
        # parameters are customer data in a payments database).
        assert "event_id" in run.outcome.error and "taken" not in run.outcome.error
        assert "INSERT" not in run.outcome.error
        with app.unit_of_work() as uow:
            assert uow.users.get(1).status == "active"  # type: ignore[union-attr]
            assert uow.outbox.counts() == {"pending": 0, "published": 1, "dead": 0}
        assert app.relay().run(until_idle=True, max_seconds=10).claimed == 0
        log = AuditConsumer(app.kafka, TOPIC).read_all(timeout=1.0, quiet=0.2)
        assert log.events == {}


class TestPerUserOrder:
    def test_topic_order_matches_commit_order_with_several_relays(
        self, app: FlowApp, broker: LocalBroker
    ) -> None:
        """Three relays at once publish every user's events in the order they committed."""
        broker.stop()
        plan = [
            (1, S.SUSPENDED), (2, S.SUSPENDED), (1, S.ACTIVE), (3, S.CLOSED),
            (2, S.ACTIVE), (1, S.SUSPENDED), (4, S.SUSPENDED), (2, S.SUSPENDED),
            (1, S.ACTIVE), (4, S.ACTIVE), (2, S.ACTIVE), (1, S.CLOSED),
        ]  # fmt: skip
        orchestrator = app.orchestrator()
        # Each user's first update waits out the publish bound (~1 s); the later ones of
        # that user do not try at all: they queue behind the pending one.
        run_ids = [orchestrator.perform(UpdateUserStatusPayload(u, s)).id for u, s in plan]
        broker.start()
        relays = [app.relay(owner=f"relay-{n}") for n in range(3)]
        reports: list[RelayReport] = []

        def work(relay: OutboxRelay) -> None:
            reports.append(relay.run(until_idle=True, max_seconds=60))

        threads = [threading.Thread(target=work, args=(r,)) for r in relays]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert [t.name for t in threads if t.is_alive()] == []  # every relay went idle
        assert len(reports) == len(relays)
        ids = {event_id(app, run_id) for run_id in run_ids}
        log = audit(app, ids)
        assert ids <= log.events.keys()
        expected: dict[str, list[str]] = {}
        for user_id, status in plan:
            expected.setdefault(str(user_id), []).append(status.value)
        assert statuses_by_user(log) == expected
        assert sum(r.published for r in reports) == len(plan)
        assert log.duplicates == 0  # leases never expired, so nothing was sent twice
