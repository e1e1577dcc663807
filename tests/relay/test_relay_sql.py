"""The outbox relay on SQLite and PostgreSQL: leases that run out, runs that cannot settle;
sync and async (`relays`) where a test does not nest one relay's calls in another's."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
from sqlalchemy import Engine, select, update

from adapters.kafka.config import KafkaConfig
from adapters.kafka.retry import RetryPolicy
from adapters.sqlalchemy import create_async_engine
from adapters.sqlalchemy.tables import TABLES
from fsm.outbox import OutboxMessage, Published, PublishError, PublishFailed
from fsm.relay import RelaySettings
from tests.clock import Clock
from userstatus.app import AsyncFlowApp, FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState
from userstatus.relay import AsyncOutboxRelay, OutboxRelay

S = UserStatus
LEASE = 10.0
T = TypeVar("T")


class Topic:
    """What reached the broker, in order: (publisher name, key, event id)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, str, str]] = []

    def by_key(self, key: str) -> list[str]:
        """The event ids sent for `key`, in order, duplicates included."""
        return [event for _, k, event in self.log if k == key]


class Publisher:
    """Appends to a shared Topic; `down` makes it fail; `before` runs once before a send."""

    def __init__(self, name: str, topic: Topic) -> None:
        self.name = name
        self.topic = topic
        self.down = False
        self.before: Callable[[OutboxMessage], None] | None = None

    def publish(self, message: OutboxMessage) -> None:
        if self.down:
            raise PublishError(f"broker down ({self.name})")
        if self.before is not None:
            hook, self.before = self.before, None
            hook(message)
        self.topic.log.append((self.name, message.key, message.event_id))


class Awaited:
    """A test Publisher as an async one (for the async relay)."""

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    async def publish(self, message: OutboxMessage) -> None:
        self.publisher.publish(message)


class Relays:
    """Relays of one kind on the app's database, driven from a sync test: `make` builds one,
    `drive` gives what a call of it came to (an async relay's awaited on a loop of its own)."""

    def __init__(self, app: FlowApp, db_url: str | None) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self.aio = (
            None
            if db_url is None
            else AsyncFlowApp(
                create_async_engine(db_url),
                app.kafka,
                retry=app.retry,
                relay_settings=app.relay_settings,
                clock=app.clock,
            )
        )

    def make(self, publisher: Publisher, owner: str) -> OutboxRelay | AsyncOutboxRelay:
        if self.aio is None:
            return self.app.relay(publisher, owner=owner)
        return self.aio.relay(Awaited(publisher), owner=owner)

    def drive(self, result: Awaitable[T] | T) -> T:
        if inspect.isawaitable(result):
            done: T = self.loop.run_until_complete(result)
            return done
        return result

    def close(self) -> None:
        if self.aio is not None:
            self.loop.run_until_complete(self.aio.close())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def relays(request: pytest.FixtureRequest, app: FlowApp, db_url: str) -> Iterator[Relays]:
    """The sync relay (FlowApp.relay), or the async one (AsyncFlowApp.relay) on the same
    database, settings and clock."""
    made = Relays(app, db_url if request.param == "async" else None)
    yield made
    made.close()


@pytest.fixture
def clock() -> Clock:
    """A hand-driven clock."""
    return Clock()


@pytest.fixture
def app(engine: Engine, clock: Clock) -> Iterator[FlowApp]:
    """The flow on the database with users 1 and 2 active; nothing reaches Kafka."""
    flow = FlowApp(
        engine,
        KafkaConfig(bootstrap_servers="127.0.0.1:1"),
        retry=RetryPolicy(attempts=1),
        relay_settings=RelaySettings(
            lease_seconds=LEASE, publish_timeout=1.0, batch_size=10, max_attempts=3
        ),
        clock=clock,
    )
    with flow.unit_of_work() as uow:
        uow.users.create(1, "active")
        uow.users.create(2, "active")
    yield flow


