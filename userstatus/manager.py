"""UserStatusManager: changes a user's status through the repository, returning an outcome."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from userstatus.domain import UpdateUserStatusPayload, allowed_changes, can_change
from userstatus.outcomes import (
    IllegalStatusChange,
    StorageError,
    UpdateOutcome,
    UserNotFound,
    UserStatusUpdated,
)
from userstatus.ports import UserRepository

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    """The current time, timezone-aware (the default clock)."""
    return datetime.now(UTC)


class UserStatusManager:
    """Knows the user lifecycle and the repository; knows nothing of events or brokers."""

    def __init__(self, users: UserRepository, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.users = users
        self.clock = clock

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        """Move the user to the requested status if it exists and the lifecycle allows it."""
        try:
            user = self.users.get(payload.user_id)
            if user is None:
                return UserNotFound(payload.user_id)
            old = user.status
            if not can_change(old, payload.new_status):
                return IllegalStatusChange(
                    payload.user_id, old, payload.new_status, allowed_changes(old)
                )
            user.status = payload.new_status
            user.updated_at = self.clock()
            self.users.save(user)
        except Exception as error:  # the seed's contract: a storage failure is an outcome
            log.error("updating the status of user %s failed: %r", payload.user_id, error)
            return StorageError(payload.user_id, f"{type(error).__name__}: {error}")
        return UserStatusUpdated(payload.user_id, old, payload.new_status)
