"""`fsm diagram --run ID --db-url URL` draws a stored run's path, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import Engine

from adapters.sqlalchemy import SqlUnitOfWork
from fsm.cli import main
from fsm.diagram.model import TIMES
from fsm.examples import ping
from fsm.persistence import PersistentMachine
from fsm.ports import HistoryRecord, RunRecord
from tests.clock import T0


class TestStoredRunDiagram:
    """The path of a persisted run, loaded by id, is highlighted on the picture."""

    def test_stored_path_is_highlighted(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Each stored row is drawn with how often it fired, and the run id titles it."""
        run = PersistentMachine(ping, SqlUnitOfWork(engine)).start({"ok": True})
        for event in ("start", "pause", "start"):
            run.send(event)
        code = main(
            ["diagram", "fsm.examples:ping", "--run", run.id, "--db-url", db_url, "--format", "dot"]
        )
        out = capsys.readouterr().out
        assert code == 0
        assert f"run {run.id}" in out
        assert f"start {TIMES}2" in out and f"pause {TIMES}1" in out and "(current)" in out

    def test_run_stored_under_enum_names(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run an older version stored under the Enum names is drawn like any other."""
        with SqlUnitOfWork(engine) as uow:
            uow.runs.create(RunRecord("old", "user_status_update", "PUBLISHED", {}, 1, True))
            path = [
                ("RECEIVED", "UserStatusUpdated", "STATUS_UPDATED"),
                ("STATUS_UPDATED", "Published", "PUBLISHED"),
            ]
            for seq, (source, trigger, target) in enumerate(path, 1):
                uow.runs.append(HistoryRecord("old", seq, source, trigger, target, None, T0))
        argv = ["diagram", "userstatus.flow:machine", "--run", "old", "--db-url", db_url]
        assert main([*argv, "--format", "dot"]) == 0
        out = capsys.readouterr().out
        assert "run old" in out and f"Published {TIMES}1" in out and "(current)" in out

    def test_unknown_run(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """An id no run has is one line and exit 2."""
        code = main(["diagram", "fsm.examples:ping", "--run", "nope", "--db-url", db_url])
        assert code == 2 and capsys.readouterr().err == "fsm: error: no stored run has id 'nope'\n"

    def test_run_of_another_machine(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A run stored for another machine is refused, naming that machine."""
        run = PersistentMachine(ping, SqlUnitOfWork(engine)).start()
        code = main(["diagram", "fsm.examples:update", "--run", run.id, "--db-url", db_url])
        assert code == 2 and "belongs to machine 'ping'" in capsys.readouterr().err


class TestStoredRunArguments:
    """--run and --db-url only make sense together and without --send."""

    @pytest.mark.parametrize(
        ("argv", "message"),
        [
            (["--db-url", "sqlite://"], "--db-url goes with --run ID"),
            (
                ["--run", "x", "--send", "start"],
                "--run draws a stored run: drop --send and --context",
            ),
            (
                ["--run", "x", "--context", "{}"],
                "--run draws a stored run: drop --send and --context",
            ),
        ],
    )
    def test_bad_combinations(
        self, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A misuse is one line naming what goes with what."""
        assert main(["diagram", "fsm.examples:ping", *argv]) == 2
        assert capsys.readouterr().err == f"fsm: error: {message}\n"
