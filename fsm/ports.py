"""Ports: the Protocols through which runs reach the outside world (storage, outbox, broker)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fsm.errors import FSMError


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


class Publisher(Protocol):
    """Sends one message to the broker."""

    def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged the message; raise PublishError otherwise."""
        ...


class Outbox(Protocol):
    """Messages added in the same transaction as the change they announce, published later."""

    def add(self, message: OutboxMessage) -> None:
        """Add a message within the caller's current transaction."""
        ...

    def claim(
        self, *, owner: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxMessage]:
        """Lease up to `limit` due messages, only the oldest pending one of each key."""
        ...

    def mark_published(self, event_id: str, *, owner: str, now: datetime) -> None:
        """The broker acknowledged the message: it leaves the pending set."""
        ...

    def mark_failed(self, event_id: str, *, owner: str, error: str, retry_at: datetime) -> None:
        """An attempt failed: count it, keep the error, release the lease until `retry_at`."""
        ...

    def mark_dead(self, event_id: str, *, owner: str, error: str, now: datetime) -> None:
        """Give up on the message (attempts or age exhausted); it stays, loudly, for people."""
        ...
