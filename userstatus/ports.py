"""The flow's own ports: the user repository, the run recorder and the unit of work tying them."""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Protocol

from fsm.definition import Machine
from fsm.ports import Outbox
from fsm.runtime import Run, Transition
from userstatus.domain import UpdateUserStatusPayload, User
from userstatus.events import UserStatusChanged
from userstatus.outcomes import PublishOutcome, UpdateOutcome


class UserRepository(Protocol):
    """Users, read and written inside the unit of work's current transaction."""

    def get(self, user_id: int) -> User | None:
        """The user with that id, or None."""
        ...

    def add(self, user: User) -> None:
        """Store a new user."""
        ...

    def save(self, user: User) -> None:
        """Write back a changed user (its status)."""
        ...


class FlowOutbox(Outbox, Protocol):
    """The outbox plus the two questions the flow asks of it."""

    def pending_for_key(self, key: str) -> int:
        """How many messages of `key` are neither published nor dead."""
        ...

    def pending_count(self) -> int:
        """How many messages are neither published nor dead, all keys together."""
        ...


class RunRecorder(Protocol):
    """Where runs of the flow machine and their history are kept."""

    def save(self, run: Run[Any], transition: Transition[Any] | None) -> None:
        """Record the run's current state and context, and append `transition` if given."""
        ...

    def load(self, machine: Machine[Any], run_id: str) -> Run[Any]:
        """Restore a recorded run on `machine` (its actions are not run again)."""
        ...

    def counts_by_state(self) -> dict[Hashable, int]:
        """How many runs are in each state."""
        ...


class UnitOfWork(Protocol):
    """One database transaction at a time, shared by the repository, the outbox and the runs.

    A transaction starts with the first read or write after the last commit or rollback.
    """

    @property
    def outbox(self) -> FlowOutbox:
        """The outbox, in this unit's transaction."""
        ...

    @property
    def runs(self) -> RunRecorder:
        """The run records, in this unit's transaction."""
        ...

    def commit(self) -> None:
        """Make everything since the last commit or rollback durable, all or nothing."""
        ...

    def rollback(self) -> None:
        """Forget everything since the last commit or rollback."""
        ...


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
