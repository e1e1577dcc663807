"""The closed families of outcomes the flow's actions return (Python's sealed classes)."""

from __future__ import annotations

from dataclasses import dataclass

from fsm.faults import describe_error, is_transient
from fsm.outbox import DeadLettered as DeadLettered  # the outbox's delivery outcomes
from fsm.outbox import Delivery
from fsm.outbox import Published as Published
from fsm.outbox import PublishFailed as PublishFailed
from fsm.outbox import Redriven as Redriven  # an operator's: `fsm outbox redrive`
from userstatus.domain import UserStatus


@dataclass(frozen=True, slots=True)
class UserStatusUpdated:
    """The user's status changed (not yet committed: the orchestrator commits the step)."""

    user_id: int
    old_status: UserStatus
    new_status: UserStatus


@dataclass(frozen=True, slots=True)
class UserNotFound:
    """No user has that id: nothing was changed."""

    user_id: int


@dataclass(frozen=True, slots=True)
class IllegalStatusChange:
    """The lifecycle does not allow that change: nothing was changed."""

    user_id: int
    current: UserStatus
    requested: UserStatus
    allowed: tuple[UserStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class ConcurrentUpdate:
    """Someone else kept changing the user while this change was re-tried: nothing changed."""

    user_id: int
    attempts: int


@dataclass(frozen=True, slots=True)
class StorageError:
    """The database refused or lost the change: it was rolled back, nothing was changed.

    `error` is the error's type and first line only (fsm.faults.describe_error): no SQL,
    no parameters. `transient` says trying again may pass (a lost connection, say).
    """

    user_id: int
    error: str
    transient: bool = False

    @classmethod
    def of(cls, user_id: int, error: BaseException) -> StorageError:
        """The outcome for `error`: its safe summary, and whether it is transient."""
        return cls(user_id, describe_error(error), is_transient(error))


UpdateOutcome = (
    UserStatusUpdated | UserNotFound | IllegalStatusChange | ConcurrentUpdate | StorageError
)
"""What updating a user's status can come to."""

UpdateFailure = UserNotFound | IllegalStatusChange | ConcurrentUpdate | StorageError


PublishOutcome = Published | PublishFailed
"""What the immediate publish after commit can come to."""

RelayOutcome = Delivery
"""What one relay attempt on a pending event can come to (fsm.outbox.Delivery)."""
