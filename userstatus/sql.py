"""The flow's users on SQLAlchemy: their table (on the flow's own MetaData), the repository,
and the unit of work that reaches them next to the engine's runs and outbox."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session

from adapters.sqlalchemy import checks
from adapters.sqlalchemy.aio import AsyncSqlUnitOfWork
from adapters.sqlalchemy.store import among, dialect_of, insert_row
from adapters.sqlalchemy.tables import NAMING_CONVENTION, UTCDateTime
from adapters.sqlalchemy.uow import SqlUnitOfWork
from fsm.ports import ConcurrencyError, InvalidRecord
from userstatus.ports import UserRecord, changed_by_reading

STATUS_LENGTH = 64

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The reference flow's own tables (its users), apart from the engine's."""

users = Table(
    "users",
    metadata,
    Column("id", BigInteger, autoincrement=False),
    Column("status", String(STATUS_LENGTH), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    PrimaryKeyConstraint("id"),
)
"""A user of the reference flow: id, status, and a version for optimistic locking."""

FLOW_TABLES = {"userstatus": metadata}
"""The flow's tables as `init_db`/`require_tables` take them (`fsm db init --with userstatus`)."""

# The hot statements, built once (building one costs more than running it): parameters
# `b_id`, `b_version` and the columns to set.
_GET = select(users).where(users.c.id == bindparam("b_id"))
_VERSION = select(users.c.version).where(users.c.id == bindparam("b_id"))
_UPDATE = (
    update(users)
    .where(users.c.id == bindparam("b_id"), users.c.version == bindparam("b_version"))
    .returning(*users.c)
)
_BEFORE = select(users).where(users.c.id == bindparam("b_id")).subquery("before")
_CHANGE = (  # PostgreSQL: RETURNING a column of a FROM item (SQLite returns the target's only)
    update(users)
    .where(
        users.c.id == _BEFORE.c.id,
        # Under a concurrent change the row is read again after its lock (READ COMMITTED),
        # _BEFORE is not: the version check refuses to write over what it did not judge.
        users.c.version == _BEFORE.c.version,
        among(_BEFORE.c.status, "b_allowed", "postgresql"),
    )
    .values(
        status=bindparam("b_status", type_=users.c.status.type),
        version=users.c.version + 1,
        updated_at=bindparam("b_now", type_=users.c.updated_at.type),
    )
    .returning(*_BEFORE.c)
)


class SqlUserRepository:
    """Implements userstatus.ports.UserRepository within a Session's current transaction."""

    def __init__(self, session: Session, *, clock: Callable[[], datetime]) -> None:
        self._session = session
        self._clock = clock
        self._one_statement = dialect_of(session) == "postgresql"

    def get(self, user_id: int) -> UserRecord | None:
        checks.positive_int("user id", user_id)
        row = self._session.execute(_GET, {"b_id": user_id}).one_or_none()
        return None if row is None else UserRecord(*row)

    def create(self, user_id: int, status: str) -> UserRecord:
        checks.positive_int("user id", user_id)
        checks.text("status", status, STATUS_LENGTH)
        now = self._clock()
        record = UserRecord(user_id, status, 1, now, now)
        values = {"status": status, "version": 1, "created_at": now, "updated_at": now}
        if not insert_row(self._session, users, id=user_id, **values):
            raise InvalidRecord(f"user {user_id} exists already")
        return record

    def highest_id(self) -> int:
        highest = self._session.execute(select(func.max(users.c.id))).scalar_one_or_none()
        return int(highest or 0)

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        checks.positive_int("user id", user_id)
        checks.text("status", status, STATUS_LENGTH)
        checks.positive_int("expected version", expected_version, 2**31 - 1)
        now = self._clock()
        row = self._session.execute(
            _UPDATE,
            {
                "b_id": user_id,
                "b_version": expected_version,
                "status": status,
                "version": expected_version + 1,
                "updated_at": now,
            },
        ).one_or_none()
        if row is None:
            found = self._session.execute(_VERSION, {"b_id": user_id}).scalar_one_or_none()
            raise ConcurrencyError("user", user_id, expected=expected_version, found=found)
        return UserRecord(*row)

    def change_status(
        self, user_id: int, status: str, *, allowed_from: Collection[str]
    ) -> UserRecord | None:
        checks.positive_int("user id", user_id)
        checks.text("status", status, STATUS_LENGTH)
        if not self._one_statement:
            return changed_by_reading(self, user_id, status, allowed_from)
        row = self._session.execute(
            _CHANGE,
            {
                "b_id": user_id,
                "b_allowed": list(allowed_from),
                "b_status": status,
                "b_now": self._clock(),
            },
        ).one_or_none()
        return None if row is None else UserRecord(*row)


class FlowSqlUnitOfWork(SqlUnitOfWork):
    """SqlUnitOfWork whose transaction also reaches the flow's users (FlowUnitOfWork)."""

    _users: SqlUserRepository | None = None

    def _opened(self, session: Session) -> None:
        self._users = SqlUserRepository(session, clock=self.clock)

    @property
    def users(self) -> SqlUserRepository:
        self.session  # noqa: B018 - raises the clear error outside a block
        assert self._users is not None
        return self._users


class AsyncFlowSqlUnitOfWork(AsyncSqlUnitOfWork):
    """AsyncSqlUnitOfWork whose transaction also reaches the users (AsyncFlowUnitOfWork): the
    sync repository, on the AsyncSession's own connection, used inside `await
    uow.run_sync(work)` as the outbox is."""

    @property
    def users(self) -> SqlUserRepository:
        return SqlUserRepository(self.session.sync_session, clock=self.clock)
