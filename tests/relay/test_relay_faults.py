"""The generic relay (fsm.relay) on the in-memory outbox, where its own calls fail: a write
that raises is rolled back by the async relay too, a release that fails is logged, and the
async relay's run() stops when idle or out of time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection
from typing import TypeVar

import pytest

from adapters.memory import (
    AsyncFakePublisher,
    AsyncInMemoryUnitOfWork,
    FakePublisher,
    InMemoryOutbox,
    InMemoryUnitOfWork,
)
from fsm.outbox import LeftBehind, OutboxMessage
from fsm.relay import AsyncOutboxRelay, OutboxRelay, RelaySettings, RelaySettingsError
from tests.clock import Clock

T = TypeVar("T")


class AsyncMemoryOutboxUnitOfWork(AsyncInMemoryUnitOfWork):
    """The in-memory unit of work with its outbox, as an async relay reaches it."""

    def __init__(self, outbox: InMemoryOutbox) -> None:
        super().__init__(InMemoryUnitOfWork(outbox))
        self.outbox = outbox

    def left_behind(
        self,
        machine: str,
        *,
        limit: int,
        skip: Collection[str] = (),
        parked: Collection[str] = (),
    ) -> list[LeftBehind]:
        return self.sync.left_behind(machine, limit=limit, skip=skip, parked=parked)

    async def run_sync(self, work: Callable[[], T]) -> T:
        return work()


def outbox_with(clock: Clock, *keys: str) -> InMemoryOutbox:
    """An outbox holding one message per key, due now."""
    outbox = InMemoryOutbox(clock=clock)
    for index, key in enumerate(keys):
        outbox.add(OutboxMessage(f"e{index}", "notes", key, b"x"))
    return outbox


class TestAsyncRollback:
    async def test_a_write_that_raises_is_rolled_back(self) -> None:
        """Marking the event published writes, then raises: the async relay rolls the
        transaction back (and the try alone as well), so the event stays pending."""
        clock = Clock()
        outbox = outbox_with(clock, "k")
        mark = outbox.mark_published

        def write_then_fail(*event_ids: str, owner: str, now: object) -> None:
            mark(*event_ids, owner=owner, now=now)  # type: ignore[arg-type]
            raise ValueError("refused after the write")

        outbox.mark_published = write_then_fail  # type: ignore[method-assign]
        uow = AsyncMemoryOutboxUnitOfWork(outbox)
        relay = AsyncOutboxRelay(uow, AsyncFakePublisher(), owner="r", clock=clock)
        report = await relay.run_once()
        assert (report.published, report.errors) == (0, 1)
        assert outbox.counts() == {"pending": 1, "published": 0, "dead": 0}


class TestAsyncRun:
    async def test_until_idle_returns_once_nothing_is_pending(self) -> None:
        """With no time bound, run(until_idle=True) returns when the outbox is empty."""
        clock = Clock()
        outbox = outbox_with(clock, "a", "b")
        uow = AsyncMemoryOutboxUnitOfWork(outbox)
        relay = AsyncOutboxRelay(uow, AsyncFakePublisher(), owner="r", clock=clock)
        report = await asyncio.wait_for(relay.run(until_idle=True), 10)
        assert report.published == 2

    async def test_max_seconds_ends_a_run_that_is_never_idle(self) -> None:
        """A run with nothing to do and no until_idle gives up after max_seconds."""
        clock = Clock()
        uow = AsyncMemoryOutboxUnitOfWork(InMemoryOutbox(clock=clock))

        async def nap(seconds: float) -> None:
            clock.advance(seconds)

        relay = AsyncOutboxRelay(uow, AsyncFakePublisher(), owner="r", clock=clock, sleep=nap)
        report = await asyncio.wait_for(relay.run(max_seconds=5), 10)
        assert report.claimed == 0
        assert relay.owner == "r"

    async def test_a_pause_not_cut_short_returns_after_its_time(self) -> None:
        """The default sleep waits its seconds and returns (its timeout is no error)."""
        clock = Clock()
        uow = AsyncMemoryOutboxUnitOfWork(InMemoryOutbox(clock=clock))
        relay = AsyncOutboxRelay(uow, AsyncFakePublisher(), owner="r", clock=clock)
        await asyncio.wait_for(relay.pause(0.01), 5)


class TestSettings:
    def test_the_backoff_grows_by_the_multiplier(self) -> None:
        """The third failure waits initial times multiplier squared (no jitter at 0.5)."""
        settings = RelaySettings(backoff_initial=1.0, backoff_multiplier=3.0, backoff_max=100)
        assert settings.delay(3, rand=lambda: 0.5) == 9.0

    def test_each_setting_out_of_range_is_named(self) -> None:
        """Every problem at once, each naming its setting and the value given."""
        with pytest.raises(RelaySettingsError) as caught:
            RelaySettings(batch_size=0, idle_interval=-1.0, jitter=2.0)
        assert str(caught.value) == (
            "batch_size must be positive, got 0; idle_interval must be positive, got -1.0; "
            "jitter must be between 0 and 1, got 2.0"
        )


class TestRelease:
    def test_a_release_that_fails_is_logged_and_the_claims_wait_for_their_lease(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Stopped after its first event, the relay hands back the rest; when that fails
        it says so, and the claims come back when their lease runs out."""
        clock = Clock()
        outbox = outbox_with(clock, "a", "b", "c")

        def refuse(event_ids: list[str], *, owner: str) -> int:
            raise ValueError("release refused")

        outbox.release = refuse  # type: ignore[method-assign]
        publisher = FakePublisher()
        relay = OutboxRelay(InMemoryUnitOfWork(outbox), publisher, owner="r", clock=clock)
        publish = publisher.publish

        def publish_then_stop(message: OutboxMessage) -> None:
            publish(message)
            relay.stop()

        publisher.publish = publish_then_stop  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="fsm.relay"):
            report = relay.run_once()
        assert (report.published, report.released) == (1, 0)
        assert [r.getMessage() for r in caplog.records if r.name == "fsm.relay"] == [
            "relay r: releasing 2 claims failed: ValueError('release refused')"
        ]


