"""SQLAlchemy adapters: run store, unit of work (sync and asyncio) and outbox (SQLite, PostgreSQL).

Names are imported on first use, so that `fsm db` can be registered (and explain what to
install) on a machine where SQLAlchemy is not installed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from fsm.defaults import utc_now

if TYPE_CHECKING:
    from adapters.sqlalchemy.aio import AsyncSqlUnitOfWork, create_async_engine
    from adapters.sqlalchemy.engine import DEFAULT_DB_URL, create_engine, default_db_url, prepare
    from adapters.sqlalchemy.outbox import OutboxEntry, SqlOutbox
    from adapters.sqlalchemy.schema import (
        SchemaMissing,
        init_db,
        missing_columns,
        missing_tables,
        require_tables,
    )
    from adapters.sqlalchemy.store import AsyncSqlRunStore, SqlRunStore
    from adapters.sqlalchemy.tables import (
        TABLES,
        Tables,
        TableSettingsError,
        define_tables,
        metadata,
    )
    from adapters.sqlalchemy.uow import SqlUnitOfWork
    from fsm.defaults import utc_now

_HOMES = {
    "AsyncSqlUnitOfWork": "aio",
    "create_async_engine": "aio",
    "AsyncSqlRunStore": "store",
    "DEFAULT_DB_URL": "engine",
    "create_engine": "engine",
    "default_db_url": "engine",
    "prepare": "engine",
    "OutboxEntry": "outbox",
    "SqlOutbox": "outbox",
    "init_db": "schema",
    "missing_columns": "schema",
    "missing_tables": "schema",
    "require_tables": "schema",
    "SchemaMissing": "schema",
    "SqlRunStore": "store",
    "TableSettingsError": "tables",
    "Tables": "tables",
    "define_tables": "tables",
    "metadata": "tables",
    "TABLES": "tables",
    "SqlUnitOfWork": "uow",
    "utc_now": "uow",  # fsm.defaults.utc_now, re-exported
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'adapters.sqlalchemy' has no attribute {name!r}")
    return getattr(importlib.import_module(f"adapters.sqlalchemy.{home}"), name)


__all__ = [
    "DEFAULT_DB_URL",
    "TABLES",
    "AsyncSqlRunStore",
    "AsyncSqlUnitOfWork",
    "OutboxEntry",
    "SchemaMissing",
    "SqlOutbox",
    "SqlRunStore",
    "SqlUnitOfWork",
    "TableSettingsError",
    "Tables",
    "create_async_engine",
    "create_engine",
    "default_db_url",
    "define_tables",
    "init_db",
    "metadata",
    "missing_columns",
    "missing_tables",
    "prepare",
    "require_tables",
    "utc_now",
]
