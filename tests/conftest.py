"""Shared fixtures (a database URL and an engine, on SQLite and PostgreSQL) and the test tiers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, Phase, settings

from tests.schemas import fresh_schema

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.ext.asyncio import AsyncEngine

POSTGRES_URL = os.environ.get(
    "FSM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL server the tests use; each test gets a schema of its own there."""

settings.register_profile(
    "mutation",
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.differing_executors],
    phases=[Phase.explicit, Phase.generate],
    deadline=None,
)
"""`--hypothesis-profile=mutation`, for mutation testing (tests/mutation.py): mutmut runs each
test many times in one process, and a mutant is killed or survives the same way every time
only when the examples are the same. A failing example kills the mutant as it is found, so
nothing is shrunk (shrinking made a killed mutant of fsm.interop take minutes), and a slow
example on a busy machine kills nothing."""

INTEGRATION_FIXTURES = frozenset({"postgres_server", "broker", "kafka"})
"""Fixtures that need PostgreSQL or start the Kafka-protocol broker (tests/flow/conftest.py,
tests/flow/test_statement_faults.py): a test using one, directly or through another
fixture, is an integration test."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `integration` the tests that need PostgreSQL (`postgres_server`, or `db_url` and
    `engine` on postgresql) or the broker, and the campaign; the rest is the fast core."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_postgres = callspec is not None and callspec.params.get("db_url") == "postgresql"
        uses = INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if on_postgres or uses or item.get_closest_marker("campaign") is not None:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """POSTGRES_URL once it answers; skips (or fails under FSM_REQUIRE_POSTGRES=1) if not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
    except Exception as error:
        reason = f"PostgreSQL at {POSTGRES_URL} is unreachable: {str(error).splitlines()[0]}"
        if os.environ.get("FSM_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (FSM_REQUIRE_POSTGRES=1)", pytrace=False)
        pytest.skip(reason)
    finally:
        engine.dispose()
    return POSTGRES_URL


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh PostgreSQL schema dropped afterwards.

    The URL carries the schema (search_path), so subprocesses given it see the same tables.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'fsm.sqlite3'}"
        return
    server: str = request.getfixturevalue("postgres_server")
    with fresh_schema(server, "fsm_test") as url:
        yield url


@pytest.fixture
async def async_engine(engine: Engine, db_url: str) -> AsyncIterator[AsyncEngine]:
    """An asyncio engine on `db_url`, whose tables the `engine` fixture created."""
    from adapters.sqlalchemy import create_async_engine

    created = create_async_engine(db_url)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on `db_url` with the engine's tables and the reference flow's created."""
    from adapters.sqlalchemy import create_engine, init_db
    from userstatus.sql import FLOW_TABLES

    created = create_engine(db_url)
    init_db(created, extra=FLOW_TABLES)
    try:
        yield created
    finally:
        created.dispose()
