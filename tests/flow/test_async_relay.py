"""The async relay (AsyncFlowApp.relay) on SQLite and PostgreSQL with the real broker: the sync
relay's rules, awaited. A backlog drains with every run published and every event on the
topic in per-key order; with the broker stopped, attempts back off and dead-letter while a
ticker in the same loop is never held up; runs left behind are finished; stop() is prompt."""

from __future__ import annotations

import asyncio
import gc
import typing
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, select, update

from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from adapters.sqlalchemy import create_async_engine
from adapters.sqlalchemy.tables import TABLES
from examples.service.lag import LoopLag
from fsm.relay import RelayReport, RelaySettings
from tests.clock import Clock
from userstatus.app import AsyncFlowApp, FlowApp, publish_grace
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState
from userstatus.relay import AsyncOutboxRelay

from .conftest import fast_config

S = UserStatus
TOPIC = "UserUpdateTopic"
SETTINGS = RelaySettings(
    batch_size=20,
    lease_seconds=30.0,
    max_attempts=3,
    backoff_initial=0.05,
    backoff_max=0.2,
    idle_interval=0.05,
)


class Crash(BaseException):
    """The process dies."""


@dataclass
class World:
    """The flow on one database and the real broker, on a hand-moved clock: a sync app makes
    the backlog, the async app relays it."""

    sync: FlowApp
    app: AsyncFlowApp
    clock: Clock
    broker: LocalBroker

    def backlog(self, *updates: tuple[int, UserStatus]) -> list[str]:
        """Commit `updates` while the publisher is down, past their hold; their run ids."""
        down = FakePublisher()
        down.failing = True
        orchestrator = self.sync.orchestrator(down)
        runs = [orchestrator.perform(UpdateUserStatusPayload(u, s)) for u, s in updates]
        assert {run.state for run in runs} == {FlowState.PUBLISH_FAILED}
        self.past_the_hold()
        return [run.id for run in runs]

    def past_the_hold(self) -> None:
        """Past the hold a new event gets for its orchestrator's own publish."""
        self.clock.advance(publish_grace(self.sync.retry, self.sync.kafka).total_seconds() + 1)

    def relay(self, owner: str = "async-relay") -> AsyncOutboxRelay:
        """An async relay publishing to the broker, its waits moving the clock."""
        relay = self.app.relay(owner=owner)

        async def nap(seconds: float) -> None:
            self.clock.advance(seconds)
            await asyncio.sleep(0.01)

        relay.sleep = nap
        return relay

    def states(self, run_ids: list[str]) -> set[FlowState]:
        runs = self.sync.runs()
        return {runs.load(run_id).state for run_id in run_ids}

    def outbox(self) -> list[tuple[str, str, str]]:
        """(key, event id, status) of every outbox row, oldest first."""
        outbox = TABLES.outbox
        query = select(outbox.c.key, outbox.c.event_id, outbox.c.status).order_by(outbox.c.id)
        with self.sync.engine.connect() as connection:
            return [(key, event, status) for key, event, status in connection.execute(query)]


@pytest.fixture
async def world(engine: Engine, db_url: str, broker: LocalBroker) -> AsyncIterator[World]:
    """Users 1 to 10 active on the test database; both apps on the broker."""
    clock = Clock()
    kafka = fast_config(broker)
    options: dict[str, typing.Any] = {
        "retry": RetryPolicy(attempts=1),
        "relay_settings": SETTINGS,
        "clock": clock,
    }
    sync = FlowApp(engine, kafka, **options)
    with sync.unit_of_work() as uow:
        for user in range(1, 11):
            uow.users.create(user, "active")
    app = AsyncFlowApp(create_async_engine(db_url), kafka, **options)
    yield World(sync, app, clock, broker)
    await app.close()


class TestDrain:
    async def test_a_backlog_drains_in_per_key_order(self, world: World) -> None:
        """Ten users' three updates each: every run published, every event on the topic
        once per key in the order committed, nothing pending."""
        changes = [S.SUSPENDED, S.ACTIVE, S.CLOSED]
        runs = world.backlog(*((user, change) for change in changes for user in range(1, 11)))
        report = await world.relay().run(until_idle=True, max_seconds=120)
        assert (report.published, report.failed, report.errors) == (30, 0, 0)
        assert world.states(runs) == {FlowState.PUBLISHED}
        rows = world.outbox()
        assert {status for _, _, status in rows} == {"published"}
        expected = {event for _, event, _ in rows}
        audit = AuditConsumer(world.sync.kafka, TOPIC).read_all(expect=expected, timeout=15)
        assert expected <= audit.events.keys()
        for key, events in audit.by_key().items():
            assert [e.event_id for e in events] == [e for k, e, _ in rows if k == key]


class TestBrokerDown:
    async def test_attempts_back_off_and_dead_letter_without_blocking_the_loop(
        self, world: World
    ) -> None:
        """The broker stopped: each event fails once, then is dead-lettered (3 attempts,
        the orchestrator's first among them), its run dead_lettered; a ticker task in the
        same loop is never late by 100 ms meanwhile."""
        runs = world.backlog(*((user, S.SUSPENDED) for user in range(1, 6)))
        world.broker.stop()
        gc.collect()  # earlier producers closing in __del__ are not this loop's doing
        lag = LoopLag(0.005)
        lag.start()
        report = await world.relay().run(until_idle=True, max_seconds=120)
        seen = lag.reset()
        await lag.stop()
        assert (report.published, report.failed, report.dead) == (0, 5, 5)
        assert sorted(report.dead_events) == sorted(e for _, e, _ in world.outbox())
        assert world.states(runs) == {FlowState.DEAD_LETTERED}
        assert seen["ticks"] > 50 and seen["max_ms"] < 100, seen


class TestLeftBehind:
    async def test_runs_the_outbox_settled_without_them_are_finished(self, world: World) -> None:
        """One run's event was published by someone else, another's process died between
        its commit and its publish: the relay finishes the first and publishes the second."""
        settled, _ = world.backlog((1, S.SUSPENDED), (2, S.SUSPENDED))
        with world.sync.engine.begin() as connection:
            connection.execute(
                update(TABLES.outbox)
                .where(TABLES.outbox.c.run_id == settled)
                .values(status="published")
            )
        died = FakePublisher()

        def die(message: typing.Any) -> None:
            raise Crash

        died.publish = die  # type: ignore[method-assign]
        with pytest.raises(Crash):
            world.sync.orchestrator(died).perform(UpdateUserStatusPayload(3, S.CLOSED))
        with world.sync.engine.connect() as connection:
            crashed = connection.execute(
                select(TABLES.runs.c.id).where(TABLES.runs.c.state == "status_updated")
            ).scalar_one()
        world.past_the_hold()
        relay = world.relay()
        swept = RelayReport()
        await relay.settle_left_behind(swept)
        assert swept.finished_runs == 1
        report = await relay.run(until_idle=True, max_seconds=60)
        assert (report.finished_runs, report.published) == (0, 2)
        assert world.states([settled, crashed]) == {FlowState.PUBLISHED}


class TestStop:
    async def test_stop_cuts_the_idle_sleep_short(self, world: World) -> None:
        """A relay waiting out a long idle interval returns at once when stopped."""
        relay = world.app.relay(owner="idle")
        relay.settings = RelaySettings(idle_interval=60)
        task = asyncio.create_task(relay.run())
        await asyncio.sleep(0.3)
        assert not task.done()
        relay.stop()
        report = await asyncio.wait_for(task, 2)
        assert report.claimed == 0
        assert await relay.pending() == 0
        await relay.pause(60)  # stopped: a pause returns at once
