"""The unit of work on SQLAlchemy: one Session, one transaction, shared by every repository."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from adapters.sqlalchemy.engine import prepare
from adapters.sqlalchemy.outbox import SqlOutbox
from adapters.sqlalchemy.store import SqlRunStore
from adapters.sqlalchemy.users import SqlUserRepository
from fsm.defaults import utc_now
from fsm.errors import FSMError


class SqlUnitOfWork:
    """Implements fsm.ports.UnitOfWork: `with uow:` opens a Session and its transaction.

    Leaving the block commits, or rolls back if it raised; `commit()` inside the block
    commits what was done so far and goes on in a fresh transaction. The run store, the
    outbox and the users are bound to that Session, so whatever an action writes through
    them commits or rolls back with the run's own step. One instance serves one thread at a
    time; blocks do not nest.
    """

    def __init__(self, engine: Engine, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = prepare(engine)
        self.clock = clock
        # expire_on_commit=False: records handed out stay readable after a step commits.
        self._sessions = sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self._session: Session | None = None
        self._runs: SqlRunStore | None = None
        self._outbox: SqlOutbox | None = None
        self._users: SqlUserRepository | None = None

    def __enter__(self) -> SqlUnitOfWork:
        if self._session is not None:
            raise FSMError(
                "this unit of work is already in a transaction; blocks do not nest "
                "(use one `with uow:` per transaction, or another SqlUnitOfWork)"
            )
        session = self._sessions()
        self._session = session
        self._runs = SqlRunStore(session, clock=self.clock)
        self._outbox = SqlOutbox(session, clock=self.clock)
        self._users = SqlUserRepository(session, clock=self.clock)
        return self

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
            self._session = self._runs = self._outbox = self._users = None

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

    @property
    def users(self) -> SqlUserRepository:
        self.session  # noqa: B018 - raises the clear error outside a block
        assert self._users is not None
        return self._users

    def commit(self) -> None:
        self.session.commit()

    def rollback(self) -> None:
        self.session.rollback()
