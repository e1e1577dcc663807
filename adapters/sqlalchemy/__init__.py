"""SQLAlchemy adapters: run store, unit of work, users and outbox (SQLite, PostgreSQL)."""

from adapters.sqlalchemy.engine import DEFAULT_DB_URL, create_engine, default_db_url, prepare
from adapters.sqlalchemy.outbox import OutboxEntry, SqlOutbox
from adapters.sqlalchemy.schema import init_db
from adapters.sqlalchemy.store import SqlRunStore
from adapters.sqlalchemy.tables import (
    Base,
    HistoryRow,
    OutboxRow,
    RunRow,
    UserRow,
    metadata,
)
from adapters.sqlalchemy.uow import SqlUnitOfWork, utc_now
from adapters.sqlalchemy.users import SqlUserRepository

__all__ = [
    "DEFAULT_DB_URL",
    "Base",
    "HistoryRow",
    "OutboxEntry",
    "OutboxRow",
    "RunRow",
    "SqlOutbox",
    "SqlRunStore",
    "SqlUnitOfWork",
    "SqlUserRepository",
    "UserRow",
    "create_engine",
    "default_db_url",
    "init_db",
    "metadata",
    "prepare",
    "utc_now",
]
