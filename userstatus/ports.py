"""The flow's own ports, on top of the engine's: its users, the unit of work it needs and its
collaborators."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fsm.outbox import AsyncOutboxUnitOfWork, Outbox, OutboxUnitOfWork
from fsm.ports import ConcurrencyError
from userstatus.domain import UpdateUserStatusPayload
from userstatus.events import UserStatusChanged
from userstatus.outcomes import PublishOutcome, UpdateOutcome


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A user of the reference flow as stored: the status is the status's stored name."""

    id: int
    status: str
    version: int
    created_at: datetime | None = None
    updated_at: datetime | None = None


class UserRepository(Protocol):
    """Users, read and written within the unit of work's current transaction."""

    def get(self, user_id: int) -> UserRecord | None:
        """The user, or None if there is none."""
        ...

    def create(self, user_id: int, status: str) -> UserRecord:
        """Insert a user at version 1; InvalidRecord if the id is taken or the input is bad."""
        ...

    def highest_id(self) -> int:
        """The highest user id stored, 0 when there is none."""
        ...

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        """Change the status if the stored version is still `expected_version`.

        Raises ConcurrencyError (and writes nothing) otherwise.
        """
        ...

    def change_status(
        self, user_id: int, status: str, *, allowed_from: Collection[str]
    ) -> UserRecord | None:
        """Change the status if the stored one is among `allowed_from`: the user as it was
        before the change, or None, nothing written, if there is no such user, its status
        is not among them, or someone else changed it meanwhile.

        One statement where the database allows (PostgreSQL); `changed_by_reading` does it
        with `get` and `update_status`, for a repository of your own.
        """
        ...


def changed_by_reading(
    users: UserRepository, user_id: int, status: str, allowed_from: Collection[str]
) -> UserRecord | None:
    """UserRepository.change_status as a read, then a write with its version check."""
    user = users.get(user_id)
    if user is None or user.status not in allowed_from:
        return None
    try:
        users.update_status(user_id, status, expected_version=user.version)
    except ConcurrencyError:  # changed since the read: as the one statement, no change
        return None
    return user


class FlowStores(Protocol):
    """What the flow's own writes reach in a unit of work's transaction: users and outbox."""

    @property
    def users(self) -> UserRepository:
        """The users, in this unit's transaction."""
        ...

    @property
    def outbox(self) -> Outbox:
        """The outbox, in this unit's transaction."""
        ...


class FlowUnitOfWork(OutboxUnitOfWork, FlowStores, Protocol):
    """A unit of work whose transaction reaches the runs, the outbox and the users."""


class AsyncFlowUnitOfWork(AsyncOutboxUnitOfWork, FlowStores, Protocol):
    """An async unit of work whose transaction reaches the runs, and, inside `run_sync`,
    the users and the outbox (their repositories are the sync ones, on its connection)."""


class CurrentUsers:
    """A UserRepository that always uses the unit of work's current transaction.

    The status manager keeps one repository for its whole life (as in the seed), while
    a unit of work opens a new session per transaction: this bridges the two.
    """

    def __init__(self, uow: FlowStores) -> None:
        self.uow = uow

    def get(self, user_id: int) -> UserRecord | None:
        return self.uow.users.get(user_id)

    def create(self, user_id: int, status: str) -> UserRecord:
        return self.uow.users.create(user_id, status)

    def highest_id(self) -> int:
        return self.uow.users.highest_id()

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        return self.uow.users.update_status(user_id, status, expected_version=expected_version)

    def change_status(
        self, user_id: int, status: str, *, allowed_from: Collection[str]
    ) -> UserRecord | None:
        return self.uow.users.change_status(user_id, status, allowed_from=allowed_from)


class StatusManager(Protocol):
    """What the orchestrator needs of a status manager (UserStatusManager is one)."""

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        """Change the user's status, or say why not."""
        ...


class AsyncEventPublisher(Protocol):
    """EventPublisher for asyncio (AsyncUserUpdatePublisher is one)."""

    async def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event, or say why it could not be sent."""
        ...


class EventPublisher(Protocol):
    """What the orchestrator needs of a publisher (UserUpdatePublisher is one)."""

    def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event, or say why it could not be sent."""
        ...
