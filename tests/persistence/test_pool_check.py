"""A server's pooled connections are checked at checkout without a round trip: one the server
closed is replaced, one it did not is handed out as is (adapters.sqlalchemy.engine.check_pool)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from adapters.sqlalchemy import create_async_engine, create_engine


@pytest.fixture
def admin(postgres_server: str) -> Iterator[Engine]:
    engine = create_engine(postgres_server)
    try:
        yield engine
    finally:
        engine.dispose()


def pooled_backend(engine: Engine) -> int:
    """The server process of the engine's one pooled connection, left idle in the pool."""
    with engine.connect() as connection:
        pid: int = connection.execute(text("select pg_backend_pid()")).scalar_one()
    return pid


def terminate(admin: Engine, pid: int) -> None:
    with admin.begin() as connection:
        assert connection.execute(text("select pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        # The backend is gone once pg_stat_activity no longer lists it.
        connection.execute(
            text(
                "do $$ begin for i in 1..500 loop "
                "exit when not exists (select 1 from pg_stat_activity where pid = "
                f"{int(pid)}); perform pg_sleep(0.01); end loop; end $$"
            )
        )


def last_query(admin: Engine, pid: int) -> str:
    with admin.connect() as connection:
        query: str = connection.execute(
            text("select query from pg_stat_activity where pid = :pid"), {"pid": pid}
        ).scalar_one()
    return query


def test_a_connection_the_server_closed_is_replaced_at_checkout(
    postgres_server: str, admin: Engine
) -> None:
    engine = create_engine(postgres_server, pool_size=1)
    try:
        pid = pooled_backend(engine)
        terminate(admin, pid)
        with engine.connect() as connection:  # no error: a new connection
            assert connection.execute(text("select pg_backend_pid()")).scalar_one() != pid
    finally:
        engine.dispose()


def test_without_the_check_the_closed_connection_fails_its_first_statement(
    postgres_server: str, admin: Engine
) -> None:
    """The state the check is for: what the test above would see without it."""
    engine = create_engine(postgres_server, pool_size=1, pool_pre_ping=False)
    try:
        pid = pooled_backend(engine)
        terminate(admin, pid)
        with pytest.raises(OperationalError), engine.connect() as connection:
            connection.execute(text("select 1"))
    finally:
        engine.dispose()


def test_a_live_connection_is_handed_out_without_a_statement(
    postgres_server: str, admin: Engine
) -> None:
    engine = create_engine(postgres_server, pool_size=1)
    try:
        pid = pooled_backend(engine)
        before = last_query(admin, pid)
        with engine.connect() as connection:
            # The same server process, its last statement still the one before the checkout:
            # pool_pre_ping would have sent one (`;`) here.
            assert last_query(admin, pid) == before
            assert connection.execute(text("select pg_backend_pid()")).scalar_one() == pid
    finally:
        engine.dispose()


def test_the_async_engine_replaces_a_closed_connection_too(
    postgres_server: str, admin: Engine
) -> None:
    async def scenario() -> tuple[int, int]:
        engine = create_async_engine(postgres_server, pool_size=1)
        try:
            async with engine.connect() as connection:
                before = (await connection.execute(text("select pg_backend_pid()"))).scalar_one()
            await asyncio.to_thread(terminate, admin, before)
            async with engine.connect() as connection:
                after = (await connection.execute(text("select pg_backend_pid()"))).scalar_one()
            return before, after
        finally:
            await engine.dispose()

    before, after = asyncio.run(scenario())
    assert after != before


def test_other_drivers_and_explicit_options_keep_pool_pre_ping() -> None:
    from sqlalchemy.engine import make_url

    from adapters.sqlalchemy.engine import check_pool

    for url, options, quick, pre_ping in [
        ("postgresql+psycopg://h/db", {}, True, None),
        ("postgresql+psycopg2://h/db", {}, False, True),
        ("postgresql+psycopg://h/db", {"pool_pre_ping": True}, False, True),
        ("postgresql+psycopg://h/db", {"pool_pre_ping": False}, False, False),
        ("sqlite:///x.db", {}, False, None),
    ]:
        given: dict[str, object] = dict(options)
        assert check_pool(make_url(url), given) is quick, url
        assert given.get("pool_pre_ping") == pre_ping, (url, options)
