"""The relay settles a batch of published events in one transaction, on SQLite and PostgreSQL
with the real broker: a few statements per batch whatever its size, and any one fault in it
(a statement, a commit, a commit whose acknowledgement is lost) recovered from with every
run published once and every event on the topic; the sync relay and the async one."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any, Literal, TypeVar

import pytest
from sqlalchemy import func, select

from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer
from adapters.kafka.publisher import AsyncKafkaPublisher, KafkaPublisher
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from adapters.sqlalchemy import create_async_engine
from adapters.sqlalchemy.tables import TABLES
from fsm.outbox import Published
from fsm.relay import RelaySettings
from tests.clock import Clock
from tests.faults.injector import Fault, FaultInjector
from userstatus.app import AsyncFlowApp, FlowApp, publish_grace
from userstatus.demo import init_schema
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState
from userstatus.relay import FlowSettler

from .conftest import fast_config

T = TypeVar("T")
Kind = Literal["sync", "async"]
TOPIC = "UserUpdateTopic"
LEASE = 30.0
SETTINGS = RelaySettings(
    batch_size=50, lease_seconds=LEASE, max_attempts=50, backoff_initial=0.05, backoff_max=0.2
)


@dataclass
class World:
    """The flow on one database and the real broker, on a hand-moved clock; the relays are
    sync, or async (`aio`, on its own loop) with the injector on their engine."""

    app: FlowApp
    clock: Clock
    injector: FaultInjector
    publisher: KafkaPublisher | AsyncKafkaPublisher
    users: Iterator[int]
    aio: AsyncFlowApp | None = None
    loop: asyncio.AbstractEventLoop | None = None

    def relay(self, owner: str) -> Any:
        """A relay of the world's kind on the real publisher, its waits moving the clock."""
        if self.aio is None:
            relay: Any = self.app.relay(self.publisher, owner=owner)  # type: ignore[arg-type]
        else:
            relay = self.aio.relay(self.publisher, owner=owner)  # type: ignore[arg-type]
        relay.sleep = self.clock.sleep
        return relay

    def drive(self, result: Awaitable[T] | T) -> T:
        """What a relay's call came to (an async one's awaited on the world's loop)."""
        if inspect.isawaitable(result):
            assert self.loop is not None
            done: T = self.loop.run_until_complete(result)
            return done
        return result

    def backlog(self, size: int) -> list[str]:
        """`size` committed updates of new users whose immediate publish failed: their runs
        wait in publish_failed, their events pending for the relay."""
        down = FakePublisher()
        down.failing = True
        orchestrator = self.app.orchestrator(down)
        ids = [next(self.users) for _ in range(size)]
        with self.app.unit_of_work() as uow:
            for user in ids:
                uow.users.create(user, "active")
        runs = [
            orchestrator.perform(UpdateUserStatusPayload(user, UserStatus.SUSPENDED))
            for user in ids
        ]
        assert {run.state for run in runs} == {FlowState.PUBLISH_FAILED}
        # Past the hold a failed immediate publish leaves on its event.
        hold = publish_grace(self.app.retry, self.app.kafka).total_seconds()
        self.clock.advance(hold + 1)
        return [run.id for run in runs]

    def relay_once(self, owner: str) -> int:
        """One batch: claim, publish, settle; how many were published."""
        published: int = self.drive(self.relay(owner).run_once()).published
        return published

    def recover(self) -> None:
        """Past the lease, a fault-free relay works until nothing is pending."""
        self.injector.reset()
        self.clock.advance(LEASE + 1)
        self.drive(self.relay("recovery").run(until_idle=True, max_seconds=300))

    def problems(self, run_ids: list[str]) -> list[str]:
        """How the runs, their history and their outbox rows disagree with 'published once'."""
        runs, history, outbox = TABLES.runs, TABLES.history, TABLES.outbox
        found: list[str] = []
        with self.app.engine.connect() as connection:
            for run_id in run_ids:
                state = connection.execute(
                    select(runs.c.state).where(runs.c.id == run_id)
                ).scalar_one()
                into = connection.execute(
                    select(func.count())
                    .select_from(history)
                    .where(history.c.run_id == run_id, history.c.target == "published")
                ).scalar_one()
                status = connection.execute(
                    select(outbox.c.status).where(outbox.c.run_id == run_id)
                ).scalar_one()
                if (state, into, status) != ("published", 1, "published"):
                    found.append(
                        f"run {run_id[:8]}: {state}, {into} step(s) into published, event {status}"
                    )
        return found


