"""A fresh PostgreSQL schema for a test, a dry run or a campaign, dropped afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def fresh_schema(server: str, prefix: str) -> Iterator[str]:
    """A URL on `server` whose search_path is a new schema (so subprocesses given the URL see
    the same tables); the schema and everything in it is dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as connection:
            connection.execute(text(f'create schema "{schema}"'))
        url = make_url(server).update_query_dict({"options": f"-csearch_path={schema}"})
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.begin() as connection:
                connection.execute(text(f'drop schema if exists "{schema}" cascade'))
    finally:
        admin.dispose()