def offline(app: FlowApp, *updates: tuple[int, UserStatus]) -> list[str]:
    """Commit updates while the broker is down; their run ids (all left to the relay)."""
    down = Publisher("orchestrator", Topic())
    down.down = True
    orchestrator = app.orchestrator(down)
    runs = [orchestrator.perform(UpdateUserStatusPayload(u, s)) for u, s in updates]
    assert {run.state for run in runs} == {FlowState.PUBLISH_FAILED}
    return [run.id for run in runs]


def outbox_rows(app: FlowApp) -> list[tuple[str, str, int]]:
    """(key, status, attempts) of every outbox row, oldest first."""
    with app.engine.connect() as connection:
        rows = connection.execute(
            select(TABLES.outbox.c.key, TABLES.outbox.c.status, TABLES.outbox.c.attempts).order_by(
                TABLES.outbox.c.id
            )
        )
        return [(key, status, attempts) for key, status, attempts in rows]


def event_ids(app: FlowApp, key: str) -> list[str]:
    """The event ids of `key`'s outbox rows, oldest first."""
    with app.engine.connect() as connection:
        found = connection.execute(
            select(TABLES.outbox.c.event_id)
            .where(TABLES.outbox.c.key == key)
            .order_by(TABLES.outbox.c.id)
        )
        return list(found.scalars())


def corrupt(app: FlowApp, run_id: str) -> None:
    """Break a stored run (a state the flow does not have) so it can no longer be loaded."""
    with app.engine.begin() as connection:
        connection.execute(
            update(TABLES.runs).where(TABLES.runs.c.id == run_id).values(state="no_such_state")
        )


class TestLeaseRunsOutMidBatch:
    def test_stale_relay_skips_and_order_holds(self, app: FlowApp, clock: Clock) -> None:
        """Relay A stalls past its lease; B publishes key 1's two events; A must not resend."""
        offline(app, (2, S.SUSPENDED), (1, S.SUSPENDED), (1, S.ACTIVE))
        clock.advance(100)
        topic = Topic()
        b = app.relay(Publisher("B", topic), owner="B")
        b_reports = []

        def stall(message: OutboxMessage) -> None:
            clock.advance(LEASE + 1)  # A's publish of key 2 stalls past its lease on key 1
            b_reports.extend([b.run_once(), b.run_once()])

        slow = Publisher("A", topic)
        slow.before = stall
        report = app.relay(slow, owner="A").run_once()
        assert topic.by_key("1") == event_ids(app, "1")  # in order, never resent
        assert (report.claimed, report.published, report.lost) == (2, 1, 1)
        assert [r.published for r in b_reports] == [2, 1]  # key 2 again (A overran), then e2
        assert [name for name, key, _ in topic.log if key == "1"] == ["B", "B"]
        assert [status for _, status, _ in outbox_rows(app)] == ["published"] * 3


class TestRelayDiesHoldingAClaim:
    def test_expired_claim_is_taken_again(self, app: FlowApp, clock: Clock, relays: Relays) -> None:
        """A claim whose relay died blocks its key only until the lease runs out."""
        (run_id,) = offline(app, (1, S.SUSPENDED))
        with app.unit_of_work() as uow:
            held = uow.outbox.claim(owner="dead", limit=10, lease_seconds=LEASE, now=clock())
        assert len(held) == 1
        topic = Topic()
        relay = relays.make(Publisher("live", topic), owner="live")
        assert relays.drive(relay.run_once()).claimed == 0
        clock.advance(LEASE + 1)
        assert relays.drive(relay.run_once()).published == 1
        assert app.runs().load(run_id).state == FlowState.PUBLISHED
        assert topic.by_key("1") == event_ids(app, "1")


class TestStopReleasesClaims:
    def test_claims_not_worked_on_are_claimable_at_once(self, app: FlowApp, relays: Relays) -> None:
        """A relay stopped mid-batch hands its other claims back without waiting a lease."""
        offline(app, (1, S.SUSPENDED), (2, S.CLOSED))
        topic = Topic()
        stopper = Publisher("first", topic)
        first = relays.make(stopper, owner="first")
        stopper.before = lambda message: first.stop()
        report = relays.drive(first.run())
        assert (report.claimed, report.published, report.released) == (2, 1, 1)
        after = relays.make(Publisher("next", topic), owner="next")
        assert relays.drive(after.run_once()).published == 1
        assert [status for _, status, _ in outbox_rows(app)] == ["published"] * 2


