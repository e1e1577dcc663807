"""The unit of work on SQLAlchemy's asyncio engine: one AsyncSession, one transaction.

PostgreSQL through psycopg 3's async connections (`postgresql+psycopg://`, as for the sync
engine), SQLite through aiosqlite (`create_async_engine` turns `sqlite://` into
`sqlite+aiosqlite://`). The run store's statements are the sync store's (RunStatements); the
outbox is the sync SqlOutbox itself, used inside `run_sync` (SQLAlchemy's greenlets).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as sqlalchemy_async_engine

from adapters.sqlalchemy.engine import (
    SQLITE_BUSY_SECONDS,
    check_pool,
    drop_if_closed,
    parse_url,
    prepare,
)
from adapters.sqlalchemy.outbox import SqlOutbox
from adapters.sqlalchemy.store import AsyncSqlRunStore
from adapters.sqlalchemy.tables import TABLES, Tables
from adapters.sqlalchemy.uow import left_behind
from fsm.defaults import utc_now
from fsm.errors import FSMError
from fsm.outbox import LeftBehind

T = TypeVar("T")


def create_async_engine(url: str, **options: Any) -> AsyncEngine:
    """`sqlalchemy.ext.asyncio.create_async_engine`, with SQLite on aiosqlite and prepared
    for several writers, and a server's pooled connections checked at checkout, as the sync
    engine's are (see adapters.sqlalchemy.engine: prepare, check_pool)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
        options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_SECONDS)
    quick = check_pool(parsed, options)
    engine = sqlalchemy_async_engine(parsed, **options)
    if quick:
        event.listen(engine.sync_engine, "checkout", drop_if_closed)
    prepare(engine.sync_engine)
    return engine


class AsyncSqlUnitOfWork:
    """Implements fsm.ports.AsyncUnitOfWork (and fsm.outbox.AsyncOutboxUnitOfWork): `async with
    uow:` opens an AsyncSession and its transaction.

    Leaving the block commits, or rolls back if it raised; `await commit()` inside the
    block commits what was done so far and goes on in a fresh transaction. The run store
    is bound to that session, and so is `session` for an action's own statements (`await
    uow.session.execute(...)`), so whatever an action writes commits or rolls back with
    the run's own step. The outbox is the sync SqlOutbox on the session's own connection,
    used inside `await uow.run_sync(work)`: SQLAlchemy runs `work` in a greenlet, so its
    statements are awaited and the loop runs meanwhile (outside it they raise). One instance
    serves one task at a time; blocks do not nest: give each task its own (they share the
    engine and its pool).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        clock: Callable[[], datetime] = utc_now,
        tables: Tables = TABLES,
    ) -> None:
        prepare(engine.sync_engine)
        self.engine = engine
        self.clock = clock
        self.tables = tables
        # expire_on_commit=False: records handed out stay readable after a step commits.
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self._session: AsyncSession | None = None
        self._runs: AsyncSqlRunStore | None = None

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise FSMError(
                "this unit of work is already in a transaction; blocks do not nest "
                "(use one `async with uow:` per transaction, and one AsyncSqlUnitOfWork per task)"
            )
        session = self._sessions()
        self._session = session
        self._runs = AsyncSqlRunStore(session, clock=self.clock, tables=self.tables)
        return self

    async def __aexit__(self, kind: object, error: object, traceback: object) -> None:
        session = self._session
        if session is None:
            return
        try:
            if kind is None:
                await session.commit()
            else:
                await session.rollback()
        finally:
            self._session = self._runs = None
            await session.close()

    @property
    def session(self) -> AsyncSession:
        """The open AsyncSession, for an action's own statements in the same transaction."""
        if self._session is None:
            raise FSMError(
                "no transaction is open; use the unit of work as `async with uow:` first"
            )
        return self._session

    @property
    def runs(self) -> AsyncSqlRunStore:
        self.session  # noqa: B018 - raises the clear error outside a block
        assert self._runs is not None
        return self._runs

    async def commit(self) -> None:
        await self.session.commit()

    async def rollback(self) -> None:
        await self.session.rollback()

    async def run_sync(self, work: Callable[[], T]) -> T:
        """`work()` in the open transaction, where `outbox` and `left_behind` may be used."""
        return await self.session.run_sync(lambda _: work())

    @property
    def outbox(self) -> SqlOutbox:
        """The outbox, in this unit's transaction (inside `run_sync`)."""
        return SqlOutbox(self.session.sync_session, clock=self.clock, tables=self.tables)

    def left_behind(
        self,
        machine: str,
        *,
        limit: int,
        skip: Collection[str] = (),
        parked: Collection[str] = (),
    ) -> list[LeftBehind]:
        """Unfinished runs of `machine` whose outbox message is published or dead (inside
        `run_sync`)."""
        return left_behind(self.session.sync_session, self.tables, machine, limit, skip, parked)
