"""`fsm worker`'s mistakes, each one line and no traceback; a job run with --until-idle."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import PersistentMachine
from fsm.cli import main
from fsm.defaults import utc_now
from fsm.examples import hold
from tests.clock import Clock


def not_runs(uow: object, *, worker: str, lease: timedelta) -> str:
    """A factory that returns the wrong thing."""
    return "runs"


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'fsm.sqlite3'}"
    engine = create_engine(url)
    init_db(engine)
    engine.dispose()
    return url


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fsm.examples:hold"], "give --db-url (or set $FSM_DB_URL)"),
        (["nope:x", "--db-url", "{url}"], "cannot import module 'nope'"),
        (["fsm.examples:ok", "--db-url", "{url}"], "fsm.examples:ok is a function; give an"),
        (["fsm:__doc__", "--db-url", "{url}"], "fsm:__doc__ is a str; give an fsm.Machine"),
        (["tests.worker.test_worker_cli:not_runs", "--db-url", "{url}"], "; it gave a str"),
        (["fsm.examples:hold", "--lease-seconds", "0"], "'0' is out of range"),
    ],
)
def test_mistakes_are_one_line(
    url: str,
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each names what is wrong; exit status 2."""
    monkeypatch.delenv("FSM_DB_URL", raising=False)
    assert main(["worker", *(a.format(url=url) for a in args)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_database_without_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The worker creates nothing: it says to run fsm db init."""
    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    assert main(["worker", "--db-url", empty, "fsm.examples:hold"]) == 2
    assert "run fsm db init --db-url" in capsys.readouterr().err


def test_a_job_fires_what_is_due_and_exits(url: str, caplog: pytest.LogCaptureFixture) -> None:
    """--until-idle: the overdue hold is voided, the fresh one left; exit 0, a summary."""
    caplog.set_level("INFO")
    engine = create_engine(url)
    clock = Clock(utc_now() - timedelta(days=8))  # what it starts is overdue now
    old = PersistentMachine(hold, SqlUnitOfWork(engine, clock=clock), clock=clock).start()
    fresh = PersistentMachine(hold, SqlUnitOfWork(engine)).start()
    assert main(["worker", "--db-url", url, "fsm.examples:hold", "--until-idle"]) == 0
    runs = PersistentMachine(hold, SqlUnitOfWork(engine))
    assert (runs.load(old.id).state, runs.load(fresh.id).state) == ("voided", "authorized")
    assert "stopped; fired 1 timeouts, resumed 0 runs, skipped 0, failed 0" in caplog.text
    engine.dispose()
