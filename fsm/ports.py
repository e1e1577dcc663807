"""Ports: the Protocols through which runs reach their store, and the store's errors.

The outbox, an optional part, has its own ports in fsm.outbox."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fsm.errors import FSMError

# --- Persistence: runs, their history, the transaction they share with the actions ---------


class ConcurrencyError(FSMError):
    """Someone else changed the record since it was read: nothing of this step was written.

    `entity` is what was stale ("run", "user"), `key` its id; `expected` is the version the
    caller read, `found` the version stored now (None when the record has gone).
    """

    def __init__(self, entity: str, key: object, *, expected: int, found: int | None) -> None:
        self.entity = entity
        self.key = key
        self.expected = expected
        self.found = found
        now = "it no longer exists" if found is None else f"found version {found}"
        super().__init__(
            f"{entity} {key} was changed by someone else: expected version {expected}, {now}; "
            "nothing was written, reload and try again"
        )

    @property
    def run_id(self) -> str | None:
        """The run's id when the stale record is a run."""
        return str(self.key) if self.entity in ("run", "run history") else None


class RunNotFound(FSMError):
    """No stored run has this id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"no stored run has id {run_id!r}")


class RunExists(FSMError):
    """A run with this id is stored already."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        super().__init__(f"a run with id {run_id!r} is stored already; pick another id")


class InvalidRecord(FSMError, ValueError):
    """A port refused a record before writing anything: names the field and what is allowed."""


class RunClaimed(FSMError):
    """Another worker holds the run's claim: it is taking an external step right now.

    Nothing was called or written. Try again after `until`: if that worker died, its claim
    has run out by then and the step can be taken (with the same idempotency key).
    """

    def __init__(self, run_id: str, owner: str, until: datetime, attempt: int) -> None:
        self.run_id = run_id
        self.owner = owner
        self.until = until
        self.attempt = attempt
        super().__init__(
            f"run {run_id} is claimed by {owner!r} until {until.isoformat()} (attempt "
            f"{attempt} of its external step); nothing was called, try again after that"
        )


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run as stored: state and context already encoded to JSON-compatible values."""

    id: str
    machine: str
    state: str
    """The state's stored label (fsm.persistence.state_label): a string as is, an Enum member by
    its value when that is a string, else by its name."""
    context: dict[str, object]
    version: int
    """Starts at 1; every save adds one. A save checks the stored version is still this one."""
    finished: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None
    claimed_by: str | None = None
    """The worker taking the run's external step, while it does (None between steps)."""
    claimed_until: datetime | None = None
    """When that claim runs out: after it, any worker may take the step (its lease)."""
    attempt: int = 0
    """How many times the current external step was claimed (0 once a step is recorded)."""
    due_at: datetime | None = None
    """When the waiting state's timeout is due (fsm.timers); None: the state has none."""


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One stored transition of a run; `seq` counts from 1 with no gaps."""

    run_id: str
    seq: int
    source: str
    trigger: str
    target: str
    outcome: object
    """The encoded value that fired the row (JSON-compatible)."""
    at: datetime


@dataclass(frozen=True, slots=True)
class RunHead:
    """Where a stored run stands, without its context or history (RunStore.heads): what a
    step that depends on the run's state alone needs."""

    id: str
    machine: str
    state: str
    version: int
    seq: int
    """Its last step's number (0: none yet)."""
    entered_at: datetime | None
    """When it entered its state: its last step's time (its creation's before any)."""


@dataclass(frozen=True, slots=True)
class RunMove:
    """A step written without the run's context, which stays as stored (RunStore.write_many):
    the run goes to `entry.target` if it is still at `version`, with `finished` and
    `due_at`, updated at `entry.at` and its claim given up, as `write` saves a step."""

    entry: HistoryRecord
    version: int
    finished: bool
    due_at: datetime | None = None


class RunStore(Protocol):
    """Runs and their history, written within the unit of work's current transaction."""

    def create(self, record: RunRecord) -> None:
        """Insert a new run (its version is 1); RunExists if the id is taken."""
        ...

    def load(self, run_id: str) -> RunRecord:
        """The stored run; RunNotFound if there is none."""
        ...

    def save(self, record: RunRecord) -> int:
        """Write the run if its stored version is still `record.version`; return the new one.

        Raises ConcurrencyError (and writes nothing) when the stored version differs.
        """
        ...

    def append(self, entry: HistoryRecord) -> None:
        """Add one transition to the run's history."""
        ...

    def history(self, run_id: str) -> list[HistoryRecord]:
        """The run's transitions, oldest first."""
        ...

    def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]:
        """The stored runs among `run_ids` (those not stored are left out), read at once;
        `history` of each is then read with them."""
        ...

    def write(self, record: RunRecord, entry: HistoryRecord) -> int:
        """`save` the run and `append` its step (`entry`, of the same run) at once: what a
        step writes. ConcurrencyError if the version moved or the step is stored already,
        and then the caller must roll back. Returns the new version."""
        ...

    def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None:
        """`write` each run and its step, and each move (its run's state, version and claim
        as `write` would save them, its context left as stored, and its step); each run
        once, all locked in one order. ConcurrencyError if any stored version differs or
        a step is stored already, and then the caller must roll back: some of the others
        may be written."""
        ...

    def heads(self, run_ids: Sequence[str]) -> list[RunHead]:
        """Where each stored run among `run_ids` stands (those not stored are left out),
        read at once, without its context or history."""
        ...

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
        """Ids of runs of `machine`, least recently updated first: in one of `states`
        (stored labels), finished or not, last written before `updated_before`, with no
        claim running past `claimable_at`, as asked."""
        ...

    def find_due(self, machine: str, now: datetime, limit: int) -> list[str]:
        """Ids of unfinished runs of `machine` whose timeout is due at `now` and that no
        claim holds past it, the longest due first."""
        ...


class UnitOfWork(Protocol):
    """One database transaction shared by the run store and the actions' repositories.

    `with uow:` opens it; leaving the block commits, or rolls back if it raised. `commit()`
    inside the block commits what was done so far and goes on in a fresh transaction.
    """

    @property
    def runs(self) -> RunStore: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, kind: object, error: object, traceback: object) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...


class AsyncRunStore(Protocol):
    """RunStore for an async unit of work: the same contract, each method awaited."""

    async def create(self, record: RunRecord) -> None: ...

    async def load(self, run_id: str) -> RunRecord: ...

    async def save(self, record: RunRecord) -> int: ...

    async def append(self, entry: HistoryRecord) -> None: ...

    async def history(self, run_id: str) -> list[HistoryRecord]: ...

    async def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]: ...

    async def write(self, record: RunRecord, entry: HistoryRecord) -> int: ...

    async def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None: ...

    async def heads(self, run_ids: Sequence[str]) -> list[RunHead]: ...


class AsyncUnitOfWork(Protocol):
    """UnitOfWork for asyncio: `async with uow:` opens the transaction; leaving the block
    commits, or rolls back if it raised. One task uses it at a time; blocks do not nest."""

    @property
    def runs(self) -> AsyncRunStore: ...

    async def __aenter__(self) -> AsyncUnitOfWork: ...

    async def __aexit__(self, kind: object, error: object, traceback: object) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...
