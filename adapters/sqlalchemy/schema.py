"""Creating the adapter's tables (what `fsm db init` runs, idempotent) and checking for them."""

from __future__ import annotations

import shlex
from pathlib import Path

from sqlalchemy import Engine, inspect

from adapters.sqlalchemy.tables import TABLES, metadata
from fsm.errors import FSMError


class SchemaMissing(FSMError):
    """The database lacks some of the adapter's tables: `fsm db init` creates them."""


def init_db(engine: Engine) -> list[str]:
    """Create the tables that do not exist yet; return the names of those created."""
    missing = missing_tables(engine)
    metadata.create_all(engine, checkfirst=True)
    return missing


def missing_tables(engine: Engine) -> list[str]:
    """The adapter's tables the database lacks; creates nothing (not even a SQLite file)."""
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        return list(TABLES)  # connecting would create the file
    with engine.connect() as connection:
        existing = set(inspect(connection).get_table_names())
    return [name for name in TABLES if name not in existing]


def require_tables(engine: Engine) -> None:
    """SchemaMissing, in one line naming the missing tables and the command that creates them."""
    missing = missing_tables(engine)
    if not missing:
        return
    names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} or {missing[-1]}"
    shown = engine.url.render_as_string(hide_password=True)
    raise SchemaMissing(
        f"{shown} has no {names} table: run fsm db init --db-url {shlex.quote(shown)}"
    )
