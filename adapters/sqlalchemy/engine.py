"""Engines for the adapter: SQLite serialises writers with BEGIN IMMEDIATE; PostgreSQL as is.

Also how a database URL is parsed and shown: its password never in a message or a log line.
"""

from __future__ import annotations

import os
import select
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, NoSuchModuleError
from sqlalchemy.pool import ConnectionPoolEntry

DEFAULT_DB_URL = "sqlite:///fsm.sqlite3"
"""Used when neither --db-url nor the FSM_DB_URL environment variable names a database."""

SQLITE_BUSY_SECONDS = 30.0
"""How long a SQLite writer waits for another one before "database is locked"."""


class DatabaseUrlError(ValueError):
    """A database URL that cannot be used; the message shows it with the password hidden."""


def default_db_url() -> str:
    """FSM_DB_URL if set, else a SQLite file in the current directory."""
    return os.environ.get("FSM_DB_URL") or DEFAULT_DB_URL


def create_engine(url: str, **options: Any) -> Engine:
    """`sqlalchemy.create_engine`, with SQLite prepared for several writers (see `prepare`)
    and a server's pooled connections checked at checkout (see `check_pool`)."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        options.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_SECONDS)
    quick = check_pool(parsed, options)
    engine = sqlalchemy.create_engine(parsed, **options)
    if quick:
        event.listen(engine, "checkout", drop_if_closed)
    prepare(engine)
    return engine


def check_pool(parsed: URL, options: dict[str, Any]) -> bool:
    """Whether a server's pool hands out only connections the server has not closed (after a
    restart, a terminated backend, an idle timeout) by `drop_if_closed`: True on psycopg;
    other drivers get pool_pre_ping in `options`. Options naming pool_pre_ping are kept.

    SQLAlchemy's pool_pre_ping sends a statement at every checkout: two round trips per
    step of a flow. `drop_if_closed` sends none. A connection that dies without a word (a
    host gone, a network cut) fails its first statement either way: steps try again
    (fsm.retry.RetryPolicy), and SQLAlchemy then replaces every connection of the pool.
    """
    if parsed.get_backend_name() == "sqlite" or "pool_pre_ping" in options:
        return False
    if parsed.get_driver_name() != "psycopg":
        options["pool_pre_ping"] = True
        return False
    return True


def drop_if_closed(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
    """A pool's checkout listener (psycopg): a pooled connection is idle, so one whose socket
    has something to read (the server's last message, then the end) is dropped, as is one
    already closed; the pool hands out a new one instead."""
    connection = record.driver_connection
    if connection is None or connection.closed:
        raise DisconnectionError("the pooled connection is closed")
    readable, _, _ = select.select([connection.fileno()], [], [], 0)
    if readable:  # a notice the server sent an idle session is rare: a reconnect at worst
        raise DisconnectionError("the server has closed the pooled connection")


def parse_url(url: str) -> URL:
    """`make_url`, also loading the dialect and its driver; DatabaseUrlError (password hidden)
    where that fails.

    An unencoded "@" in the password makes SQLAlchemy take the password's tail for the host,
    which the driver then prints ("failed to resolve host"): refused, with the way out.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as error:
        raise DatabaseUrlError(f"{shown_url(url)!r} is not a SQLAlchemy URL") from error
    if parsed.host is not None and "@" in parsed.host:
        raise DatabaseUrlError(f"{shown_url(url)!r} has an '@' in its password: write it as %40")
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError as error:
        raise DatabaseUrlError(
            f"{shown_url(url)!r} is not a usable SQLAlchemy URL ({error})"
        ) from error
    except ImportError as error:
        raise DatabaseUrlError(
            f"{shown_url(url)!r} needs a database driver that is not installed ({error})"
        ) from error
    return parsed


def shown_url(url: str) -> str:
    """`url` fit for a message or a log line: all between the user name and the last "@" hidden.

    Unlike SQLAlchemy's hide_password this also holds for a password with an unencoded "@"
    and for a URL that does not parse.
    """
    head, at, rest = url.rpartition("@")
    if not at:
        return url
    scheme, separator, credentials = head.partition("://")
    if not separator:
        scheme, credentials = "", head
    user, colon, _password = credentials.partition(":")
    if "/" in user:  # not credentials: an "@" in a path or in the query
        return url
    return f"{scheme}{separator}{user}{':***' if colon else ''}@{rest}"


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
