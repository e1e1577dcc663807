"""The run store on SQLAlchemy: runs and their history, with an optimistic version check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Insert, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.tables import ID_LENGTH, NAME_LENGTH, TABLES, Tables
from fsm.codec import DecodeError
from fsm.ports import (
    ConcurrencyError,
    HistoryRecord,
    InvalidRecord,
    RunExists,
    RunNotFound,
    RunRecord,
)


class SqlRunStore:
    """Implements fsm.ports.RunStore within a Session's current transaction."""

    def __init__(
        self, session: Session, *, clock: Callable[[], datetime], tables: Tables = TABLES
    ) -> None:
        self._session = session
        self._clock = clock
        self._runs = tables.runs
        self._steps = tables.history
        # History read by `load` in the same statement as the run, so that `history` right
        # after it matches the run even when another process commits a step in between
        # (READ COMMITTED gives each statement its own snapshot).
        self._history: dict[str, list[HistoryRecord]] = {}

    def create(self, record: RunRecord) -> None:
        _check_run(record)
        if record.version != 1:
            raise InvalidRecord(f"a new run starts at version 1, not {record.version}")
        now = self._clock()
        self._history.pop(record.id, None)
        try:
            insert_row(
                self._session,
                insert(self._runs).values(
                    id=record.id,
                    machine=record.machine,
                    state=record.state,
                    context=record.context,
                    version=1,
                    finished=record.finished,
                    created_at=record.created_at or now,
                    updated_at=record.updated_at or now,
                    claimed_by=record.claimed_by,
                    claimed_until=record.claimed_until,
                    attempt=record.attempt,
                    due_at=record.due_at,
                ),
            )
        except IntegrityError as error:
            raise RunExists(record.id) from error

    def load(self, run_id: str) -> RunRecord:
        checks.text("run id", run_id, ID_LENGTH)
        runs, steps = self._runs, self._steps
        step_columns = [c.label(f"step_{c.name}") for c in steps.c]
        try:
            found = self._session.execute(
                select(runs, *step_columns)
                .outerjoin(steps, steps.c.run_id == runs.c.id)
                .where(runs.c.id == run_id)
                .order_by(steps.c.seq)
            ).all()
        except json.JSONDecodeError as error:
            raise self._corrupt(run_id, "context or history", error) from error
        if not found:
            raise RunNotFound(run_id)
        row = found[0]
        self._history[run_id] = [
            _entry(*(getattr(step, f"step_{c.name}") for c in steps.c))
            for step in found
            if step.step_seq is not None
        ]
        context = row.context
        if not isinstance(context, dict):
            raise DecodeError(
                f"the stored context is {type(context).__name__}, not a JSON object",
                machine=row.machine,
                run_id=run_id,
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

    def save(self, record: RunRecord) -> int:
        _check_run(record)
        self._history.pop(record.id, None)
        new_version = record.version + 1
        runs = self._runs
        result = self._session.execute(
            update(runs)
            .where(runs.c.id == record.id, runs.c.version == record.version)
            .values(
                state=record.state,
                context=record.context,
                version=new_version,
                finished=record.finished,
                updated_at=record.updated_at or self._clock(),
                claimed_by=record.claimed_by,
                claimed_until=record.claimed_until,
                attempt=record.attempt,
                due_at=record.due_at,
            )
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            found = self._session.execute(
                select(runs.c.version).where(runs.c.id == record.id)
            ).scalar_one_or_none()
            raise ConcurrencyError("run", record.id, expected=record.version, found=found)
        return new_version

    def append(self, entry: HistoryRecord) -> None:
        checks.text("run id", entry.run_id, ID_LENGTH)
        for field in ("source", "trigger", "target"):
            checks.text(f"history {field}", getattr(entry, field), NAME_LENGTH)
        checks.positive_int("history seq", entry.seq, 2**31 - 1)
        checks.aware("history time", entry.at)
        checks.json_value("history outcome", entry.outcome)
        self._history.pop(entry.run_id, None)
        steps = self._steps
        try:
            insert_row(
                self._session,
                insert(steps).values(
                    run_id=entry.run_id,
                    seq=entry.seq,
                    source=entry.source,
                    trigger=entry.trigger,
                    target=entry.target,
                    outcome=entry.outcome,
                    at=entry.at,
                ),
            )
        except IntegrityError as error:
            # Another writer stored this step already, or the run is gone.
            last = self._session.execute(
                select(func.max(steps.c.seq)).where(steps.c.run_id == entry.run_id)
            ).scalar_one_or_none()
            stored = self._session.execute(
                select(self._runs.c.id).where(self._runs.c.id == entry.run_id)
            ).scalar_one_or_none()
            if last is None and stored is None:
                raise RunNotFound(entry.run_id) from error
            raise ConcurrencyError(
                "run history", entry.run_id, expected=entry.seq - 1, found=last
            ) from error

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
        return list(self._session.execute(query).scalars())

    def find_due(self, machine: str, now: datetime, limit: int) -> list[str]:
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
        return list(self._session.execute(query).scalars())

    def _claimable(self, now: datetime) -> ColumnElement[bool]:
        """No claim holds the run past `now`."""
        runs = self._runs
        return or_(runs.c.claimed_until.is_(None), runs.c.claimed_until <= now)

    def history(self, run_id: str) -> list[HistoryRecord]:
        cached = self._history.get(run_id)
        if cached is not None:
            return list(cached)
        steps = self._steps
        try:
            rows = self._session.execute(
                select(steps).where(steps.c.run_id == run_id).order_by(steps.c.seq)
            ).all()
        except json.JSONDecodeError as error:
            raise self._corrupt(run_id, "history outcome", error) from error
        return [_entry(*row) for row in rows]

    def _corrupt(self, run_id: str, where: str, error: Exception) -> DecodeError:
        machine = self._session.execute(
            select(self._runs.c.machine).where(self._runs.c.id == run_id)
        ).scalar_one_or_none()
        return DecodeError(
            f"the stored JSON is corrupt ({error})",
            machine=machine or "?",
            run_id=run_id,
            where=where,
        )


def insert_row(session: Session, statement: Insert) -> None:
    """Run one INSERT now, in a savepoint: a unique violation leaves the transaction usable."""
    with session.begin_nested():
        session.execute(statement)


def _entry(
    run_id: str, seq: int, source: str, trigger: str, target: str, outcome: Any, at: datetime
) -> HistoryRecord:
    """A history record from a row's columns, in the table's order."""
    return HistoryRecord(run_id, seq, source, trigger, target, outcome, at)


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
