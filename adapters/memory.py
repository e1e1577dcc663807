"""In-memory adapters: fakes of the engine's ports that record what happened, for tests."""

from __future__ import annotations

import asyncio
import copy
import weakref
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Self

from fsm.defaults import utc_now
from fsm.errors import FSMError
from fsm.outbox import LeaseLost, LeftBehind, OutboxMessage, PublishError
from fsm.ports import (
    ConcurrencyError,
    HistoryRecord,
    InvalidRecord,
    RunExists,
    RunHead,
    RunMove,
    RunNotFound,
    RunRecord,
)

PENDING, PUBLISHED, DEAD = "pending", "published", "dead"


class _Recorder:
    """Records every message in `.sent`; `fail_next` or `failing` make publishes raise."""

    def __init__(self) -> None:
        self.sent: list[OutboxMessage] = []
        self.attempts = 0
        self.failing = False
        self.fail_next = 0

    def _take(self, message: OutboxMessage) -> None:
        self.attempts += 1
        if self.failing or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise PublishError(f"broker unavailable (fake), event {message.event_id}")
        self.sent.append(message)


class FakePublisher(_Recorder):
    """Records every message in `.sent`; `fail_next` or `failing` make publishes raise."""

    def publish(self, message: OutboxMessage) -> None:
        self._take(message)


class AsyncFakePublisher(_Recorder):
    """FakePublisher for asyncio (fsm.outbox.AsyncPublisher); `delay` seconds per publish."""

    delay = 0.0

    async def publish(self, message: OutboxMessage) -> None:
        await asyncio.sleep(self.delay)
        self._take(message)


@dataclass
class OutboxRecord:
    """One outbox row as the in-memory outbox keeps it."""

    message: OutboxMessage
    seq: int
    status: str = PENDING
    attempts: int = 0
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None
    published_at: datetime | None = None
    published_by: str | None = None


class InMemoryOutbox:
    """The Outbox contract in a dict: per-key order, leases that expire, attempts counted."""

    def __init__(self, clock: Callable[[], datetime] = utc_now) -> None:
        self.records: dict[str, OutboxRecord] = {}
        self.clock = clock
        self._seq = 0

    def add(self, message: OutboxMessage, *, hold_until: datetime | None = None) -> int:
        if message.event_id in self.records:
            raise InvalidRecord(f"an outbox message with event id {message.event_id!r} exists")
        earlier = self.pending_for_key(message.key)
        self._seq += 1
        created = message.created_at or self.clock()
        self.records[message.event_id] = OutboxRecord(
            replace(message, created_at=created),
            self._seq,
            attempts=message.attempts,
            next_attempt_at=(None if earlier else hold_until) or created,
        )
        return earlier

    def claim(
        self, *, owner: str, limit: int, lease_seconds: float, now: datetime
    ) -> list[OutboxMessage]:
        claimed: list[OutboxMessage] = []
        seen: set[str] = set()
        for record in sorted(self.records.values(), key=lambda r: r.seq):
            if record.status != PENDING or record.message.key in seen:
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

    def renew(self, *event_ids: str, owner: str, lease_seconds: float, now: datetime) -> set[str]:
        renewed = set()
        for event_id in event_ids:
            record = self._get(event_id)
            held = record.lease_until is not None and record.lease_until > now
            if record.status == PENDING and record.lease_owner == owner and held:
                record.lease_until = now + timedelta(seconds=lease_seconds)
                renewed.add(event_id)
        return renewed

    def release(self, event_ids: list[str], *, owner: str) -> int:
        released = 0
        for event_id in event_ids:
            record = self._get(event_id)
            if record.status == PENDING and record.lease_owner == owner:
                record.lease_owner = record.lease_until = None
                released += 1
        return released

    def mark_published(self, *event_ids: str, owner: str, now: datetime) -> None:
        # Published is a fact whoever holds the lease: the broker has the message. A dead
        # message stays dead (operators act on that state). The first publisher is kept.
        for record in [self._get(event_id) for event_id in event_ids]:
            if record.status == PENDING:
                record.status = PUBLISHED
                record.published_at = now
                record.published_by = owner
                record.lease_owner = record.lease_until = None

    def mark_failed(self, event_id: str, *, owner: str, error: str, retry_at: datetime) -> None:
        record = self._held(event_id, owner)
        record.attempts += 1
        record.last_error = error
        record.next_attempt_at = retry_at
        record.lease_owner = record.lease_until = None

    def mark_dead(self, event_id: str, *, owner: str, error: str, now: datetime) -> None:
        record = self._held(event_id, owner)
        record.status = DEAD
        record.last_error = error
        record.lease_owner = record.lease_until = None

    def redrive(self, event_id: str, *, now: datetime) -> None:
        record = self._get(event_id)
        if record.status != DEAD:
            raise InvalidRecord(f"outbox message {event_id!r} is {record.status}, not dead")
        record.status = PENDING
        record.attempts = 0
        record.next_attempt_at = now

    def _get(self, event_id: str) -> OutboxRecord:
        record = self.records.get(event_id)
        if record is None:
            raise InvalidRecord(f"no outbox message has event id {event_id!r}")
        return record

    def _held(self, event_id: str, owner: str) -> OutboxRecord:
        record = self._get(event_id)
        if record.status != PENDING or record.lease_owner not in (None, owner):
            raise LeaseLost(event_id, owner)
        return record

    def pending_for_key(self, key: str) -> int:
        return sum(1 for r in self.records.values() if r.status == PENDING and r.message.key == key)

    def counts(self) -> dict[str, int]:
        found = dict.fromkeys((PENDING, PUBLISHED, DEAD), 0)
        for record in self.records.values():
            found[record.status] += 1
        return found

    def oldest_pending(self) -> datetime | None:
        pending = [r.message.created_at for r in self.records.values() if r.status == PENDING]
        return min((at for at in pending if at is not None), default=None)

    def by_status(self, status: str) -> list[OutboxRecord]:
        """The records in `status` (pending, published, dead), oldest first."""
        return sorted((r for r in self.records.values() if r.status == status), key=lambda r: r.seq)

    def _state(self) -> object:
        return (copy.deepcopy(self.records), self._seq)

    def _restore(self, state: Any) -> None:
        self.records, self._seq = copy.deepcopy(state[0]), state[1]


