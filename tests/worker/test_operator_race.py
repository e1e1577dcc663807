"""`fsm runs send` racing another writer on the same run, in real processes: one step wins,
the other is refused with nothing of it written (the run's optimistic version)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import PersistentMachine
from tests.worker.machines import EFFECTS, GUARD_MARK, SLOW_GUARD, FileSteps, effects, reminder

ROOT = Path(__file__).resolve().parents[2]


def test_a_run_moved_during_the_operators_step(db_url: str, tmp_path: Path) -> None:
    """The operator's `expire` holds in its guard (inside its step, before any write) while
    the test pays the run: the payment commits, and the command exits 2 in one line, its
    step unwritten and its action never called."""
    engine = create_engine(db_url)
    init_db(engine)
    log, mark = tmp_path / "effects.log", tmp_path / "in-guard"
    runs = PersistentMachine(reminder, SqlUnitOfWork(engine), steps=FileSteps(log))
    run_id = runs.start({"name": "r1"}).id
    argv = ["runs", "send", run_id, "expire", "--machine", "tests.worker.machines:reminder_runs"]
    env = os.environ | {EFFECTS: str(log), SLOW_GUARD: "2", GUARD_MARK: str(mark)}
    process = subprocess.Popen(
        [sys.executable, "-m", "fsm", *argv, "--db-url", db_url],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not mark.exists():
            assert time.monotonic() < deadline and process.poll() is None, process.stderr
            time.sleep(0.05)
        runs.load(run_id).send("pay")
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    with SqlUnitOfWork(engine) as uow:
        steps = [(h.source, h.trigger, h.target) for h in uow.runs.history(run_id)]
    engine.dispose()
    assert process.returncode == 2, out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"run {run_id} was changed by someone else" in err
    assert steps == [("waiting", "pay", "paid")]
    assert effects(log) == []
