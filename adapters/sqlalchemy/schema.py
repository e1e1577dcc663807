"""Creating the adapter's tables (what `fsm db init` runs, idempotent) and checking for them.

The engine's tables come first; `extra` names other tables a flow needs (its own MetaData,
by the name `fsm db init --with NAME` knows it under), created and checked alike.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from sqlalchemy import Engine, MetaData, Table, inspect, text
from sqlalchemy.schema import CreateColumn

from adapters.sqlalchemy.tables import TABLES, Tables
from fsm.errors import FSMError

Extra = Mapping[str, MetaData]
"""Tables beyond the engine's, by name: {"userstatus": userstatus.sql.metadata}."""


class SchemaMissing(FSMError):
    """The database lacks some of the adapter's tables: `fsm db init` creates them."""


def all_tables(tables: Tables, extra: Extra) -> list[Table]:
    """The engine's tables, then those of `extra`."""
    return [*tables.all, *(t for metadata in extra.values() for t in metadata.sorted_tables)]


def init_db(engine: Engine, tables: Tables = TABLES, *, extra: Extra = {}) -> list[str]:  # noqa: B006
    """Create the tables that do not exist yet, and add the columns (and indexes) a newer
    version added to existing ones (all of them nullable or with a default); return what
    was created,
    as table names and `table.column` names."""
    missing = missing_tables(engine, tables, extra=extra)
    for metadata in (tables.metadata, *extra.values()):
        metadata.create_all(engine, checkfirst=True)
    added = missing_columns(engine, tables, extra=extra)
    known = {table.fullname: table for table in all_tables(tables, extra)}
    with engine.begin() as connection:
        for name in added:
            table_name, column = name.rsplit(".", 1)
            table = known[table_name]
            ddl = CreateColumn(table.c[column]).compile(dialect=engine.dialect)
            connection.execute(text(f"ALTER TABLE {table.fullname} ADD COLUMN {ddl}"))
        for table in known.values():  # an index on a column added since (runs.due_at)
            for index in table.indexes:
                index.create(connection, checkfirst=True)
    return missing + added


def missing_tables(engine: Engine, tables: Tables = TABLES, *, extra: Extra = {}) -> list[str]:  # noqa: B006
    """The tables the database lacks; creates nothing (not even a SQLite file)."""
    wanted = all_tables(tables, extra)
    database = engine.url.database
    if (
        engine.dialect.name == "sqlite"
        and database
        and database != ":memory:"
        and not database.startswith("file:")
        and not Path(database).exists()
    ):
        return [table.fullname for table in wanted]  # connecting would create the file
    with engine.connect() as connection:
        inspector = inspect(connection)
        existing = {
            (schema, name)
            for schema in {table.schema for table in wanted}
            for name in inspector.get_table_names(schema=schema)
        }
    return [table.fullname for table in wanted if (table.schema, table.name) not in existing]


def missing_columns(engine: Engine, tables: Tables = TABLES, *, extra: Extra = {}) -> list[str]:  # noqa: B006
    """`table.column` for each column of the existing tables the database lacks (a database
    created by an older version)."""
    absent = set(missing_tables(engine, tables, extra=extra))
    with engine.connect() as connection:
        inspector = inspect(connection)
        found: list[str] = []
        for table in all_tables(tables, extra):
            if table.fullname in absent:
                continue
            have = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
            found += [f"{table.fullname}.{c.name}" for c in table.columns if c.name not in have]
        return found


def require_tables(engine: Engine, tables: Tables = TABLES, *, extra: Extra = {}) -> None:  # noqa: B006
    """SchemaMissing, in one line naming the missing tables (or columns) and the command
    that creates them."""
    missing = missing_tables(engine, tables, extra=extra)
    what = "table"
    if not missing:
        missing, what = missing_columns(engine, tables, extra=extra), "column"
    if not missing:
        return
    names = missing[0] if len(missing) == 1 else f"{', '.join(missing[:-1])} or {missing[-1]}"
    shown = engine.url.render_as_string(hide_password=True)
    options = "".join(f" --with {name}" for name in extra)
    raise SchemaMissing(
        f"{shown} has no {names} {what}: run fsm db init{options} --db-url {shlex.quote(shown)}"
    )
