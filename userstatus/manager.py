"""UserStatusManager: changes a user's status through the repository, returning an outcome."""

from __future__ import annotations

import logging

from fsm.errors import InvalidEvent
from fsm.ports import UserRepository
from userstatus.domain import UpdateUserStatusPayload, UserStatus, allowed_changes, lifecycle
from userstatus.outcomes import (
    IllegalStatusChange,
    StorageError,
    UpdateOutcome,
    UserNotFound,
    UserStatusUpdated,
)

log = logging.getLogger(__name__)


class UserStatusManager:
    """Knows the user lifecycle and the repository; knows nothing of events or brokers.

    Statuses are stored by their value (`"active"`); the repository's version check makes a
    concurrent change of the same user a StorageError rather than a lost update.
    """

    def __init__(self, users: UserRepository) -> None:
        self.users = users

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        """Move the user to the requested status if it exists and the lifecycle allows it."""
        try:
            user = self.users.get(payload.user_id)
            if user is None:
                return UserNotFound(payload.user_id)
            old = UserStatus(user.status)
            try:
                # The lifecycle machine itself judges the change: a row, or no change.
                lifecycle.restore(f"user-{payload.user_id}", old).send(payload.new_status)
            except InvalidEvent:
                return IllegalStatusChange(
                    payload.user_id, old, payload.new_status, allowed_changes(old)
                )
            self.users.update_status(
                payload.user_id, payload.new_status.value, expected_version=user.version
            )
        except Exception as error:  # the seed's contract: a storage failure is an outcome
            log.error("updating the status of user %s failed: %r", payload.user_id, error)
            return StorageError(payload.user_id, f"{type(error).__name__}: {error}")
        return UserStatusUpdated(payload.user_id, old, payload.new_status)
