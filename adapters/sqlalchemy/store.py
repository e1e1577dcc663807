"""The run store on SQLAlchemy: runs and their history, with an optimistic version check.

Its statements and what it makes of their results are written once, in RunStatements, as
Steps (fsm.drive) over a Session or an AsyncSession: SqlRunStore drives them on a Session,
AsyncSqlRunStore awaits them on an AsyncSession.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ARRAY,
    BindParameter,
    ColumnElement,
    Executable,
    Row,
    Table,
    any_,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.tables import ID_LENGTH, NAME_LENGTH, TABLES, Tables
from fsm.codec import DecodeError
from fsm.drive import Steps, run_async, run_sync, settle
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

if TYPE_CHECKING:
    from sqlalchemy import Result
    from sqlalchemy.ext.asyncio import AsyncSession


class RunStatements:
    """fsm.ports.RunStore's logic within a session's current transaction, as Steps: the
    statements, the checks before them, and what their results (or errors) mean."""

    def __init__(
        self,
        session: Session | AsyncSession,
        *,
        clock: Callable[[], datetime],
        tables: Tables = TABLES,
    ) -> None:
        self._session = session
        self._clock = clock
        self._runs = tables.runs
        self._steps = tables.history
        self._sql = _run_sql(tables, dialect_of(session))
        # History read by `load` in the same statement as the run, so that `history` right
        # after it matches the run even when another process commits a step in between
        # (READ COMMITTED gives each statement its own snapshot).
        self._history: dict[str, list[HistoryRecord]] = {}

    def _execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> Steps[Result[Any]]:
        result: Result[Any] = yield from settle(self._session.execute(statement, parameters))
        return result

    def create_steps(self, record: RunRecord) -> Steps[None]:
        _check_run(record)
        if record.version != 1:
            raise InvalidRecord(f"a new run starts at version 1, not {record.version}")
        now = self._clock()
        self._history.pop(record.id, None)
        created = yield from self._execute(
            self._sql.insert_run,
            {
                "id": record.id,
                "machine": record.machine,
                "state": record.state,
                "context": record.context,
                "version": 1,
                "finished": record.finished,
                "created_at": record.created_at or now,
                "updated_at": record.updated_at or now,
                "claimed_by": record.claimed_by,
                "claimed_until": record.claimed_until,
                "attempt": record.attempt,
                "due_at": record.due_at,
            },
        )
        if created.first() is None:  # a row with this id is stored already (see insert_new)
            raise RunExists(record.id)

    def load_steps(self, run_id: str) -> Steps[RunRecord]:
        found = yield from self.load_many_steps([run_id])
        if not found:
            raise RunNotFound(run_id)
        return found[0]

    def load_many_steps(self, run_ids: Sequence[str]) -> Steps[list[RunRecord]]:
        """The stored runs among `run_ids`, each with its history, in one statement."""
        for run_id in run_ids:
            checks.text("run id", run_id, ID_LENGTH)
        steps = self._steps
        try:
            result = yield from self._execute(self._sql.load, {"ids": list(run_ids)})
            found = result.all()
        except json.JSONDecodeError as error:
            if len(run_ids) > 1:  # one at a time, to name the run whose JSON is corrupt
                each: list[RunRecord] = []
                for run_id in run_ids:
                    each += yield from self.load_many_steps([run_id])
                return each
            where = "context or history"
            raise (yield from self._corrupt(run_ids[0], where, error)) from error
        records: list[RunRecord] = []
        for row in found:
            if not records or records[-1].id != row.id:
                records.append(self._record(row))
                self._history[row.id] = []
            if row.step_seq is not None:
                entry = _entry(*(getattr(row, f"step_{c.name}") for c in steps.c))
                self._history[row.id].append(entry)
        return records

    def _record(self, row: Row[Any]) -> RunRecord:
        context = row.context
        if not isinstance(context, dict):
            raise DecodeError(
                f"the stored context is {type(context).__name__}, not a JSON object",
                machine=row.machine,
                run_id=row.id,
                where="context",
            )
        return RunRecord(
            id=row.id,
            machine=row.machine,
            state=row.state,
            context=context,
            version=row.version,
            finished=row.finished,
            created_at=row.created_at,
            updated_at=row.updated_at,
            claimed_by=row.claimed_by,
            claimed_until=row.claimed_until,
            attempt=row.attempt,
            due_at=row.due_at,
        )

    def save_steps(self, record: RunRecord) -> Steps[int]:
        _check_run(record)
        self._history.pop(record.id, None)
        result = yield from self._execute(self._sql.update_run, _saved(record, self._clock()))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            raise (yield from self._moved(record))
        return record.version + 1

    def append_steps(self, entry: HistoryRecord) -> Steps[None]:
        _check_entry(entry)
        self._history.pop(entry.run_id, None)
        try:
            stored = yield from self._execute(self._sql.insert_step, _step_row(entry))
            new = stored.first() is not None
        except IntegrityError as error:  # the foreign key: the run is gone
            raise RunNotFound(entry.run_id) from error
        if not new:  # another writer stored this step already
            raise (yield from self._stepped(entry))

    def write_steps(self, record: RunRecord, entry: HistoryRecord) -> Steps[int]:
        """`save` the run and `append` its step: on PostgreSQL in one statement (the step
        goes in only if the run's version matched), elsewhere in two."""
        if self._sql.write is None:
            version = yield from self.save_steps(record)
            yield from self.append_steps(entry)
            return version
        _check_run(record)
        _check_entry(entry)
        if entry.run_id != record.id:
            raise InvalidRecord(f"the step of run {entry.run_id} written with run {record.id}")
        self._history.pop(record.id, None)
        result = yield from self._execute(
            self._sql.write, _saved(record, self._clock()) | _step_row(entry)
        )
        saved, added = list(result.one())
        if not saved:
            raise (yield from self._moved(record))
        if not added:
            raise (yield from self._stepped(entry))
        return record.version + 1

    def write_many_steps(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> Steps[None]:
        """Each run's save and step, and each move: the versions and last steps of every
        run read and locked in one statement, in id order (a moved run, or a step stored
        already, is named); then on PostgreSQL the saves, the moves (their contexts
        untouched) and every step in a second (see _write_many), elsewhere in an executemany
        each. (One UPDATE ... FROM unnest(...) cost the client more CPU than executemany:
        psycopg formats array parameters in Python; one JSON parameter costs it a quarter.)"""
        for record, _ in steps:
            _check_run(record)
        written = [(record.version, entry) for record, entry in steps]
        written += [(move.version, move.entry) for move in moves]
        for _, entry in written:
            _check_entry(entry)
            self._history.pop(entry.run_id, None)
        if len({entry.run_id for _, entry in written}) != len(written):
            raise InvalidRecord("write_many takes each run once")
        if not written:
            return
        ids = [entry.run_id for _, entry in written]
        stored = yield from self._execute(self._sql.lock, {"ids": ids})
        found = {row.id: (row.version, row.last_seq) for row in stored}
        for expected, entry in written:
            version, last = found.get(entry.run_id, (None, None))
            if version != expected:
                raise ConcurrencyError("run", entry.run_id, expected=expected, found=version)
            if last is not None and last >= entry.seq:  # a step stored already
                raise ConcurrencyError(
                    "run history", entry.run_id, expected=entry.seq - 1, found=last
                )
        now = self._clock()
        saves = [_saved(record, now) for record, _ in steps]
        moved = [_moved_row(move) for move in moves]
        rows = [_step_row(entry) for _, entry in written]
        if self._sql.write_many is not None:
            values = {"runs": [_as_json(r) for r in saves + moved]}
            values["steps"] = [_as_json(r) for r in rows]
            result = yield from self._execute(self._sql.write_many, values)
            changed, added = list(result.one())
        else:
            changed, added = 0, 0
            for statement, each in ((self._sql.update_run, saves), (self._sql.move_run, moved)):
                if each:
                    result = yield from self._execute(statement, each)
                    changed += result.rowcount  # type: ignore[attr-defined]
        if changed != len(written):  # the rows are locked: only a driver's miscount gets here
            expected, entry = written[0]
            raise ConcurrencyError("run", entry.run_id, expected=expected, found=None)
        if self._sql.write_many is None:
            # Plain rows, no RETURNING: the driver sends one short statement per row,
            # pipelined, instead of one statement text as long as the batch, parsed anew
            # each time.
            try:
                yield from self._execute(self._sql.add_steps, rows)
            except IntegrityError as error:
                raise _appended(written) from error
        elif added != len(written):
            raise _appended(written)

    def heads_steps(self, run_ids: Sequence[str]) -> Steps[list[RunHead]]:
        """Where each stored run among `run_ids` stands, in one statement."""
        for run_id in run_ids:
            checks.text("run id", run_id, ID_LENGTH)
        result = yield from self._execute(self._sql.heads, {"ids": list(run_ids)})
        return [
            RunHead(
                row.id,
                row.machine,
                row.state,
                row.version,
                row.last_seq or 0,
                row.last_at if row.last_seq else row.created_at,
            )
            for row in result
        ]

    def _moved(self, record: RunRecord) -> Steps[ConcurrencyError]:
        """The error for a save that found the run at another version (or gone)."""
        found = yield from self._execute(self._sql.version, {"b_id": record.id})
        version = found.scalar_one_or_none()
        return ConcurrencyError("run", record.id, expected=record.version, found=version)

    def _stepped(self, entry: HistoryRecord) -> Steps[ConcurrencyError]:
        """The error for a step that another writer stored already."""
        last = yield from self._execute(self._sql.last_seq, {"b_id": entry.run_id})
        found = last.scalar_one_or_none()
        return ConcurrencyError("run history", entry.run_id, expected=entry.seq - 1, found=found)

    def find_steps(
        self,
        machine: str,
        *,
        states: Iterable[str] | None = None,
        finished: bool | None = None,
        updated_before: datetime | None = None,
        claimable_at: datetime | None = None,
        limit: int = 100,
    ) -> Steps[list[str]]:
        checks.text("machine name", machine, NAME_LENGTH)
        checks.positive_int("limit", limit, 10_000)
        runs = self._runs
        query = select(runs.c.id).where(runs.c.machine == machine)
        if states is not None:
            query = query.where(runs.c.state.in_(list(states)))
        if finished is not None:
            query = query.where(runs.c.finished.is_(finished))
        if updated_before is not None:
            query = query.where(runs.c.updated_at < checks.aware("updated_before", updated_before))
        if claimable_at is not None:
            query = query.where(self._claimable(checks.aware("claimable_at", claimable_at)))
        query = query.order_by(runs.c.updated_at, runs.c.id).limit(limit)
        result = yield from self._execute(query)
        return list(result.scalars())

    def find_due_steps(self, machine: str, now: datetime, limit: int) -> Steps[list[str]]:
        checks.text("machine name", machine, NAME_LENGTH)
        checks.positive_int("limit", limit, 10_000)
        now = checks.aware("now", now)
        runs = self._runs
        query = (
            select(runs.c.id)
            .where(
                runs.c.machine == machine,
                runs.c.due_at <= now,
                runs.c.finished.is_(False),
                self._claimable(now),
            )
            .order_by(runs.c.due_at, runs.c.id)
            .limit(limit)
        )
        result = yield from self._execute(query)
        return list(result.scalars())

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        """No claim holds the run past `now`."""
        runs = self._runs
        return or_(runs.c.claimed_until.is_(None), runs.c.claimed_until <= now)

    def history_steps(self, run_id: str) -> Steps[list[HistoryRecord]]:
        cached = self._history.get(run_id)
        if cached is not None:
            return list(cached)
        try:
            result = yield from self._execute(self._sql.history, {"b_id": run_id})
            rows = result.all()
        except json.JSONDecodeError as error:
            raise (yield from self._corrupt(run_id, "history outcome", error)) from error
        return [_entry(*tuple(row)) for row in rows]

    def _corrupt(self, run_id: str, where: str, error: Exception) -> Steps[DecodeError]:
        result = yield from self._execute(
            select(self._runs.c.machine).where(self._runs.c.id == run_id)
        )
        return DecodeError(
            f"the stored JSON is corrupt ({error})",
            machine=result.scalar_one_or_none() or "?",
            run_id=run_id,
            where=where,
        )


class SqlRunStore(RunStatements):
    """Implements fsm.ports.RunStore within a Session's current transaction."""

    def __init__(
        self, session: Session, *, clock: Callable[[], datetime], tables: Tables = TABLES
    ) -> None:
        super().__init__(session, clock=clock, tables=tables)

    def create(self, record: RunRecord) -> None:
        run_sync(self.create_steps(record))

    def load(self, run_id: str) -> RunRecord:
        return run_sync(self.load_steps(run_id))

    def save(self, record: RunRecord) -> int:
        return run_sync(self.save_steps(record))

    def append(self, entry: HistoryRecord) -> None:
        run_sync(self.append_steps(entry))

    def history(self, run_id: str) -> list[HistoryRecord]:
        return run_sync(self.history_steps(run_id))

    def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]:
        return run_sync(self.load_many_steps(run_ids))

    def write(self, record: RunRecord, entry: HistoryRecord) -> int:
        return run_sync(self.write_steps(record, entry))

    def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None:
        run_sync(self.write_many_steps(steps, moves))

    def heads(self, run_ids: Sequence[str]) -> list[RunHead]:
        return run_sync(self.heads_steps(run_ids))

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
        """Ids of runs of `machine`, least recently updated first (for sweepers and reports).

        A sweeper that resumes runs stuck between steps (their process died) asks for
        `states=machine.resumable_states, finished=False, updated_before=now - grace,
        claimable_at=now` (fsm.worker does).
        """
        steps = self.find_steps(
            machine,
            states=states,
            finished=finished,
            updated_before=updated_before,
            claimable_at=claimable_at,
            limit=limit,
        )
        return run_sync(steps)

    def find_due(self, machine: str, now: datetime, limit: int) -> list[str]:
        """Ids of unfinished, unclaimed runs of `machine` whose timeout is due at `now`."""
        return run_sync(self.find_due_steps(machine, now, limit))


class AsyncSqlRunStore(RunStatements):
    """Implements fsm.ports.AsyncRunStore within an AsyncSession's current transaction."""

    def __init__(
        self, session: AsyncSession, *, clock: Callable[[], datetime], tables: Tables = TABLES
    ) -> None:
        super().__init__(session, clock=clock, tables=tables)

    async def create(self, record: RunRecord) -> None:
        await run_async(self.create_steps(record))

    async def load(self, run_id: str) -> RunRecord:
        return await run_async(self.load_steps(run_id))

    async def save(self, record: RunRecord) -> int:
        return await run_async(self.save_steps(record))

    async def append(self, entry: HistoryRecord) -> None:
        await run_async(self.append_steps(entry))

    async def history(self, run_id: str) -> list[HistoryRecord]:
        return await run_async(self.history_steps(run_id))

    async def load_many(self, run_ids: Sequence[str]) -> list[RunRecord]:
        return await run_async(self.load_many_steps(run_ids))

    async def write(self, record: RunRecord, entry: HistoryRecord) -> int:
        return await run_async(self.write_steps(record, entry))

    async def write_many(
        self, steps: Sequence[tuple[RunRecord, HistoryRecord]], moves: Sequence[RunMove] = ()
    ) -> None:
        await run_async(self.write_many_steps(steps, moves))

    async def heads(self, run_ids: Sequence[str]) -> list[RunHead]:
        return await run_async(self.heads_steps(run_ids))

    async def find(
        self,
        machine: str,
        *,
        states: Iterable[str] | None = None,
        finished: bool | None = None,
        updated_before: datetime | None = None,
        limit: int = 100,
    ) -> list[str]:
        """See SqlRunStore.find."""
        steps = self.find_steps(
            machine, states=states, finished=finished, updated_before=updated_before, limit=limit
        )
        return await run_async(steps)


@dataclass(frozen=True, slots=True)
class _RunSql:
    """The run store's statements on one set of tables and one dialect, built once: building
    one costs more than a fast database takes to run it. Parameters: `ids` (a list),
    `b_id` and `b_version` (the run as read), the columns by name."""

    insert_run: Executable
    insert_step: Executable
    add_steps: Executable
    """INSERT history rows, a taken key raising (write_many: the runs are locked)."""
    update_run: Executable
    move_run: Executable
    """`update_run` without the context, the claim given up (write_many's moves)."""
    version: Executable
    last_seq: Executable
    load: Executable
    """The runs among `ids`, each with its history, in one statement."""
    lock: Executable
    """The versions and last history steps (`last_seq`) of the runs among `ids`, locked in
    one order by every writer: no deadlock."""
    heads: Executable
    """Each run among `ids` without its context, with its last step's `last_seq` and
    `last_at`."""
    history: Executable
    write: Executable | None
    """PostgreSQL: `update_run` and `insert_step` in one statement (the step goes in only if
    the run was saved), answering how many of each went in; elsewhere None."""
    write_many: Executable | None
    """PostgreSQL: write_many's saves, moves and steps in one statement, from two JSON
    parameters (`runs`, `steps`), answering how many of each went in; elsewhere None."""


@functools.cache
def _run_sql(tables: Tables, dialect: str) -> _RunSql:
    runs, steps = tables.runs, tables.history
    run_id: BindParameter[str] = bindparam("b_id")
    last = select(func.max(steps.c.seq)).where(steps.c.run_id == runs.c.id).scalar_subquery()
    last_at = (
        select(steps.c.at)
        .where(steps.c.run_id == runs.c.id)
        .order_by(steps.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )
    update_run = (
        update(runs)
        .where(runs.c.id == run_id, runs.c.version == bindparam("b_version"))
        .values(version=bindparam("b_version") + 1)
    )
    return _RunSql(
        insert_run=insert_new(runs, dialect),
        insert_step=insert_new(steps, dialect),
        add_steps=insert(steps),
        update_run=update_run,
        move_run=update_run.values(claimed_by=None, claimed_until=None, attempt=0),
        version=select(runs.c.version).where(runs.c.id == run_id),
        last_seq=select(func.max(steps.c.seq)).where(steps.c.run_id == run_id),
        load=select(runs, *(c.label(f"step_{c.name}") for c in steps.c))
        .outerjoin(steps, steps.c.run_id == runs.c.id)
        .where(among(runs.c.id, "ids", dialect))
        .order_by(runs.c.id, steps.c.seq),
        lock=select(runs.c.id, runs.c.version, last.label("last_seq"))
        .where(among(runs.c.id, "ids", dialect))
        .order_by(runs.c.id)
        .with_for_update(),
        heads=select(
            runs.c.id,
            runs.c.machine,
            runs.c.state,
            runs.c.version,
            runs.c.created_at,
            last.label("last_seq"),
            last_at.label("last_at"),
        ).where(among(runs.c.id, "ids", dialect)),
        history=select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq),
        write=_write(tables) if dialect == "postgresql" else None,
        write_many=_write_many(tables) if dialect == "postgresql" else None,
    )


SAVED = (
    "state",
    "context",
    "finished",
    "updated_at",
    "claimed_by",
    "claimed_until",
    "attempt",
    "due_at",
)
"""The columns a save writes (and the version), each bound by its name (see `_saved`)."""


def _write(tables: Tables) -> Executable:
    """WITH saved AS (UPDATE runs ... RETURNING id), added AS (INSERT INTO history SELECT
    ... FROM saved ON CONFLICT DO NOTHING RETURNING run_id) SELECT count(saved), count(added)."""
    runs, steps = tables.runs, tables.history
    saved = (
        update(runs)
        .where(runs.c.id == bindparam("b_id"), runs.c.version == bindparam("b_version"))
        .values({name: bindparam(name, type_=runs.c[name].type) for name in SAVED})
        .values(version=bindparam("b_version") + 1)
        .returning(runs.c.id)
        .cte("saved")
    )
    values = [bindparam(c.name, type_=c.type) for c in steps.c if c.name != "run_id"]
    return _counted(saved, steps, select(saved.c.id, *values))


def _counted(saved: Any, steps: Table, rows: Any) -> Executable:
    """The statement of `saved` (an UPDATE of runs RETURNING id, as a CTE) and an INSERT of
    `rows` into `steps` skipping taken keys: how many runs were saved, how many steps added."""
    added = (
        postgresql.insert(steps)
        .from_select([c.name for c in steps.c], rows)
        .on_conflict_do_nothing()
        .returning(steps.c.run_id)
        .cte("added")
    )
    return select(
        select(func.count()).select_from(saved).scalar_subquery(),
        select(func.count()).select_from(added).scalar_subquery(),
    )


def _write_many(tables: Tables) -> Executable:
    """WITH saved AS (UPDATE runs ... FROM jsonb_to_recordset(:runs) ... RETURNING id), added AS
    (INSERT INTO history SELECT ... FROM jsonb_to_recordset(:steps) ON CONFLICT DO NOTHING
    RETURNING run_id) SELECT count(saved), count(added).

    A move's row has no context (the stored one stays) and no claim (given up, attempt 0).
    The rows travel as one JSON text each: the client encodes it in C, where an executemany
    costs psycopg's Python per row and parameter (4.4x the client's CPU for 200 runs)."""
    runs, steps = tables.runs, tables.history

    def recordset(name: str, table: Table, columns: dict[str, str]) -> Any:
        """The rows of the JSON parameter `name` as a table `given_<name>`: each of `columns`
        typed as the column of `table` it maps to."""
        typed = [column(key, table.c[source].type) for key, source in columns.items()]
        return (
            func.jsonb_to_recordset(bindparam(name, type_=postgresql.JSONB))
            .table_valued(*typed)
            .render_derived(name=f"given_{name}", with_types=True)
        )

    row = recordset("runs", runs, {"b_id": "id", "b_version": "version", **{n: n for n in SAVED}})
    saved = (
        update(runs)
        .where(runs.c.id == row.c.b_id, runs.c.version == row.c.b_version)
        .values({name: row.c[name] for name in SAVED})
        .values(
            version=row.c.b_version + 1,
            context=func.coalesce(row.c.context, runs.c.context),
            attempt=func.coalesce(row.c.attempt, 0),
        )
        .returning(runs.c.id)
        .cte("saved")
    )
    step = recordset("steps", steps, {c.name: c.name for c in steps.c})
    # JSON's null comes out of the recordset as NULL: stored as JSON null, as a bound None is.
    outcome = func.coalesce(step.c.outcome, literal_column("'null'::jsonb"))
    return _counted(saved, steps, select(*(outcome if c.name == "outcome" else c for c in step.c)))


def _appended(written: list[tuple[int, HistoryRecord]]) -> ConcurrencyError:
    """The error for a step appended meanwhile by another writer (the runs were locked)."""
    entry = written[0][1]
    return ConcurrencyError("run history", entry.run_id, expected=entry.seq - 1, found=None)


def _as_json(row: dict[str, Any]) -> dict[str, Any]:
    """`row` for a JSON parameter: its datetimes in ISO form (with their offset)."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def dialect_of(session: Session | AsyncSession) -> str:
    """The name of the database dialect `session` speaks ("postgresql", "sqlite")."""
    return session.get_bind().dialect.name


def among(column: ColumnElement[Any], name: str, dialect: str) -> ColumnElement[bool]:
    """`column` is one of the list given as parameter `name`: on PostgreSQL `= ANY` of one
    array parameter (one short statement text, whatever the list's length), elsewhere an
    IN list expanded at execution."""
    if dialect == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


@functools.cache
def insert_new(table: Table, dialect: str) -> Executable:
    """INSERT a row (the parameters it is executed with) unless one with the same key
    exists: ON CONFLICT DO NOTHING, RETURNING its key (a row back: it went in; executed
    with a list of rows, one key back per row in). One statement and no savepoint, and a
    taken key leaves the transaction usable (rowcount cannot tell here: some drivers
    report -1)."""
    key = list(table.primary_key.columns)
    if dialect == "postgresql":
        statement: Any = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(table).on_conflict_do_nothing()
    else:
        statement = insert(table)  # elsewhere a taken key raises
    return statement.returning(*key)  # type: ignore[no-any-return]


def insert_row(session: Session, table: Table, **values: object) -> bool:
    """`insert_new` on a Session: False when a row with the same key exists."""
    statement = insert_new(table, dialect_of(session))
    return session.execute(statement, values).first() is not None


def _saved(record: RunRecord, now: datetime) -> dict[str, Any]:
    """The parameters of `_RunSql.update_run` saving `record` (as read at its version)."""
    return {
        "b_id": record.id,
        "b_version": record.version,
        "state": record.state,
        "context": record.context,
        "finished": record.finished,
        "updated_at": record.updated_at or now,
        "claimed_by": record.claimed_by,
        "claimed_until": record.claimed_until,
        "attempt": record.attempt,
        "due_at": record.due_at,
    }


def _moved_row(move: RunMove) -> dict[str, Any]:
    """The parameters of `_RunSql.move_run` for `move`."""
    entry = move.entry
    return {
        "b_id": entry.run_id,
        "b_version": move.version,
        "state": entry.target,
        "finished": move.finished,
        "updated_at": entry.at,
        "due_at": move.due_at,
    }


def _step_row(entry: HistoryRecord) -> dict[str, Any]:
    """A history record as the parameters of its row."""
    return {
        "run_id": entry.run_id,
        "seq": entry.seq,
        "source": entry.source,
        "trigger": entry.trigger,
        "target": entry.target,
        "outcome": entry.outcome,
        "at": entry.at,
    }


def _entry(
    run_id: str, seq: int, source: str, trigger: str, target: str, outcome: Any, at: datetime
) -> HistoryRecord:
    """A history record from a row's columns, in the table's order."""
    return HistoryRecord(run_id, seq, source, trigger, target, outcome, at)


def _check_entry(entry: HistoryRecord) -> None:
    checks.text("run id", entry.run_id, ID_LENGTH)
    for field in ("source", "trigger", "target"):
        checks.text(f"history {field}", getattr(entry, field), NAME_LENGTH)
    checks.positive_int("history seq", entry.seq, 2**31 - 1)
    checks.aware("history time", entry.at)
    checks.json_value("history outcome", entry.outcome)


def _check_run(record: RunRecord) -> None:
    checks.text("run id", record.id, ID_LENGTH)
    checks.text("machine name", record.machine, NAME_LENGTH)
    checks.text("state", record.state, NAME_LENGTH)
    if not isinstance(record.context, dict):
        raise InvalidRecord(f"a run's context must be a dict, got {type(record.context).__name__}")
    checks.json_value("context", record.context)
    if isinstance(record.version, bool) or not isinstance(record.version, int):
        raise InvalidRecord(f"version must be an integer, got {record.version!r}")
    if record.claimed_by is not None:
        checks.text("claimed_by", record.claimed_by, NAME_LENGTH)
    if isinstance(record.attempt, bool) or not isinstance(record.attempt, int):
        raise InvalidRecord(f"attempt must be an integer, got {record.attempt!r}")
    for field in ("created_at", "updated_at", "claimed_until", "due_at"):
        value = getattr(record, field)
        if value is not None:
            checks.aware(field, value)
