"""UserStatusManager: changes a user's status through the repository, returning an outcome."""

from __future__ import annotations

import logging

from fsm.errors import InvalidEvent
from userstatus.domain import (
    UpdateUserStatusPayload,
    UserStatus,
    allowed_changes,
    changes_into,
    lifecycle,
)
from userstatus.outcomes import (
    ConcurrentUpdate,
    IllegalStatusChange,
    StorageError,
    UpdateOutcome,
    UserNotFound,
    UserStatusUpdated,
)
from userstatus.ports import UserRepository

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 3
"""How often a change is tried against a user someone else keeps changing."""


class UserStatusManager:
    """Knows the user lifecycle and the repository; knows nothing of events or brokers.

    Statuses are stored by their value (`"active"`). The repository changes the status
    only from a status the lifecycle allows the change from, and its version check turns a
    concurrent change of the same user into no change rather than a lost update. When
    nothing was changed the manager reads the user: none, or a change the lifecycle refuses
    from the stored status, is the outcome; a change it allows was overtaken, and is tried
    again, up to `conflict_attempts` times in all, before it answers ConcurrentUpdate. Any
    other storage failure is a StorageError (the seed's contract).
    """

    def __init__(
        self, users: UserRepository, *, conflict_attempts: int = CONFLICT_ATTEMPTS
    ) -> None:
        if conflict_attempts < 1:
            raise ValueError(f"conflict_attempts must be at least 1, got {conflict_attempts!r}")
        self.users = users
        self.conflict_attempts = conflict_attempts

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        """Move the user to the requested status if it exists and the lifecycle allows it."""
        try:
            for _ in range(self.conflict_attempts):
                outcome = self._try(payload)
                if outcome is not None:
                    return outcome
        except Exception as error:
            # The whole error (SQL and parameters included) stays in the log; the outcome,
            # which is stored, keeps its type and first line.
            log.error("updating the status of user %s failed: %r", payload.user_id, error)
            return StorageError.of(payload.user_id, error)
        log.warning(
            "user %s changed under %d attempts to set %s; giving up",
            payload.user_id,
            self.conflict_attempts,
            payload.new_status.value,
        )
        return ConcurrentUpdate(payload.user_id, self.conflict_attempts)

    def _try(self, payload: UpdateUserStatusPayload) -> UpdateOutcome | None:
        """The outcome, or None when the user changed meanwhile: try again."""
        new = payload.new_status
        # The happy path in one statement: the change, if the stored status is one the
        # lifecycle allows it from.
        before = self.users.change_status(
            payload.user_id, new.value, allowed_from=changes_into(new)
        )
        if before is not None:
            return UserStatusUpdated(payload.user_id, UserStatus(before.status), new)
        user = self.users.get(payload.user_id)
        if user is None:
            return UserNotFound(payload.user_id)
        old = UserStatus(user.status)
        try:
            # The lifecycle machine itself judges the change: a row, or no change.
            lifecycle.restore(f"user-{payload.user_id}", old).send(new)
        except InvalidEvent:
            return IllegalStatusChange(payload.user_id, old, new, allowed_changes(old))
        return None  # allowed from the status stored now: it changed since change_status
