"""In-memory adapters: fakes that record what happened, for tests and quick experiments."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Protocol, TypeVar

from fsm.definition import Machine
from fsm.ports import OutboxMessage, PublishError
from fsm.runtime import Run, Transition


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Entity(Protocol):
    """Anything stored by id (the flow's User)."""

    id: int
    version: int


U = TypeVar("U", bound=Entity)


class FakeUserRepository(Generic[U]):
    """Users in a dict; `fail_on_save` makes the next saves raise (a database refusing).

    Generic over the user type, so adapters stay independent of the flow's domain.
    """

    def __init__(self, users: Iterable[U] = ()) -> None:
        self.users: dict[int, U] = {u.id: copy.copy(u) for u in users}
        self.saved: list[tuple[int, Any]] = []
        self.fail_on_save: Exception | None = None

    def get(self, user_id: int) -> U | None:
        user = self.users.get(user_id)
        return copy.copy(user) if user is not None else None

    def add(self, user: U) -> None:
        self.users[user.id] = copy.copy(user)

    def save(self, user: U) -> None:
        if self.fail_on_save is not None:
            raise self.fail_on_save
        stored = copy.copy(user)
        stored.version += 1
        self.users[user.id] = stored
        self.saved.append((user.id, getattr(user, "status", None)))

    def status_of(self, user_id: int) -> Any:
        """The stored status of a user, or None."""
        user = self.users.get(user_id)
        return getattr(user, "status", None) if user is not None else None

    def _state(self) -> object:
        return (copy.deepcopy(self.users), list(self.saved))

    def _restore(self, state: Any) -> None:
        self.users, self.saved = copy.deepcopy(state[0]), list(state[1])


class FakePublisher:
    """Records every message in `.sent`; `fail_next` or `failing` make publishes raise."""

    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []
        self.attempts = 0
        self.failing = False
        self.fail_next = 0

    def publish(self, message: OutboxMessage) -> None:
        self.attempts += 1
        if self.failing or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise PublishError(f"broker unavailable (fake), event {message.event_id}")
        self.sent.append(message)


@dataclass
class OutboxRecord:
    """One outbox row as the in-memory outbox keeps it."""

    message: OutboxMessage
    seq: int
    status: str = "pending"
    """pending, published or dead."""
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    published_at: datetime | None = None


class InMemoryOutbox:
    """The Outbox contract in a list: per-key order, leases that expire, attempts counted."""

    def __init__(self, clock: Callable[[], datetime] = _utcnow) -> None:
        self.records: dict[str, OutboxRecord] = {}
        self.clock = clock
        self._seq = 0

    def add(self, message: OutboxMessage) -> None:
        if message.event_id in self.records:
            raise ValueError(f"event {message.event_id} is already in the outbox")
        self._seq += 1
        created = message.created_at or self.clock()
        self.records[message.event_id] = OutboxRecord(
            replace(message, created_at=created), self._seq, next_attempt_at=created
        )

    def claim(
        self, *, owner: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxMessage]:
        claimed: list[OutboxMessage] = []
        seen: set[str] = set()
        for record in sorted(self.records.values(), key=lambda r: r.seq):
            if record.status != "pending" or record.message.key in seen:
                continue
            seen.add(record.message.key)  # only the oldest pending message of a key
            if len(claimed) >= limit:
                continue
            due = record.next_attempt_at is None or record.next_attempt_at <= now
            free = record.lease_until is None or record.lease_until <= now
            if due and free:
                record.lease_owner = owner
                record.lease_until = now + timedelta(seconds=lease_seconds)
                claimed.append(replace(record.message, attempts=record.attempts))
        return claimed

    def mark_published(self, event_id: str, *, owner: str, now: datetime) -> None:
        # Published is a fact whoever holds the lease: the broker has the message.
        record = self.records[event_id]
        if record.status == "pending":
            record.status = "published"
            record.published_at = now
            record.lease_owner = record.lease_until = None

    def mark_failed(self, event_id: str, *, owner: str, error: str, retry_at: datetime) -> None:
        record = self.records[event_id]
        if record.status != "pending" or record.lease_owner != owner:
            return  # the lease expired and someone else owns the message now
        record.attempts += 1
        record.last_error = error
        record.next_attempt_at = retry_at
        record.lease_owner = record.lease_until = None

    def mark_dead(self, event_id: str, *, owner: str, error: str, now: datetime) -> None:
        record = self.records[event_id]
        if record.status != "pending" or record.lease_owner != owner:
            return
        record.attempts += 1
        record.status = "dead"
        record.last_error = error
        record.lease_owner = record.lease_until = None

    def pending_for_key(self, key: str) -> int:
        return sum(
            1 for r in self.records.values() if r.status == "pending" and r.message.key == key
        )

    def pending_count(self) -> int:
        return sum(1 for r in self.records.values() if r.status == "pending")

    def by_status(self, status: str) -> list[OutboxRecord]:
        """The records in `status` (pending, published, dead), oldest first."""
        return sorted((r for r in self.records.values() if r.status == status), key=lambda r: r.seq)

    def _state(self) -> object:
        return (copy.deepcopy(self.records), self._seq)

    def _restore(self, state: Any) -> None:
        self.records, self._seq = copy.deepcopy(state[0]), state[1]


@dataclass
class RunRecord:
    """A recorded run: its machine, state, context and history."""

    machine: str
    state: Hashable
    context: dict[str, Any]
    history: list[Transition[Any]]
    version: int = 0


class InMemoryRunStore:
    """Runs and their transition history in a dict."""

    def __init__(self) -> None:
        self.records: dict[str, RunRecord] = {}

    def save(self, run: Run[Any], transition: Transition[Any] | None) -> None:
        record = self.records.get(run.id)
        if record is None:
            record = self.records[run.id] = RunRecord(run.machine.name, run.state, {}, [])
        record.state = run.state
        record.context = copy.deepcopy(run.context)
        if transition is not None:
            record.history.append(transition)
        record.version += 1

    def load(self, machine: Machine[Any], run_id: str) -> Run[Any]:
        record = self.records[run_id]
        history = [(t.source, t.trigger, t.target, t.outcome) for t in record.history]
        return machine.restore(run_id, record.state, copy.deepcopy(record.context), history)

    def counts_by_state(self) -> dict[Hashable, int]:
        counts: dict[Hashable, int] = {}
        for record in self.records.values():
            counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    def _state(self) -> object:
        return copy.deepcopy(self.records)

    def _restore(self, state: Any) -> None:
        self.records = copy.deepcopy(state)


class InMemoryUnitOfWork:
    """Transactions over the fakes: rollback restores what the last commit left.

    `fail_commit` makes the next commits raise (and roll back), as a database would.
    """

    def __init__(
        self,
        users: FakeUserRepository[Any] | None = None,
        outbox: InMemoryOutbox | None = None,
        runs: InMemoryRunStore | None = None,
    ) -> None:
        self.users: FakeUserRepository[Any] = users if users is not None else FakeUserRepository()
        self.outbox = outbox if outbox is not None else InMemoryOutbox()
        self.runs = runs if runs is not None else InMemoryRunStore()
        self.commits = 0
        self.rollbacks = 0
        self.fail_commit: Exception | None = None
        self._snapshot = self._take()

    def _take(self) -> tuple[object, object, object]:
        return (self.users._state(), self.outbox._state(), self.runs._state())

    def commit(self) -> None:
        if self.fail_commit is not None:
            self.rollback()
            raise self.fail_commit
        self.commits += 1
        self._snapshot = self._take()

    def rollback(self) -> None:
        self.rollbacks += 1
        users, outbox, runs = self._snapshot
        self.users._restore(users)
        self.outbox._restore(outbox)
        self.runs._restore(runs)
