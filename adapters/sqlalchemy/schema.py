"""Creating the adapter's tables (what `fsm db init` runs, idempotent) and checking for them."""

from __future__ import annotations

import shlex
from pathlib import Path

from sqlalchemy import Engine, inspect, text
from sqlalchemy.schema import CreateColumn

from adapters.sqlalchemy.tables import TABLES, metadata
from fsm.errors import FSMError


class SchemaMissing(FSMError):
    """The database lacks some of the adapter's tables: `fsm db init` creates them."""


def init_db(engine: Engine) -> list[str]:
    """Create the tables that do not exist yet, and add the columns a newer version added
    to existing ones (all of them nullable or with a default); return what was created,
    as table names and `table.column` names."""
    missing = missing_tables(engine)
    metadata.create_all(engine, checkfirst=True)
    added = missing_columns(engine)
    with engine.begin() as connection:
        for name in added:
            table, column = name.split(".")
            ddl = CreateColumn(metadata.tables[table].c[column]).compile(dialect=engine.dialect)
            connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))
    return missing + added


def missing_columns(engine: Engine) -> list[str]:
    """`table.column` for each column of the adapter's existing tables the database lacks
    (a database created by an older version)."""
    with engine.connect() as connection:
        inspector = inspect(connection)
        existing = set(inspector.get_table_names())
        return [
            f"{name}.{column.name}"
            for name in TABLES
            if name in existing
            for column in metadata.tables[name].columns
            if column.name not in {c["name"] for c in inspector.get_columns(name)}
        ]


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
    """SchemaMissing, in one line naming the missing tables (or columns) and the command
    that creates them."""
    missing = missing_tables(engine)
    what = "table"
    if not missing:
        missing, what = missing_columns(engine), "column"
    if not missing:
        return
    names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} or {missing[-1]}"
    shown = engine.url.render_as_string(hide_password=True)
    raise SchemaMissing(
        f"{shown} has no {names} {what}: run fsm db init --db-url {shlex.quote(shown)}"
    )