class InMemoryRunStore:
    """Runs and their history in dicts (fsm.ports.RunStore), with the version check."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.histories: dict[str, list[HistoryRecord]] = {}

    def create(self, record: RunRecord) -> None:
        if record.id in self.runs:
            raise RunExists(record.id)
        self.runs[record.id] = replace(record, version=1)
        self.histories[record.id] = []

    def load(self, run_id: str) -> RunRecord:
        record = self.runs.get(run_id)
        if record is None:
            raise RunNotFound(run_id)
        return record

    def save(self, record: RunRecord) -> int:
        stored = self.runs.get(record.id)
        if stored is None or stored.version != record.version:
            found = stored.version if stored is not None else None
            raise ConcurrencyError("run", record.id, expected=record.version, found=found)
        self.runs[record.id] = replace(
            record, version=record.version + 1, created_at=stored.created_at
        )
        return record.version + 1

    def append(self, entry: HistoryRecord) -> None:
        history = self.histories.setdefault(entry.run_id, [])
        if entry.seq != len(history) + 1:  # as a database's key on (run, seq) would refuse
            raise ConcurrencyError(
                "run history", entry.run_id, expected=entry.seq - 1, found=len(history)
            )
        history.append(entry)

    def history(self, run_id: str) -> list[HistoryRecord]:
        return list(self.histories.get(run_id, []))

    def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]:
        return [self.runs[run_id] for run_id in run_ids if run_id in self.runs]

    def write(self, record: RunRecord, entry: HistoryRecord) -> int:
        version = self.save(record)
        self.append(entry)
        return version

    def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None:
        for record, entry in steps:
            self.write(record, entry)
        for move in moves:
            self._move(move)

    def heads(self, run_ids: Sequence[str]) -> list[RunHead]:
        return [self._head(self.runs[run_id]) for run_id in run_ids if run_id in self.runs]

    def _head(self, record: RunRecord) -> RunHead:
        history = self.histories.get(record.id, [])
        entered = history[-1].at if history else record.created_at
        return RunHead(
            record.id, record.machine, record.state, record.version, len(history), entered
        )

    def _move(self, move: RunMove) -> None:
        entry = move.entry
        stored = self.runs.get(entry.run_id)
        if stored is None:
            raise ConcurrencyError("run", entry.run_id, expected=move.version, found=None)
        record = replace(
            stored,
            state=entry.target,
            version=move.version,
            finished=move.finished,
            updated_at=entry.at,
            claimed_by=None,
            claimed_until=None,
            attempt=0,
            due_at=move.due_at,
        )
        self.write(record, entry)

    def find(
        self,
        machine: str,
        *,
        states: Iterable[str] | None = None,
        finished: bool | None = None,
        updated_before: datetime | None = None,
        claimable_at: datetime | None = None,
        limit: int = 100,
    ) -> list[str]:
        wanted = set(states) if states is not None else None
        found = [
            record
            for record in self.runs.values()
            if record.machine == machine
            and (wanted is None or record.state in wanted)
            and (finished is None or record.finished == finished)
            and (updated_before is None or _before(record.updated_at, updated_before))
            and (claimable_at is None or _claimable(record, claimable_at))
        ]
        found.sort(key=lambda r: (r.updated_at or _EPOCH, r.id))
        return [record.id for record in found[:limit]]

    def find_due(self, machine: str, now: datetime, limit: int) -> list[str]:
        found = [
            record
            for record in self.runs.values()
            if record.machine == machine
            and not record.finished
            and record.due_at is not None
            and record.due_at <= now
            and _claimable(record, now)
        ]
        found.sort(key=lambda r: (r.due_at, r.id))
        return [record.id for record in found[:limit]]

    def state_of(self, run_id: str) -> str:
        """The stored state label of a run."""
        return self.load(run_id).state

    def counts_by_state(self) -> dict[str, int]:
        """How many runs are in each state (by stored label)."""
        counts: dict[str, int] = {}
        for record in self.runs.values():
            counts[record.state] = counts.get(record.state, 0) + 1
        return counts

    def _state(self) -> object:
        return (dict(self.runs), {k: list(v) for k, v in self.histories.items()})

    def _restore(self, state: Any) -> None:
        self.runs = dict(state[0])
        self.histories = {k: list(v) for k, v in state[1].items()}


_EPOCH = datetime.min.replace(tzinfo=UTC)
"""Sorts a run never written (no updated_at) first."""


def _before(value: datetime | None, limit: datetime) -> bool:
    return value is not None and value < limit


def _claimable(record: RunRecord, now: datetime) -> bool:
    """No claim holds the run past `now`."""
    return record.claimed_until is None or record.claimed_until <= now


class InMemoryUnitOfWork:
    """Transactions over the fakes, as fsm.ports.UnitOfWork (and fsm.outbox.OutboxUnitOfWork):
    `with uow:` commits or rolls back.

    Rollback restores what the last commit left, in the run store, the outbox and each of
    `parts` (a flow's own fakes: anything with `_state()` and `_restore(state)`).
    `fail_commit` makes the next commit raise (after rolling back), as a database refusing
    it would; `lose_commit_ack` makes it raise after committing, as a commit whose
    acknowledgement was lost would.
    """

    def __init__(
        self,
        outbox: InMemoryOutbox | None = None,
        runs: InMemoryRunStore | None = None,
        parts: Iterable[Any] = (),
    ) -> None:
        self.outbox = outbox if outbox is not None else InMemoryOutbox()
        self.runs = runs if runs is not None else InMemoryRunStore()
        self._parts = (self.outbox, self.runs, *parts)
        self.commits = 0
        self.rollbacks = 0
        self.fail_commit: Exception | None = None
        self.lose_commit_ack: Exception | None = None
        self._open = False
        self._snapshot = self._take()

    @property
    def in_transaction(self) -> bool:
        """True inside a `with uow:` block (a test asks it while an external call runs)."""
        return self._open

    def _take(self) -> list[object]:
        return [part._state() for part in self._parts]

    def __enter__(self) -> Self:
        if self._open:
            raise FSMError("this unit of work is already in a transaction; blocks do not nest")
        self._open = True
        self._snapshot = self._take()
        return self

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            if kind is None:
                self.commit()
            else:
                self.rollback()
        finally:
            self._open = False

    def left_behind(
        self,
        machine: str,
        *,
        limit: int,
        skip: Collection[str] = (),
        parked: Collection[str] = (),
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox event is published or dead."""
        found = [
            LeftBehind(run.id, r.message.event_id, r.status, r.attempts, r.last_error)
            for r in self.outbox.by_status(PUBLISHED) + self.outbox.by_status(DEAD)
            if (run := self.runs.runs.get(r.message.run_id or "")) is not None
            and run.machine == machine
            and not run.finished
            and run.id not in skip
            and run.state not in parked
        ]
        return found[:limit]

    def commit(self) -> None:
        if self.fail_commit is not None:
            error, self.fail_commit = self.fail_commit, None
            self.rollback()
            raise error
        self.commits += 1
        self._snapshot = self._take()
        if self.lose_commit_ack is not None:
            error, self.lose_commit_ack = self.lose_commit_ack, None
            raise error

    def rollback(self) -> None:
        self.rollbacks += 1
        for part, state in zip(self._parts, self._snapshot, strict=True):
            part._restore(state)


class AsyncInMemoryRunStore:
    """fsm.ports.AsyncRunStore over an InMemoryRunStore (`sync`): each call first lets other
    tasks run, as a database round trip would, then does what the sync store does."""

    def __init__(self, sync: InMemoryRunStore) -> None:
        self.sync = sync

    async def create(self, record: RunRecord) -> None:
        await asyncio.sleep(0)
        self.sync.create(record)

    async def load(self, run_id: str) -> RunRecord:
        await asyncio.sleep(0)
        return self.sync.load(run_id)

    async def save(self, record: RunRecord) -> int:
        await asyncio.sleep(0)
        return self.sync.save(record)

    async def append(self, entry: HistoryRecord) -> None:
        await asyncio.sleep(0)
        self.sync.append(entry)

    async def history(self, run_id: str) -> list[HistoryRecord]:
        await asyncio.sleep(0)
        return self.sync.history(run_id)

    async def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]:
        await asyncio.sleep(0)
        return self.sync.load_many(run_ids)

    async def write(self, record: RunRecord, entry: HistoryRecord) -> int:
        await asyncio.sleep(0)
        return self.sync.write(record, entry)

    async def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None:
        await asyncio.sleep(0)
        self.sync.write_many(steps, moves)

    async def heads(self, run_ids: Sequence[str]) -> list[RunHead]:
        await asyncio.sleep(0)
        return self.sync.heads(run_ids)