class TestRunThatCannotSettle:
    def test_published_event_is_recorded_and_the_run_reported(
        self, app: FlowApp, clock: Clock, caplog: pytest.LogCaptureFixture, relays: Relays
    ) -> None:
        """A corrupt run does not make its event go out forever: published once, run flagged."""
        (run_id,) = offline(app, (1, S.SUSPENDED))
        corrupt(app, run_id)
        topic = Topic()
        relay = relays.make(Publisher("relay", topic), owner="relay")
        report = relays.drive(relay.run_once())
        assert (report.published, report.unsettled_runs) == (1, [run_id])
        assert f"RUN {run_id} NEEDS AN OPERATOR" in caplog.text
        clock.advance(3600)
        assert relays.drive(relay.run_once()).claimed == 0
        assert len(topic.log) == 1
        assert outbox_rows(app) == [("1", "published", 1)]

    def test_failed_attempts_count_and_dead_letter(
        self, app: FlowApp, clock: Clock, relays: Relays
    ) -> None:
        """With the broker down too, attempts still count: max_attempts dead-letters it."""
        (run_id,) = offline(app, (1, S.SUSPENDED))
        corrupt(app, run_id)
        publisher = Publisher("relay", Topic())
        publisher.down = True
        relay = relays.make(publisher, owner="relay")
        dead: list[str] = []
        for _ in range(5):
            clock.advance(3600)
            dead += relays.drive(relay.run_once()).dead_events
        assert outbox_rows(app) == [("1", "dead", 2)]  # attempt 3 of 3 dead-lettered it
        assert len(dead) == 1

    def test_a_later_event_of_the_key_is_not_blocked(
        self, app: FlowApp, clock: Clock, relays: Relays
    ) -> None:
        """The key's next event goes out once the unsettled one is recorded."""
        first, _ = offline(app, (1, S.SUSPENDED), (1, S.ACTIVE))
        corrupt(app, first)
        topic = Topic()
        relay = relays.make(Publisher("relay", topic), owner="relay")
        for _ in range(2):
            clock.advance(1)
            relays.drive(relay.run_once())
        assert topic.by_key("1") == event_ids(app, "1")


class TestOneAttempt:
    def test_an_attempt_says_what_came_of_it(self, relays: Relays) -> None:
        """attempt() publishes once and records nothing: Published, or PublishFailed
        counting this attempt."""
        message = OutboxMessage("e1", "UserUpdateTopic", key="1", value=b"{}")
        publisher = Publisher("relay", Topic())
        relay = relays.make(publisher, owner="relay")
        assert relays.drive(relay.attempt(message)) == Published("e1")
        publisher.down = True
        failed = relays.drive(relay.attempt(message))
        assert isinstance(failed, PublishFailed)
        assert (failed.attempts, failed.error) == (1, "broker down (relay)")


class TestLeaseSettings:
    def test_a_lease_shorter_than_an_attempt_is_refused(self) -> None:
        """The message names the setting, the attempt's bound and the least lease allowed."""
        with pytest.raises(ValueError, match=r"lease_seconds 10 .* give at least 20$"):
            RelaySettings(lease_seconds=10)
        RelaySettings(lease_seconds=20)

    def test_flow_app_holds_kafka_relays_to_kafkas_bound(self, engine: Engine) -> None:
        """A Kafka relay's lease must outlast max_block_ms + delivery_timeout_ms + margin."""
        kafka = KafkaConfig(
            bootstrap_servers="127.0.0.1:1", max_block_ms=20_000, delivery_timeout_ms=30_000
        )
        app = FlowApp(engine, kafka, relay_settings=RelaySettings(lease_seconds=30))
        with pytest.raises(ValueError, match="shorter than one publish attempt"):
            app.relay()
        relay: OutboxRelay = FlowApp(
            engine, kafka, relay_settings=RelaySettings(lease_seconds=55)
        ).relay()
        assert relay.settings.publish_timeout == 50.0
