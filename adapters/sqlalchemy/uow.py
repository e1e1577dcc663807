"""The unit of work on SQLAlchemy: one Session, one transaction, shared by every repository."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Self

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from adapters.sqlalchemy.engine import prepare
from adapters.sqlalchemy.outbox import DEAD, PUBLISHED, SqlOutbox
from adapters.sqlalchemy.store import SqlRunStore
from adapters.sqlalchemy.tables import TABLES, Tables
from fsm.defaults import utc_now
from fsm.errors import FSMError
from fsm.outbox import LeftBehind


class SqlUnitOfWork:
    """Implements fsm.ports.UnitOfWork (and fsm.outbox.OutboxUnitOfWork): `with uow:` opens a
    Session and its transaction.

    Leaving the block commits, or rolls back if it raised; `commit()` inside the block
    commits what was done so far and goes on in a fresh transaction. The run store and the
    outbox are bound to that Session, and so is `session` for an action's own statements,
    so whatever an action writes commits or rolls back with the run's own step. `tables`
    are the engine's tables (see adapters.sqlalchemy.define_tables: a prefix, a schema).
    One instance serves one thread at a time; blocks do not nest.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = utc_now,
        tables: Tables = TABLES,
    ) -> None:
        self.engine = prepare(engine)
        self.clock = clock
        self.tables = tables
        # expire_on_commit=False: records handed out stay readable after a step commits.
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self._session: Session | None = None
        self._runs: SqlRunStore | None = None
        self._outbox: SqlOutbox | None = None

    def __enter__(self) -> Self:
        if self._session is not None:
            raise FSMError(
                "this unit of work is already in a transaction; blocks do not nest "
                "(use one `with uow:` per transaction, or another SqlUnitOfWork)"
            )
        session = self._sessions()
        self._session = session
        self._runs = SqlRunStore(session, clock=self.clock, tables=self.tables)
        self._outbox = SqlOutbox(session, clock=self.clock, tables=self.tables)
        self._opened(session)
        return self

    def _opened(self, session: Session) -> None:
        """Bind a subclass's own repositories to the new transaction's session."""

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        session = self._session
        if session is None:
            return
        try:
            if kind is None:
                session.commit()
            else:
                session.rollback()
        finally:
            session.close()
            self._session = self._runs = self._outbox = None

    @property
    def session(self) -> Session:
        """The open Session, for an action's own queries in the same transaction."""
        if self._session is None:
            raise FSMError("no transaction is open; use the unit of work as `with uow:` first")
        return self._session

    @property
    def runs(self) -> SqlRunStore:
        self.session  # noqa: B018 - raises the clear error outside a block
        assert self._runs is not None
        return self._runs

    @property
    def outbox(self) -> SqlOutbox:
        self.session  # noqa: B018 - raises the clear error outside a block
        assert self._outbox is not None
        return self._outbox

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()

    def left_behind(
        self,
        machine: str,
        *,
        limit: int,
        skip: Collection[str] = (),
        parked: Collection[str] = (),
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox message is published or dead."""
        return left_behind(self.session, self.tables, machine, limit, skip, parked)


def left_behind(
    session: Session,
    tables: Tables,
    machine: str,
    limit: int,
    skip: Collection[str],
    parked: Collection[str],
) -> list[LeftBehind]:
    """fsm.outbox.OutboxStores.left_behind on `session` (the sync and the async unit of work)."""
    runs, outbox = tables.runs, tables.outbox
    rows = session.execute(
        select(
            runs.c.id,
            outbox.c.event_id,
            outbox.c.status,
            outbox.c.attempts,
            outbox.c.last_error,
        )
        .join(outbox, outbox.c.run_id == runs.c.id)
        .where(
            runs.c.machine == machine,
            runs.c.finished.is_(False),
            outbox.c.status.in_((PUBLISHED, DEAD)),
            runs.c.id.not_in(list(skip)),
            runs.c.state.not_in(list(parked)),
        )
        .order_by(runs.c.updated_at, runs.c.id)
        .limit(limit)
    )
    return [LeftBehind(*row) for row in rows]
