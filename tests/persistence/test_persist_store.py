"""The SQLAlchemy run store, users and unit of work, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import pytest
from sqlalchemy import Engine, Table, event, func, select, text

from adapters.kafka.config import KafkaConfig
from adapters.memory import FakePublisher
from adapters.sqlalchemy import TABLES
from fsm import FSMError
from fsm.ports import (
    ConcurrencyError,
    HistoryRecord,
    InvalidRecord,
    RunExists,
    RunNotFound,
    RunRecord,
)
from tests.clock import T0, Clock
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload
from userstatus.domain import UserStatus as S
from userstatus.ports import UserRecord
from userstatus.sql import FlowSqlUnitOfWork, users

WAITING = text(
    "select count(*) from pg_stat_activity where pid = :pid and wait_event_type = 'Lock'"
)


def count(engine: Engine, table: Table) -> int:
    """Rows committed in a table, read on a fresh connection."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def record(run_id: str = "r1", version: int = 1, **changes: object) -> RunRecord:
    """A run record with sensible defaults."""
    values: dict[str, object] = {"machine": "m", "state": "a", "context": {"n": 1}}
    values.update(changes)
    return RunRecord(id=run_id, version=version, **values)  # type: ignore[arg-type]


class TestRunStore:
    """Create, load, save with a version check, and history."""

    def test_create_and_load(self, engine: Engine) -> None:
        """A created run reads back with version 1 and the clock's timestamps."""
        uow = FlowSqlUnitOfWork(engine, clock=Clock())
        with uow:
            uow.runs.create(record(context={"n": 1, "nested": {"x": [1, 2]}}))
        with uow:
            loaded = uow.runs.load("r1")
        assert loaded.context == {"n": 1, "nested": {"x": [1, 2]}}
        assert (loaded.version, loaded.created_at, loaded.updated_at) == (1, T0, T0)

    def test_save_bumps_the_version(self, engine: Engine) -> None:
        """Saving at the stored version writes and returns the next one."""
        uow = FlowSqlUnitOfWork(engine, clock=Clock())
        with uow:
            uow.runs.create(record())
        with uow:
            assert uow.runs.save(record(state="b", finished=True)) == 2
        with uow:
            loaded = uow.runs.load("r1")
        assert (loaded.state, loaded.finished, loaded.version) == ("b", True, 2)

    def test_stale_save_is_a_concurrency_error(self, engine: Engine) -> None:
        """Two sessions read version 1; the second save fails, naming both versions."""
        first, second = FlowSqlUnitOfWork(engine), FlowSqlUnitOfWork(engine)
        with first:
            first.runs.create(record())
        with first:
            mine = first.runs.load("r1")
        with second:
            theirs = second.runs.load("r1")
        with first:
            first.runs.save(mine)
        with pytest.raises(ConcurrencyError) as caught, second:
            second.runs.save(theirs)
        error = caught.value
        assert (error.run_id, error.expected, error.found) == ("r1", 1, 2)
        assert "expected version 1, found version 2" in str(error)
        with first:
            assert first.runs.load("r1").version == 2

    def test_duplicate_id(self, engine: Engine) -> None:
        """Creating an id twice raises RunExists and keeps the first run."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record(context={"first": True}))
        with pytest.raises(RunExists, match="'r1' is stored already"), uow:
            uow.runs.create(record(context={"first": False}))
        with uow:
            assert uow.runs.load("r1").context == {"first": True}

    def test_missing_run(self, engine: Engine) -> None:
        """Loading an unknown id raises RunNotFound."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(RunNotFound, match="'nope'"), uow:
            uow.runs.load("nope")

    def test_history_in_order(self, engine: Engine) -> None:
        """History rows come back oldest first; a step stored twice is refused."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record())
            for seq in (2, 1):
                uow.runs.append(HistoryRecord("r1", seq, "a", f"t{seq}", "b", {"k": seq}, T0))
        with uow:
            history = uow.runs.history("r1")
        assert [(h.seq, h.trigger, h.outcome) for h in history] == [
            (1, "t1", {"k": 1}),
            (2, "t2", {"k": 2}),
        ]
        with pytest.raises(ConcurrencyError, match="run history r1"), uow:
            uow.runs.append(HistoryRecord("r1", 2, "a", "t2", "b", None, T0))
        assert count(engine, TABLES.history) == 2

    # Two open transactions in one thread: on SQLite the writer would wait for the reader.
    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_history_matches_the_loaded_run(self, engine: Engine) -> None:
        """A step committed between load and history does not show in that history."""
        reader, writer = FlowSqlUnitOfWork(engine), FlowSqlUnitOfWork(engine)
        with reader:
            reader.runs.create(record())
        with reader:
            loaded = reader.runs.load("r1")
            with writer:
                writer.runs.save(writer.runs.load("r1"))
                writer.runs.append(HistoryRecord("r1", 1, "a", "t", "b", None, T0))
            assert reader.runs.history("r1") == []  # as of the load: version 1, no steps
            assert loaded.version == 1
        with reader:
            assert len(reader.runs.history("r1")) == 1

    # PostgreSQL's JSONB cannot hold text that is not JSON: only SQLite can be corrupt so.
    @pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
    def test_corrupt_context_json_names_the_run(self, engine: Engine) -> None:
        """Text that is not JSON in the context column (SQLite keeps text) names the run."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record())
        with engine.begin() as connection:
            connection.execute(text("update runs set context = '{not json' where id = 'r1'"))
        with (
            pytest.raises(
                FSMError, match=r"run r1 of machine 'm': context or history: the stored JSON"
            ),
            uow,
        ):
            uow.runs.load("r1")

    def test_context_that_is_not_an_object(self, engine: Engine) -> None:
        """A context column holding a JSON list is reported, not used."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record())
        with engine.begin() as connection:
            connection.execute(text("update runs set context = '[1, 2]' where id = 'r1'"))
        with pytest.raises(FSMError, match=r"run r1 .*not a JSON object"), uow:
            uow.runs.load("r1")


class TestRunStoreRefusesBadInput:
    """Bad records raise InvalidRecord before anything is written."""

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            (record(run_id=""), "run id must not be empty"),
            (record(run_id="x" * 129), "at most 128"),
            (record(run_id=7), "run id must be a string"),  # type: ignore[arg-type]
            (record(state="\x00"), "NUL"),
            (record(run_id="r\ud800"), "run id holds the surrogate code point"),
            (record(context=[1]), "context must be a dict"),
            (record(context={"x": object()}), "context is not plain JSON"),
            (record(context={"x": float("nan")}), "context is not plain JSON"),
            (record(context={"x": ["a\x00b"]}), "context contains a NUL"),
            (record(version=2), "starts at version 1"),
            (record(created_at=datetime(2026, 1, 1)), "has no time zone"),
        ],
    )
    def test_create(self, engine: Engine, bad: RunRecord, message: str) -> None:
        """Each bad field is named; no run row appears."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(InvalidRecord, match=message), uow:
            uow.runs.create(bad)
        assert count(engine, TABLES.runs) == 0

    @pytest.mark.parametrize("text", ["\\u0000", "a\\\\u0000", "\\\\\\u0000x"])
    def test_a_backslash_before_u0000_is_not_a_nul(self, engine: Engine, text: str) -> None:
        """Text that holds a backslash then `u0000` (JSON: `\\\\u0000`) is no NUL: it is
        stored and read back as it was given."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record(context={"x": text, text: [text]}))
        with uow:
            assert uow.runs.load("r1").context == {"x": text, text: [text]}

    def test_append(self, engine: Engine) -> None:
        """A history entry with a bad field or a naive time is refused."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.runs.create(record())
        for entry, message in [
            (HistoryRecord("r1", 0, "a", "t", "b", None, T0), "between 1 and"),
            (HistoryRecord("r1", 1, "a", "t", "b", None, datetime(2026, 1, 1)), "no time zone"),
            (HistoryRecord("r1", 1, "a", "", "b", None, T0), "trigger must not be empty"),
            (HistoryRecord("r1", 1, "a", "t", "b", {1, 2}, T0), "outcome is not plain JSON"),
        ]:
            with pytest.raises(InvalidRecord, match=message), uow:
                uow.runs.append(entry)
        assert count(engine, TABLES.history) == 0


