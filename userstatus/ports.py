"""The flow's own ports, on top of the engine's: the unit of work it needs and its collaborators."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from fsm.ports import LeftBehind, Outbox, UnitOfWork, UserRecord, UserRepository
from userstatus.domain import UpdateUserStatusPayload
from userstatus.events import UserStatusChanged
from userstatus.outcomes import PublishOutcome, UpdateOutcome


class FlowOutbox(Outbox, Protocol):
    """The outbox plus the two questions the flow asks of it."""

    def pending_for_key(self, key: str) -> int:
        """How many messages of `key` are neither published nor dead."""
        ...

    def counts(self) -> dict[str, int]:
        """How many messages are pending, published and dead."""
        ...

    def hold(self, event_id: str, *, until: datetime) -> None:
        """Make a pending, unleased message unclaimable before `until` (in this transaction)."""
        ...


class FlowUnitOfWork(UnitOfWork, Protocol):
    """A unit of work whose transaction also reaches the users and the keyed outbox."""

    def left_behind(
        self, machine: str, *, limit: int, skip: Collection[str] = ()
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox event is published or dead, oldest first,
        leaving out the runs in `skip` (those found unable to move before).

        The run and its event are settled in one transaction, so this finds only runs an
        operator or an older version left so; the relay finishes them.
        """
        ...

    @property
    def users(self) -> UserRepository:
        """The users, in this unit's transaction."""
        ...

    @property
    def outbox(self) -> FlowOutbox:
        """The outbox, in this unit's transaction."""
        ...


class CurrentUsers:
    """A UserRepository that always uses the unit of work's current transaction.

    The status manager keeps one repository for its whole life (as in the seed), while
    a unit of work opens a new session per transaction: this bridges the two.
    """

    def __init__(self, uow: FlowUnitOfWork) -> None:
        self.uow = uow

    def get(self, user_id: int) -> UserRecord | None:
        return self.uow.users.get(user_id)

    def create(self, user_id: int, status: str) -> UserRecord:
        return self.uow.users.create(user_id, status)

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        return self.uow.users.update_status(user_id, status, expected_version=expected_version)


class StatusManager(Protocol):
    """What the orchestrator needs of a status manager (UserStatusManager is one)."""

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        """Change the user's status, or say why not."""
        ...


class EventPublisher(Protocol):
    """What the orchestrator needs of a publisher (UserUpdatePublisher is one)."""

    def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event, or say why it could not be sent."""
        ...
