"""Engines for the adapter: SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL as is."""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url

DEFAULT_DB_URL = "sqlite:///fsm.sqlite3"
"""Used when neither --db-url nor the FSM_DB_URL environment variable names a database."""

SQLITE_BUSY_SECONDS = 30.0
"""How long a SQLite writer waits for another one before "database is locked"."""


def default_db_url() -> str:
    """FSM_DB_URL if set, else a SQLite file in the current directory."""
    return os.environ.get("FSM_DB_URL") or DEFAULT_DB_URL


def create_engine(url: str, **options: Any) -> Engine:
    """`sqlalchemy.create_engine`, with SQLite prepared for several writers (see `prepare`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_SECONDS)
    else:
        options.setdefault("pool_pre_ping", True)
    engine = sqlalchemy.create_engine(parsed, **options)
    prepare(engine)
    return engine


def prepare(engine: Engine) -> Engine:
    """Make a SQLite engine take the write lock when a transaction begins; idempotent.

    pysqlite begins transactions lazily and upgrades read locks to write locks later, where
    two writers can deadlock ("database is locked" at once). BEGIN IMMEDIATE queues writers
    instead, so each transaction sees the state it will write over. PostgreSQL is left alone.
    """
    if engine.dialect.name != "sqlite" or event.contains(engine, "begin", _begin_immediate):
        return engine
    event.listen(engine, "connect", _take_over_transactions)
    event.listen(engine, "begin", _begin_immediate)
    # Connections opened before this call still have pysqlite's own transaction handling.
    engine.dispose()
    return engine


def _take_over_transactions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # pysqlite stops emitting BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _begin_immediate(connection: sqlalchemy.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")