_WRITE_LOCKS: weakref.WeakKeyDictionary[InMemoryRunStore, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)
"""One write lock per run store: its async units of work take turns, as SQLite's writers do
(a rollback restores the store as the transaction found it, so two may not interleave)."""


class AsyncInMemoryUnitOfWork:
    """fsm.ports.AsyncUnitOfWork over an InMemoryUnitOfWork (`sync`, made if not given): its
    fakes, transactions and injected commit faults, awaited. Give each task its own, on
    one shared run store (`InMemoryUnitOfWork(runs=store)`), as with a database: their
    transactions take turns on it, and other tasks run while one is open."""

    def __init__(self, sync: InMemoryUnitOfWork | None = None) -> None:
        self.sync = sync if sync is not None else InMemoryUnitOfWork()
        self.runs = AsyncInMemoryRunStore(self.sync.runs)
        self._lock = _WRITE_LOCKS.setdefault(self.sync.runs, asyncio.Lock())

    @property
    def in_transaction(self) -> bool:
        """True inside an `async with uow:` block (a test asks it while an external call runs)."""
        return self.sync.in_transaction

    async def __aenter__(self) -> Self:
        if self.sync.in_transaction:
            self.sync.__enter__()  # raises: blocks do not nest
        await self._lock.acquire()
        try:
            self.sync.__enter__()
        except BaseException:
            self._lock.release()
            raise
        return self

    async def __aexit__(self, kind: object, error: object, traceback: object) -> None:
        try:
            await asyncio.sleep(0)
            self.sync.__exit__(kind, error, traceback)
        finally:
            self._lock.release()

    async def commit(self) -> None:
        await asyncio.sleep(0)
        self.sync.commit()

    async def rollback(self) -> None:
        self.sync.rollback()
