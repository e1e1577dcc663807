"""The transactional outbox, an optional part of the engine: its ports and the unit of work
that reaches it. Messages are added in the same transaction as the change they announce
and published later, by the step after the commit or by a relay (fsm.relay)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from fsm.errors import FSMError
from fsm.ports import AsyncUnitOfWork, UnitOfWork

if TYPE_CHECKING:
    from fsm.definition import Machine

T = TypeVar("T")


class PublishError(FSMError):
    """A message could not be delivered; the caller keeps it pending and retries later."""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """An event waiting in the outbox, exactly as it will be published."""

    event_id: str
    """Stable across re-sends: consumers de-duplicate by it (delivery is at least once)."""
    topic: str
    key: str
    """Messages of one key are published in the order they were added (the user id)."""
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()
    run_id: str | None = None
    """The run that waits for this message to be published, if any."""
    attempts: int = 0
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LeftBehind:
    """An unfinished run whose outbox event is settled (published or dead) already."""

    run_id: str
    event_id: str
    status: str
    """published or dead"""
    attempts: int
    error: str | None


class Publisher(Protocol):
    """Sends one message to the broker."""

    def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged the message; raise PublishError otherwise."""
        ...


class AsyncPublisher(Protocol):
    """Publisher for asyncio: sends one message without blocking the event loop."""

    async def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged the message; raise PublishError otherwise."""
        ...


@runtime_checkable
class BatchPublisher(Publisher, Protocol):
    """A publisher that sends a batch at once and then waits for every acknowledgement (a
    relay's batch holds at most one message per key, so their order does not matter)."""

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """For each message: None once the broker stored it, else why not."""
        ...


@runtime_checkable
class AsyncBatchPublisher(AsyncPublisher, Protocol):
    """BatchPublisher for asyncio (AsyncKafkaPublisher is one)."""

    async def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """For each message: None once the broker stored it, else why not."""
        ...


class Outbox(Protocol):
    """Messages added in the same transaction as the change they announce, published later."""

    def add(self, message: OutboxMessage, *, hold_until: datetime | None = None) -> int:
        """Add a message within the caller's current transaction; how many messages of its
        key were pending before it (0: it heads its key). With `hold_until`, and none
        before it, no relay claims it before then (the process that added it publishes it
        itself meanwhile); one queued behind others is not held: a relay sends it after
        them."""
        ...

    def claim(
        self, *, owner: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxMessage]:
        """Lease up to `limit` due messages, only the oldest pending one of each key."""
        ...

    def mark_published(self, *event_ids: str, owner: str, now: datetime) -> None:
        """The broker acknowledged the messages: they leave the pending set (a dead one
        stays).

        The first call keeps `owner` and `now` as who published each and when; later ones
        change nothing. Many ids are marked at once (a relay's batch).
        """
        ...

    def mark_failed(self, event_id: str, *, owner: str, error: str, retry_at: datetime) -> None:
        """An attempt failed: count it, keep the error, release the lease until `retry_at`."""
        ...

    def mark_dead(self, event_id: str, *, owner: str, error: str, now: datetime) -> None:
        """Give up on the message (attempts or age exhausted); it stays, loudly, for people."""
        ...

    def renew(self, *event_ids: str, owner: str, lease_seconds: float, now: datetime) -> set[str]:
        """Extend `owner`'s unexpired leases on pending messages to `now` + `lease_seconds`;
        the ids renewed.

        A message is left out (and unchanged) when its lease expired, went to someone else,
        or it left the pending set: the caller must then not publish it.
        """
        ...

    def release(self, event_ids: list[str], *, owner: str) -> int:
        """Drop `owner`'s leases on these pending messages (a relay stopping); how many."""
        ...

    def pending_for_key(self, key: str) -> int:
        """How many messages of `key` are neither published nor dead."""
        ...

    def counts(self) -> dict[str, int]:
        """How many messages are pending, published and dead."""
        ...

    def redrive(self, event_id: str, *, now: datetime) -> None:
        """Send a dead message back to pending, due at `now`, its attempts counted from 0
        again (an operator's redrive); InvalidRecord, with nothing changed, if it is not dead."""
        ...

    def oldest_pending(self) -> datetime | None:
        """When the oldest message neither published nor dead was added; None if none is."""
        ...


class LeaseLost(FSMError):
    """The outbox message is no longer leased to this owner (its lease expired and was taken)."""

    def __init__(self, event_id: str, owner: str) -> None:
        self.event_id = event_id
        self.owner = owner
        super().__init__(
            f"outbox message {event_id!r} is not leased to {owner!r} any more "
            "(its lease expired or it left the pending set); nothing was changed"
        )


@dataclass(frozen=True, slots=True)
class Published:
    """The broker acknowledged the event."""

    event_id: str


@dataclass(frozen=True, slots=True)
class PublishFailed:
    """Every attempt failed; the event stays pending in the outbox for the relay."""

    event_id: str
    error: str
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class DeadLettered:
    """The relay gave up (attempt or age limit): the event needs people, loudly."""

    event_id: str
    error: str
    attempts: int


Delivery = Published | PublishFailed | DeadLettered
"""What one attempt to publish an outbox message can come to (a relay's closed family)."""


@dataclass(frozen=True, slots=True)
class Redriven:
    """An operator sent a dead-lettered event back to pending (`fsm outbox redrive`).

    A machine whose runs wait for outbox events gives it a row from the state its
    DeadLettered row leads to (back to where the run waits for the relay): the redrive is
    then a transition like any other, recorded in the run's history with this event id."""

    event_id: str


def redrivable(machine: Machine[Any]) -> tuple[Hashable, ...]:
    """The states with a Redriven row: their runs' event was dead-lettered and they wait for
    an operator, not for the relay or a worker."""
    return tuple(
        dict.fromkeys(row.source for row in machine.transitions if row.trigger is Redriven)
    )


class OutboxStores(Protocol):
    """What a unit of work's transaction reaches of the outbox: the outbox, and the runs
    whose message it settled without them."""

    @property
    def outbox(self) -> Outbox:
        """The outbox, in this unit's transaction."""
        ...

    def left_behind(
        self,
        machine: str,
        *,
        limit: int,
        skip: Collection[str] = (),
        parked: Collection[str] = (),
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox message is published or dead, oldest
        first, leaving out the runs in `skip` (those found unable to move before) and those
        stored in a `parked` state (waiting for an operator: see `redrivable`).

        A relay settles a run and its message in one transaction, so this finds only runs
        an operator or an older version left so; the relay finishes them.
        """
        ...


class OutboxUnitOfWork(UnitOfWork, OutboxStores, Protocol):
    """A unit of work whose transaction also reaches an outbox."""


class AsyncOutboxUnitOfWork(AsyncUnitOfWork, OutboxStores, Protocol):
    """An async unit of work whose transaction reaches the runs, and, inside `run_sync`,
    the outbox (the sync Outbox port, on its connection: SQLAlchemy's greenlets await its
    statements, so the loop runs meanwhile; see adapters.sqlalchemy.AsyncSqlUnitOfWork)."""

    async def run_sync(self, work: Callable[[], T]) -> T:
        """`work()` in the open transaction, where `outbox` and `left_behind` may be used."""
        ...