class TestUsers:
    """The user repository: get, create, update with a version check."""

    def test_create_get_update(self, engine: Engine) -> None:
        """A created user is read back; an update bumps the version and the time."""
        clock = Clock()
        uow = FlowSqlUnitOfWork(engine, clock=clock)
        with uow:
            created = uow.users.create(1, "active")
        clock.advance(5)
        with uow:
            updated = uow.users.update_status(1, "suspended", expected_version=1)
            assert uow.users.get(2) is None
        with uow:
            loaded = uow.users.get(1)
        assert created.version == 1 and created.created_at == T0
        assert loaded == updated
        assert (updated.status, updated.version) == ("suspended", 2)
        assert updated.updated_at == T0 + timedelta(seconds=5)

    def test_stale_update(self, engine: Engine) -> None:
        """Updating with an old version raises ConcurrencyError and changes nothing."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.users.create(1, "active")
            uow.users.update_status(1, "suspended", expected_version=1)
        with (
            pytest.raises(ConcurrencyError, match=r"user 1 .*expected version 1, found version 2"),
            uow,
        ):
            uow.users.update_status(1, "closed", expected_version=1)
        with pytest.raises(ConcurrencyError, match="no longer exists"), uow:
            uow.users.update_status(9, "closed", expected_version=1)
        with uow:
            assert uow.users.get(1) is not None and uow.users.get(1).status == "suspended"  # type: ignore[union-attr]

    def test_change_from_an_allowed_status(self, engine: Engine) -> None:
        """change_status answers the user as it was and stores the change; for a status not
        among those allowed, or no user, it answers None and writes nothing."""
        clock = Clock()
        uow = FlowSqlUnitOfWork(engine, clock=clock)
        with uow:
            created = uow.users.create(1, "active")
            uow.users.create(2, "closed")
        clock.advance(5)
        with uow:
            before = uow.users.change_status(1, "suspended", allowed_from=("pending", "active"))
            assert uow.users.change_status(2, "active", allowed_from=("suspended",)) is None
            assert uow.users.change_status(9, "closed", allowed_from=("active",)) is None
        with uow:
            stored = [uow.users.get(1), uow.users.get(2)]
        assert before == created
        later = T0 + timedelta(seconds=5)
        assert stored == [
            UserRecord(1, "suspended", 2, T0, later),
            UserRecord(2, "closed", 1, T0, T0),
        ]

    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_an_update_reads_no_user_before_changing_it(self, engine: Engine) -> None:
        """PostgreSQL: one update through the flow is 6 statements, its user changed without
        a read of the user first (a SELECT of users: the manager's old read, a statement and
        a round trip each update)."""
        with FlowSqlUnitOfWork(engine) as uow:
            uow.users.create(1, "active")
        statements: list[str] = []
        listener = lambda *args: statements.append(" ".join(args[2].split()[:3]))  # noqa: E731
        app = FlowApp(engine, KafkaConfig(bootstrap_servers="127.0.0.1:1"))
        event.listen(engine, "before_cursor_execute", listener)
        try:
            run = app.orchestrator(FakePublisher()).perform(UpdateUserStatusPayload(1, S.SUSPENDED))
        finally:
            event.remove(engine, "before_cursor_execute", listener)
            app.close()
        assert run.state == "published"
        assert [s for s in statements if "users" in s] == ["UPDATE users SET"], statements
        assert len(statements) == 6, statements

    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
    def test_a_change_does_not_write_over_a_concurrent_one(self, engine: Engine) -> None:
        """PostgreSQL, one statement: a change that waits for another's lock on the user,
        then finds it changed since its statement began, writes nothing and answers None
        (judged on the old status it would close a user, or answer a stale old status)."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.users.create(1, "active")
        backend: list[int] = []
        answered: list[UserRecord | BaseException | None] = []

        def change() -> None:
            try:
                with FlowSqlUnitOfWork(engine) as second:
                    pid = second.session.execute(text("select pg_backend_pid()")).scalar_one()
                    backend.append(pid)
                    answered.append(
                        second.users.change_status(1, "suspended", allowed_from=("active",))
                    )
            except BaseException as error:  # shown by the assertion below
                answered.append(error)

        first = FlowSqlUnitOfWork(engine)
        with first:
            first.users.update_status(1, "closed", expected_version=1)
            waiting = threading.Thread(target=change)
            waiting.start()
            with engine.connect() as watch:  # the change waits for the first's row lock
                for _ in range(500):
                    if backend and watch.execute(WAITING, {"pid": backend[0]}).scalar_one():
                        break
                    time.sleep(0.01)
                else:
                    pytest.fail("the second change never waited for the first's lock")
        waiting.join(timeout=10)
        assert not waiting.is_alive()
        with uow:
            stored = uow.users.get(1)
        assert answered == [None]
        assert stored is not None and (stored.status, stored.version) == ("closed", 2)

    @pytest.mark.parametrize(
        ("user_id", "status", "message"),
        [
            (0, "active", "between 1 and"),
            (-3, "active", "between 1 and"),
            (True, "active", "positive integer"),
            ("1", "active", "positive integer"),
            (2**63, "active", "between 1 and"),
            (1, "", "status must not be empty"),
            (1, 5, "status must be a string"),
            (1, "x" * 65, "at most 64"),
        ],
    )
    def test_bad_input(self, engine: Engine, user_id: object, status: object, message: str) -> None:
        """A bad id or status is refused before any write."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(InvalidRecord, match=message), uow:
            uow.users.create(user_id, status)  # type: ignore[arg-type]
        assert count(engine, users) == 0

    def test_duplicate_user(self, engine: Engine) -> None:
        """Creating a user twice is refused and keeps the first."""
        uow = FlowSqlUnitOfWork(engine)
        with uow:
            uow.users.create(1, "active")
        with pytest.raises(InvalidRecord, match="user 1 exists already"), uow:
            uow.users.create(1, "closed")
        with uow:
            assert uow.users.get(1).status == "active"  # type: ignore[union-attr]


class TestUnitOfWork:
    """Commit on success, roll back on error, one transaction at a time."""

    def test_rollback_on_error(self, engine: Engine) -> None:
        """An exception inside the block leaves nothing behind."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(RuntimeError), uow:
            uow.users.create(1, "active")
            uow.runs.create(record())
            raise RuntimeError("boom")
        assert count(engine, users) == count(engine, TABLES.runs) == 0

    def test_commit_inside_the_block(self, engine: Engine) -> None:
        """commit() keeps what was done so far even if the block fails later."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(RuntimeError), uow:
            uow.users.create(1, "active")
            uow.commit()
            uow.users.create(2, "active")
            raise RuntimeError("boom")
        assert count(engine, users) == 1

    def test_no_nesting_and_no_use_outside(self, engine: Engine) -> None:
        """Nested blocks and repositories outside a block are clear errors."""
        uow = FlowSqlUnitOfWork(engine)
        with pytest.raises(FSMError, match="no transaction is open"):
            uow.runs.load("r1")
        with pytest.raises(FSMError, match="do not nest"), uow, uow:
            pass