@contextmanager
def world(db_url: str, broker: LocalBroker, kind: Kind = "sync") -> Iterator[World]:
    init_schema(db_url)
    clock = Clock()
    kafka = fast_config(broker)
    options: dict[str, Any] = {
        "retry": RetryPolicy(attempts=1),
        "relay_settings": SETTINGS,
        "clock": clock,
    }
    app = FlowApp.connect(db_url, kafka, **options)
    if kind == "sync":
        publisher = KafkaPublisher(kafka)
        try:
            yield World(app, clock, FaultInjector(app.engine), publisher, count(1))
        finally:
            publisher.close()
            app.close()
        return
    loop = asyncio.new_event_loop()
    aio = AsyncFlowApp(create_async_engine(db_url), kafka, **options)
    produce = AsyncKafkaPublisher(kafka)
    injector = FaultInjector(aio.engine.sync_engine)
    try:
        yield World(app, clock, injector, produce, count(1), aio, loop)
    finally:
        loop.run_until_complete(produce.close())
        loop.run_until_complete(aio.close())
        loop.close()
        app.close()


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> Kind:
    """The relay's kind: OutboxRelay, or AsyncOutboxRelay on the same database."""
    chosen: Kind = request.param
    return chosen


def event_ids(app: FlowApp) -> set[str]:
    with app.engine.connect() as connection:
        return set(connection.execute(select(TABLES.outbox.c.event_id)).scalars())


class TestOneTransaction:
    def test_a_batch_costs_the_same_statements_whatever_its_size(
        self, db_url: str, broker: LocalBroker, kind: Kind
    ) -> None:
        """Claim and settle: two commits and the same statements for 3 events as for 30;
        every run published once, every event on the topic."""
        with world(db_url, broker, kind) as w:
            seen = []
            for size in (3, 30):
                runs = w.backlog(size)
                w.injector.reset()
                assert w.relay_once(f"relay-{size}") == size
                seen.append((len(w.injector.statements), w.injector.commits))
                assert w.problems(runs) == []
            assert seen[0] == seen[1]
            assert seen[0][1] == 2
            expected = event_ids(w.app)
            audit = AuditConsumer(w.app.kafka, TOPIC).read_all(expect=expected, timeout=15)
            assert expected <= audit.events.keys()

    def test_a_run_that_moved_sends_the_batch_one_by_one(
        self, db_url: str, broker: LocalBroker, kind: Kind, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One run of the batch is finished already (by another relay, its lease run out,
        say): the batch's transaction fails, and each is settled alone, as an INFO line
        says; all end published, none twice, as the batch's summary line says."""
        caplog.set_level(logging.INFO, logger="fsm.relay")
        with world(db_url, broker, kind) as w:
            runs = w.backlog(3)
            with w.app.unit_of_work() as uow:
                event = uow.session.execute(
                    select(TABLES.outbox.c.event_id).where(TABLES.outbox.c.run_id == runs[1])
                ).scalar_one()
            other = FlowSettler(w.app.unit_of_work(), clock=w.clock, worker="other")
            other.finish(runs[1], Published(event))
            w.injector.reset()
            assert w.relay_once("relay") == 3
            assert w.injector.commits > 2  # the batch's settle rolled back, then one by one
            assert w.problems(runs) == []
        lines = [r.getMessage() for r in caplog.records if r.name == "fsm.relay"]
        (line,) = [line for line in lines if "at once failed" in line]
        assert line.startswith("relay relay: settling 3 published events at once failed (")
        assert line.endswith("); settling each alone")
        assert "relay relay: claimed 3, published 3, failed 0, dead-lettered 0" in lines


class TestOneFault:
    @pytest.mark.parametrize("size", [3])
    def test_any_one_fault_in_a_batch_then_recovery(
        self, db_url: str, broker: LocalBroker, size: int, kind: Kind
    ) -> None:
        """Every statement of a batch's claim and settle with a transient fault, every
        commit with both kinds: after a fault-free relay every run is published once."""
        with world(db_url, broker, kind) as w:
            runs = w.backlog(size)
            w.injector.reset()
            assert w.relay_once("dry-run") == size
            statements, commits = len(w.injector.statements), w.injector.commits
            faults = [Fault("stmt", n) for n in range(1, statements + 1)] + [
                Fault("commit", n, kind)
                for n in range(1, commits + 1)
                for kind in ("transient", "lost-ack")
            ]
            failures: list[str] = []
            for fault in faults:
                runs = w.backlog(size)
                w.injector.arm(fault)
                try:
                    w.relay_once("faulted")
                except Exception as error:  # allowed: what matters is what is stored after
                    failures.append(f"{fault}: the relay raised {error!r}")
                fired = w.injector.fired
                w.recover()
                failures += [f"{fault} ({fired}): {p}" for p in w.problems(runs)]
            assert failures == []
            expected = event_ids(w.app)
            audit = AuditConsumer(w.app.kafka, TOPIC).read_all(expect=expected, timeout=15)
            assert expected <= audit.events.keys()
