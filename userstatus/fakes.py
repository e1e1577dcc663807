"""In-memory fakes of the flow's own ports: users, and a unit of work that reaches them."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import replace
from datetime import datetime
from typing import Any

from adapters.memory import InMemoryOutbox, InMemoryRunStore, InMemoryUnitOfWork
from fsm.defaults import utc_now
from fsm.ports import ConcurrencyError, InvalidRecord
from userstatus.ports import UserRecord, changed_by_reading


class FakeUserRepository:
    """Users in a dict (userstatus.ports.UserRepository); `fail_on_update` makes updates raise."""

    def __init__(
        self, users: Iterable[tuple[int, str]] = (), *, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.clock = clock
        self.users: dict[int, UserRecord] = {}
        self.updates: list[tuple[int, str]] = []
        """Every status change made, in order: (user id, new status)."""
        self.fail_on_update: Exception | None = None
        for user_id, status in users:
            self.create(user_id, status)

    def get(self, user_id: int) -> UserRecord | None:
        return self.users.get(user_id)

    def create(self, user_id: int, status: str) -> UserRecord:
        if user_id in self.users:
            raise InvalidRecord(f"user {user_id} exists already")
        now = self.clock()
        record = UserRecord(user_id, status, 1, now, now)
        self.users[user_id] = record
        return record

    def highest_id(self) -> int:
        return max(self.users, default=0)

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        if self.fail_on_update is not None:
            raise self.fail_on_update
        current = self.users.get(user_id)
        if current is None or current.version != expected_version:
            found = current.version if current is not None else None
            raise ConcurrencyError("user", user_id, expected=expected_version, found=found)
        record = replace(
            current, status=status, version=current.version + 1, updated_at=self.clock()
        )
        self.users[user_id] = record
        self.updates.append((user_id, status))
        return record

    def change_status(
        self, user_id: int, status: str, *, allowed_from: Collection[str]
    ) -> UserRecord | None:
        return changed_by_reading(self, user_id, status, allowed_from)

    def status_of(self, user_id: int) -> str | None:
        """The stored status of a user, or None."""
        user = self.users.get(user_id)
        return user.status if user is not None else None

    def _state(self) -> object:
        return (dict(self.users), list(self.updates))

    def _restore(self, state: Any) -> None:
        self.users, self.updates = dict(state[0]), list(state[1])


class InMemoryFlowUnitOfWork(InMemoryUnitOfWork):
    """The in-memory unit of work with the flow's users in its transactions (FlowUnitOfWork)."""

    def __init__(
        self,
        users: FakeUserRepository | None = None,
        outbox: InMemoryOutbox | None = None,
        runs: InMemoryRunStore | None = None,
    ) -> None:
        self.users = users if users is not None else FakeUserRepository()
        super().__init__(outbox, runs, parts=[self.users])
