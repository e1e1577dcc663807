"""Creating the adapter's tables (what `fsm db init` runs); idempotent."""

from __future__ import annotations

from sqlalchemy import Engine, inspect

from adapters.sqlalchemy.tables import TABLES, metadata


def init_db(engine: Engine) -> list[str]:
    """Create the tables that do not exist yet; return the names of those created."""
    with engine.connect() as connection:
        existing = set(inspect(connection).get_table_names())
    metadata.create_all(engine, checkfirst=True)
    return [name for name in TABLES if name not in existing]