class TestRenew:
    def test_a_renewal_that_fails_skips_the_event_and_counts_an_error(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The lease cannot be renewed before the publish: nothing is sent, each event is
        an error, logged, and waits for its lease to run out."""
        clock = Clock()
        outbox = outbox_with(clock, "a", "b")

        def refuse(*event_ids: str, owner: str, lease_seconds: float, now: object) -> set[str]:
            raise ValueError("renewal refused")

        outbox.renew = refuse  # type: ignore[method-assign]
        publisher = FakePublisher()
        relay = OutboxRelay(InMemoryUnitOfWork(outbox), publisher, owner="r", clock=clock)
        with caplog.at_level(logging.ERROR, logger="fsm.relay"):
            report = relay.run_once()
        assert (report.claimed, report.published, report.errors) == (2, 0, 2)
        assert publisher.sent == []
        assert [r.getMessage() for r in caplog.records if r.name == "fsm.relay"] == [
            f"relay r: renewing the lease on event {event_id} failed: "
            "ValueError('renewal refused'); skipped"
            for event_id in ("e0", "e1")
        ]

    def test_a_lease_that_ran_out_skips_the_event_as_lost(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Renewing finds the lease gone: nothing is sent, each event counts as lost (not
        as an error) and is left to the relay that holds it now."""
        clock = Clock()
        outbox = outbox_with(clock, "a", "b")

        def gone(*event_ids: str, owner: str, lease_seconds: float, now: object) -> set[str]:
            return set()

        outbox.renew = gone  # type: ignore[method-assign]
        publisher = FakePublisher()
        relay = OutboxRelay(InMemoryUnitOfWork(outbox), publisher, owner="r", clock=clock)
        with caplog.at_level(logging.WARNING, logger="fsm.relay"):
            report = relay.run_once()
        assert (report.claimed, report.published, report.lost, report.errors) == (2, 0, 2, 0)
        assert publisher.sent == []
        assert [
            r.getMessage()
            for r in caplog.records
            if r.name == "fsm.relay" and r.levelname == "WARNING"
        ] == [
            f"relay r: the lease on event {event_id} ran out before its publish; skipped "
            "(another relay publishes it in order)"
            for event_id in ("e0", "e1")
        ]
