"""Two real OS processes advance the same run: one wins, the other is told, nothing doubles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from adapters.sqlalchemy import TABLES
from fsm import CallbackError
from tests.persistence.persist_support import Faults, Step, persistent
from userstatus.sql import FlowSqlUnitOfWork

ROOT = Path(__file__).parents[2]


def race(db_url: str, run_id: str, how: str) -> list[str]:
    """Start two workers, let both load the run, release them together; their last lines."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.persistence.persist_worker", db_url, run_id, how],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline().strip()
        assert line == "loaded", worker.communicate(timeout=30)[1]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        results.append(out.strip())
    return sorted(results)


class TestTwoProcesses:
    """Both processes load the same version, then advance at once."""

    def test_send_the_same_event(self, engine: Engine, db_url: str) -> None:
        """Both send 'go': one run goes to DONE once; the other gets ConcurrencyError."""
        with FlowSqlUnitOfWork(engine) as uow:
            uow.users.create(7, "active")
        run_id = persistent(engine).start({"user_id": 7, "status": "closed"}).id
        won, lost = race(db_url, run_id, "send")[::-1]
        assert won == "won 4"
        assert lost.startswith(f"conflict {run_id} 1 ")
        self.assert_applied_once(engine, run_id)

    def test_resume_the_same_pending_action(self, engine: Engine, db_url: str) -> None:
        """Both resume a run whose update action is pending: the update happens once."""
        with FlowSqlUnitOfWork(engine) as uow:
            uow.users.create(7, "active")
        run = persistent(engine, faults=Faults({"status updated"})).start(
            {"user_id": 7, "status": "closed"}
        )
        with pytest.raises(CallbackError):
            run.send("go")
        won, lost = race(db_url, run.id, "advance")[::-1]
        assert won == "won 4"
        assert lost.startswith(f"conflict {run.id} 2 ")
        self.assert_applied_once(engine, run.id)

    def assert_applied_once(self, engine: Engine, run_id: str) -> None:
        """Three history rows, one event, one user update, and the run DONE."""
        with engine.connect() as connection:
            assert (
                connection.execute(select(func.count()).select_from(TABLES.history)).scalar() == 3
            )
            assert connection.execute(select(func.count()).select_from(TABLES.outbox)).scalar() == 1
        with FlowSqlUnitOfWork(engine) as uow:
            user = uow.users.get(7)
        assert user is not None and (user.status, user.version) == ("closed", 2)
        assert persistent(engine).load(run_id).state is Step.DONE
