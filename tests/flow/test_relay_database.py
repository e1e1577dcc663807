"""The relay works only on a database `fsm db init` made, and never guesses which one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import inspect

from adapters.kafka.config import KafkaConfig
from adapters.sqlalchemy import TABLES, SchemaMissing, create_engine, init_db
from fsm.cli import main
from tests.flow.cli_support import one_line_error
from userstatus.app import FlowApp
from userstatus.demo import init_schema
from userstatus.sql import FLOW_TABLES

KAFKA = KafkaConfig("127.0.0.1:1")
RELAY = ["relay", "--bootstrap-servers", "127.0.0.1:1", "--until-idle"]


def table_names(db_url: str) -> set[str]:
    """The tables in the database (without creating a missing SQLite file)."""
    database = db_url.removeprefix("sqlite:///")
    if db_url.startswith("sqlite:///") and not Path(database).exists():
        return set()
    engine = create_engine(db_url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


class TestConnectNeedsTheTables:
    """FlowApp.connect opens a database; it does not create one."""

    def test_empty_database_is_refused_and_left_empty(self, db_url: str) -> None:
        """An empty database is named with the command that fixes it; no table appears."""
        with pytest.raises(SchemaMissing) as caught:
            FlowApp.connect(db_url, KAFKA)
        message = str(caught.value)
        assert (
            "has no runs, run_history, outbox or users table: "
            "run fsm db init --with userstatus --db-url" in message
        )
        assert "\n" not in message
        assert table_names(db_url) == set()

    def test_one_missing_table_is_named(self, db_url: str) -> None:
        """A database without the outbox says exactly that."""
        engine = create_engine(db_url)
        init_db(engine, extra=FLOW_TABLES)
        TABLES.outbox.drop(engine)
        engine.dispose()
        with pytest.raises(
            SchemaMissing, match=r"has no outbox table: run fsm db init --with userstatus --db-url"
        ):
            FlowApp.connect(db_url, KAFKA)

    def test_initialised_database_connects(self, db_url: str) -> None:
        """After init (as `fsm db init --with userstatus` does it), connect works."""
        engine = create_engine(db_url)
        init_db(engine, extra=FLOW_TABLES)
        engine.dispose()
        FlowApp.connect(db_url, KAFKA).close()


class TestRelayCommand:
    """`fsm relay` on a database without tables, or without a database at all."""

    def test_new_sqlite_file_is_not_created(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """A typo'd SQLite path fails in one line and leaves no new file behind."""
        target = tmp_path / "empty.db"
        url = f"sqlite:///{target}"
        line = one_line_error(capsys, [*RELAY, "--db-url", url])
        assert line == (
            f"fsm: error: {url} has no runs, run_history or outbox table: "
            f"run fsm db init --db-url {url}"
        )
        assert not target.exists()

    def test_empty_database(self, capsys: pytest.CaptureFixture[str], db_url: str) -> None:
        """On SQLite and PostgreSQL alike: exit 2, and the database stays empty."""
        line = one_line_error(capsys, [*RELAY, "--db-url", db_url])
        assert "outbox table: run fsm db init --db-url " in line
        assert table_names(db_url) == set()

    def test_no_url_and_no_environment(
        self,
        capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path,
    ) -> None:
        """Without --db-url or $FSM_DB_URL the relay asks for one instead of using SQLite."""
        monkeypatch.delenv("FSM_DB_URL", raising=False)
        monkeypatch.chdir(tmp_path)
        line = one_line_error(capsys, RELAY)
        assert (
            line == "fsm: error: give --db-url (or set $FSM_DB_URL): the database fsm db init made"
        )
        assert os.listdir(tmp_path) == []

    def test_url_from_the_environment(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """$FSM_DB_URL names the database when --db-url is not given."""
        url = f"sqlite:///{tmp_path / 'fsm.sqlite3'}"
        assert main(["db", "init", "--db-url", url]) == 0
        monkeypatch.setenv("FSM_DB_URL", url)
        assert main(RELAY) == 0


class TestDemoMakesItsOwnTables:
    """The demo owns its database: it creates the tables itself, explicitly."""

    def test_init_schema_on_an_empty_database(self, db_url: str) -> None:
        """On an empty database (a new SQLite file, an empty PostgreSQL schema) it creates all."""
        assert init_schema(db_url) == ["runs", "run_history", "outbox", "users"]
        assert init_schema(db_url) == []  # the second time, nothing to do
        FlowApp.connect(db_url, KAFKA).close()
