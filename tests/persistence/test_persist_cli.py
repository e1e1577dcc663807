"""`fsm db init`: creates the tables, is idempotent, and says briefly what is wrong."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, Integer, MetaData, Table, Text, create_engine, inspect, text

from adapters.sqlalchemy import SchemaMissing
from fsm.cli import main


class TestDbInit:
    """Creating the tables from the command line."""

    def test_creates_then_does_nothing(
        self, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The first run creates the four tables; the second changes nothing."""
        assert main(["db", "init", "--db-url", db_url]) == 0
        assert "created tables runs, run_history, outbox\n" in capsys.readouterr().out
        assert main(["db", "init", "--db-url", db_url]) == 0
        assert "all tables exist already" in capsys.readouterr().out
        engine = create_engine(db_url)
        try:
            names = set(inspect(engine).get_table_names())
        finally:
            engine.dispose()
        assert names == {"runs", "run_history", "outbox"}  # no users: those are the flow's

    def test_with_a_flows_tables(self, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """--with userstatus adds the reference flow's users table; an unknown name is one
        line naming the known ones, and nothing is created."""
        assert main(["db", "init", "--with", "nope", "--db-url", db_url]) == 2
        assert capsys.readouterr().err.strip() == (
            "fsm: error: --with 'nope': no such set of tables; known: userstatus"
        )
        assert main(["db", "init", "--with", "userstatus", "--db-url", db_url]) == 0
        assert "created tables runs, run_history, outbox, users" in capsys.readouterr().out

    def test_adds_the_columns_a_newer_version_added(
        self, db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A database made by an older version (runs without the claim columns, outbox
        without published_by) is refused in one line naming them; `fsm db init` adds them
        and keeps the rows."""
        from adapters.sqlalchemy import SchemaMissing, SqlUnitOfWork, require_tables
        from adapters.sqlalchemy import create_engine as adapter_engine
        from fsm import PersistentMachine
        from tests.persistence.external_support import Gateway, Stage, machine

        assert main(["db", "init", "--db-url", db_url]) == 0
        engine = adapter_engine(db_url)
        try:
            with engine.begin() as connection:
                connection.execute(text("drop index ix_runs_machine_due_at"))
                for table, column in (
                    ("runs", "claimed_by"),
                    ("runs", "claimed_until"),
                    ("runs", "attempt"),
                    ("runs", "due_at"),
                    ("outbox", "published_by"),
                ):
                    connection.execute(text(f"alter table {table} drop column {column}"))
                connection.execute(
                    text(
                        "insert into runs (id, machine, state, context, version, finished, "
                        "created_at, updated_at) values ('old', 'capture', 'capturing', "
                        "'{}', 2, false, '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    )
                )
            with pytest.raises(SchemaMissing) as missing:
                require_tables(engine)
            message = str(missing.value)
            assert (
                "has no runs.claimed_by, runs.claimed_until, runs.attempt, runs.due_at or "
                in message
            )
            assert "outbox.published_by column: run fsm db init --db-url" in message
            capsys.readouterr()
            assert main(["db", "init", "--db-url", db_url]) == 0
            assert (
                "added columns runs.claimed_by, runs.claimed_until, runs.attempt, runs.due_at, "
                "outbox.published_by" in capsys.readouterr().out
            )
            require_tables(engine)
            assert "ix_runs_machine_due_at" in {
                i["name"] for i in inspect(engine).get_indexes("runs")
            }
            gateway = Gateway(tmp_path / "calls.log", worker="w")
            runs = PersistentMachine(machine, SqlUnitOfWork(engine), steps=gateway)
            assert runs.resume("old").state is Stage.CAPTURED
        finally:
            engine.dispose()

    def test_url_from_the_environment(
        self, db_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --db-url, FSM_DB_URL names the database."""
        monkeypatch.setenv("FSM_DB_URL", db_url)
        assert main(["db", "init"]) == 0
        assert "created tables" in capsys.readouterr().out

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("not a url", "is not a SQLAlchemy URL"),
            ("nosuchdb://x/y", "is not a usable SQLAlchemy URL"),
            ("postgresql+psycopg://postgres@127.0.0.1:1/test", "cannot initialise"),
            ("sqlite:////nonexistent-dir/sub/fsm.sqlite3", "cannot initialise"),
        ],
    )
    def test_bad_urls(self, url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad URL or an unreachable database: one line on stderr, exit status 2."""
        assert main(["db", "init", "--db-url", url]) == 2
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1 and "Traceback" not in err

    def test_password_is_not_printed(self, capsys: pytest.CaptureFixture[str]) -> None:
        """The URL shown in an error hides its password."""
        assert main(["db", "init", "--db-url", "postgresql+psycopg://u:secret@127.0.0.1:1/x"]) == 2
        assert "secret" not in capsys.readouterr().err

    def test_installed_command(self, db_url: str) -> None:
        """The `fsm` program finds `db init` through the fsm.commands entry point."""
        done = subprocess.run(
            [sys.executable, "-m", "fsm", "db", "init", "--db-url", db_url],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "created tables" in done.stdout


class TestLayers:
    """The engine stays free of SQLAlchemy."""

    def test_fsm_imports_without_sqlalchemy(self) -> None:
        """fsm, its codec and its persistence import and run with sqlalchemy made unimportable."""
        code = (
            "import sys; sys.modules['sqlalchemy'] = None; sys.modules['psycopg'] = None\n"
            "import fsm, fsm.codec, fsm.persistence, fsm.ports\n"
            "from fsm.examples import ping\n"
            "fsm.Codec.for_machine(ping)\n"
            "assert not any(m.startswith(('sqlalchemy', 'adapters')) for m in sys.modules"
            " if sys.modules[m] is not None)\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def test_cli_without_sqlalchemy(self) -> None:
        """Without SQLAlchemy, `fsm check` still works and `fsm db init` says what to install."""
        code = (
            "import sys; sys.modules['sqlalchemy'] = None\n"
            "from fsm.cli import main\n"
            "assert main(['check', 'fsm.examples:ping']) == 0\n"
            "sys.exit(main(['db', 'init']))\n"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert "pip install 'fsm-orchestrator[sqlalchemy]'" in done.stderr
        assert "Traceback" not in done.stderr


class TestPostgresFixture:
    """Without PostgreSQL the PostgreSQL tests skip, unless FSM_REQUIRE_POSTGRES=1 fails them."""

    def run_one(self, require: bool) -> subprocess.CompletedProcess[str]:
        """Run one PostgreSQL test against a port where nothing listens."""
        env = {
            **os.environ,
            "FSM_TEST_POSTGRES_URL": "postgresql+psycopg://postgres@127.0.0.1:1/test",
            "FSM_REQUIRE_POSTGRES": "1" if require else "",
        }
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"{Path(__file__).with_name('test_persist_store.py')}::TestRunStore::"
                "test_missing_run[postgresql]",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    def test_skips_with_a_reason(self) -> None:
        """Unreachable and not required: skipped, saying why."""
        done = self.run_one(require=False)
        assert done.returncode == 0, done.stdout
        assert "1 skipped" in done.stdout and "unreachable" in done.stdout

    def test_fails_when_required(self) -> None:
        """Unreachable and required (as in .ci/run): the test errors."""
        done = self.run_one(require=True)
        assert done.returncode != 0
        assert "FSM_REQUIRE_POSTGRES=1" in done.stdout


def _drift(engine: Engine, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


@pytest.fixture
def bare(db_url: str) -> Iterator[Engine]:
    """An engine on an empty database."""
    from adapters.sqlalchemy import create_engine as adapter_engine

    made = adapter_engine(db_url)
    try:
        yield made
    finally:
        made.dispose()


class TestAlembic:
    """The engine's tables in a user's own Alembic env, next to their own tables."""

    def test_no_drift_after_db_init(self, db_url: str, bare: Engine) -> None:
        """Tables made by `fsm db init` match the MetaData: autogenerate finds nothing to do."""
        from adapters.sqlalchemy import metadata

        assert main(["db", "init", "--db-url", db_url]) == 0
        assert _drift(bare, metadata) == []

    def test_next_to_your_own_users_table(self, bare: Engine) -> None:
        """Your MetaData holds a `users` table of your own; `define_tables` adds the engine's
        (prefixed) to it, one MetaData for Alembic: no clash, no drift once created, and the
        engine runs on them."""
        from adapters.sqlalchemy import SqlUnitOfWork, define_tables, init_db, require_tables
        from fsm import PersistentMachine
        from fsm.examples import ping

        mine = MetaData()
        Table("users", mine, Column("id", Integer, primary_key=True), Column("email", Text))
        engine_tables = define_tables(mine, prefix="fsm_")
        assert sorted(mine.tables) == ["fsm_outbox", "fsm_run_history", "fsm_runs", "users"]
        added = sorted(change[1].name for change in _drift(bare, mine) if change[0] == "add_table")
        assert added == ["fsm_outbox", "fsm_run_history", "fsm_runs", "users"]
        mine.create_all(bare)
        assert _drift(bare, mine) == []
        with pytest.raises(SchemaMissing):
            require_tables(bare)  # the unprefixed tables are not there, and not assumed
        require_tables(bare, engine_tables)
        assert init_db(bare, engine_tables) == []
        runs = PersistentMachine(ping, SqlUnitOfWork(bare, tables=engine_tables))
        run = runs.start(run_id="r1").send("start")
        assert runs.load(run.id).state == "busy"
        with bare.connect() as connection:
            states = connection.execute(text("select state from fsm_runs")).scalars().all()
            assert states == ["busy"]
            assert connection.execute(text("select count(*) from users")).scalar() == 0

    def test_one_alter_table_brings_an_older_outbox_up_to_date(
        self, db_url: str, bare: Engine
    ) -> None:
        """An outbox made before `published_by` needs only one ALTER TABLE."""
        from adapters.sqlalchemy import metadata

        assert main(["db", "init", "--db-url", db_url]) == 0
        with bare.begin() as connection:
            connection.execute(text("alter table outbox drop column published_by"))
        diff = _drift(bare, metadata)
        assert [(change[0], change[2], change[3].name) for change in diff] == [
            ("add_column", "outbox", "published_by")
        ]
        with bare.begin() as connection:
            connection.execute(text("alter table outbox add column published_by varchar(200)"))
        assert _drift(bare, metadata) == []

    def test_empty_database_gets_the_three_tables(self, bare: Engine) -> None:
        """On an empty database autogenerate would add exactly the engine's tables."""
        from adapters.sqlalchemy import metadata

        added = sorted(
            change[1].name for change in _drift(bare, metadata) if change[0] == "add_table"
        )
        assert added == ["outbox", "run_history", "runs"]


class TestTableSettings:
    """A prefix and a schema are settings; bad ones are one line naming what is allowed."""

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"prefix": "Fsm-"}, "table prefix 'Fsm-' is not usable"),
            ({"schema": ""}, "table schema '' is not usable"),
            ({"schema": "a;drop"}, "table schema 'a;drop' is not usable"),
        ],
    )
    def test_bad_settings(self, options: dict[str, str], message: str) -> None:
        from adapters.sqlalchemy import TableSettingsError, define_tables

        with pytest.raises(TableSettingsError, match=message):
            define_tables(None, **options)

    def test_a_schema_of_its_own_on_postgresql(self, postgres_server: str) -> None:
        """The engine's tables in a named schema: created, checked and used there, while the
        connection's own schema stays empty."""
        from adapters.sqlalchemy import SqlUnitOfWork, define_tables, init_db, require_tables
        from adapters.sqlalchemy import create_engine as adapter_engine
        from fsm import PersistentMachine
        from fsm.examples import ping
        from tests.schemas import fresh_schema

        with fresh_schema(postgres_server, "fsm_home") as url:
            engine = adapter_engine(url)
            other = f"fsm_engine_{uuid.uuid4().hex[:8]}"
            try:
                with engine.begin() as connection:
                    connection.execute(text(f"create schema {other}"))
                engine_tables = define_tables(schema=other)
                assert init_db(engine, engine_tables) == [
                    f"{other}.runs",
                    f"{other}.run_history",
                    f"{other}.outbox",
                ]
                require_tables(engine, engine_tables)
                with pytest.raises(SchemaMissing, match="has no runs, run_history or outbox"):
                    require_tables(engine)
                runs = PersistentMachine(ping, SqlUnitOfWork(engine, tables=engine_tables))
                runs.start(run_id="r1").send("start")
                with engine.connect() as connection:
                    count = connection.execute(text(f"select count(*) from {other}.runs"))
                    assert count.scalar() == 1
            finally:
                with engine.begin() as connection:
                    connection.execute(text(f"drop schema if exists {other} cascade"))
                engine.dispose()
