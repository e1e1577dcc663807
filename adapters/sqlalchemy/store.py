"""The run store on SQLAlchemy: runs and their history, with an optimistic version check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.tables import ID_LENGTH, NAME_LENGTH, HistoryRow, RunRow
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

    def __init__(self, session: Session, *, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock
        # History read by `load` in the same statement as the run, so that `history` right
        # after it matches the run even when another process commits a step in between
        # (READ COMMITTED gives each statement its own snapshot).
        self._history: dict[str, list[HistoryRecord]] = {}

    def create(self, record: RunRecord) -> None:
        _check_run(record)
        if record.version != 1:
            raise InvalidRecord(f"a new run starts at version 1, not {record.version}")
        now = self._clock()
        row = RunRow(
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
        )
        self._history.pop(record.id, None)
        try:
            insert(self._session, row)
        except IntegrityError as error:
            raise RunExists(record.id) from error

    def load(self, run_id: str) -> RunRecord:
        checks.text("run id", run_id, ID_LENGTH)
        try:
            found = self._session.execute(
                select(RunRow, HistoryRow)
                .outerjoin(HistoryRow, HistoryRow.run_id == RunRow.id)
                .where(RunRow.id == run_id)
                .order_by(HistoryRow.seq)
                .execution_options(populate_existing=True)
            ).all()
        except json.JSONDecodeError as error:
            raise self._corrupt(run_id, "context or history", error) from error
        if not found:
            raise RunNotFound(run_id)
        row = found[0][0]
        steps = [step for _, step in found if step is not None]
        self._history[run_id] = [_entry(step) for step in steps]
        # Records are the truth: the session keeps no objects to refresh behind our back.
        for loaded in (row, *steps):
            self._session.expunge(loaded)
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
        )

    def save(self, record: RunRecord) -> int:
        _check_run(record)
        self._history.pop(record.id, None)
        new_version = record.version + 1
        result = self._session.execute(
            update(RunRow)
            .where(RunRow.id == record.id, RunRow.version == record.version)
            .values(
                state=record.state,
                context=record.context,
                version=new_version,
                finished=record.finished,
                updated_at=record.updated_at or self._clock(),
                claimed_by=record.claimed_by,
                claimed_until=record.claimed_until,
                attempt=record.attempt,
            )
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            found = self._session.execute(
                select(RunRow.version).where(RunRow.id == record.id)
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
        row = HistoryRow(
            run_id=entry.run_id,
            seq=entry.seq,
            source=entry.source,
            trigger=entry.trigger,
            target=entry.target,
            outcome=entry.outcome,
            at=entry.at,
        )
        try:
            insert(self._session, row)
        except IntegrityError as error:
            # Another writer stored this step already, or the run is gone.
            last = self._session.execute(
                select(func.max(HistoryRow.seq)).where(HistoryRow.run_id == entry.run_id)
            ).scalar_one_or_none()
            if last is None and self._session.get(RunRow, entry.run_id) is None:
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
        limit: int = 100,
    ) -> list[str]:
        """Ids of runs of `machine`, least recently updated first (for sweepers and reports).

        A sweeper that resumes runs stuck between steps (their process died) asks for
        `states=machine.resumable_states, finished=False, updated_before=now - grace`.
        """
        checks.text("machine name", machine, NAME_LENGTH)
        checks.positive_int("limit", limit, 10_000)
        query = select(RunRow.id).where(RunRow.machine == machine)
        if states is not None:
            query = query.where(RunRow.state.in_(list(states)))
        if finished is not None:
            query = query.where(RunRow.finished.is_(finished))
        if updated_before is not None:
            query = query.where(RunRow.updated_at < checks.aware("updated_before", updated_before))
        query = query.order_by(RunRow.updated_at, RunRow.id).limit(limit)
        return list(self._session.execute(query).scalars())

    def history(self, run_id: str) -> list[HistoryRecord]:
        cached = self._history.get(run_id)
        if cached is not None:
            return list(cached)
        try:
            rows = list(
                self._session.execute(
                    select(HistoryRow)
                    .where(HistoryRow.run_id == run_id)
                    .order_by(HistoryRow.seq)
                    .execution_options(populate_existing=True)
                ).scalars()
            )
        except json.JSONDecodeError as error:
            raise self._corrupt(run_id, "history outcome", error) from error
        for row in rows:
            self._session.expunge(row)
        return [_entry(row) for row in rows]

    def _corrupt(self, run_id: str, where: str, error: Exception) -> DecodeError:
        machine = self._session.execute(
            select(RunRow.machine).where(RunRow.id == run_id)
        ).scalar_one_or_none()
        return DecodeError(
            f"the stored JSON is corrupt ({error})",
            machine=machine or "?",
            run_id=run_id,
            where=where,
        )


def insert(session: Session, row: object) -> None:
    """Insert one row now, in a savepoint: a unique violation leaves the transaction usable.

    The object leaves the session afterwards, so later reads see the database, not it.
    """
    with session.begin_nested():
        session.add(row)
    session.expunge(row)


def _entry(row: HistoryRow) -> HistoryRecord:
    return HistoryRecord(
        run_id=row.run_id,
        seq=row.seq,
        source=row.source,
        trigger=row.trigger,
        target=row.target,
        outcome=row.outcome,
        at=row.at,
    )


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
    for field in ("created_at", "updated_at", "claimed_until"):
        value = getattr(record, field)
        if value is not None:
            checks.aware(field, value)
