"""`fsm worker` as real processes on PostgreSQL: three at once fire every due timeout and
resume every run left between steps exactly once; one killed with kill -9 holding a claim
loses nothing; SIGTERM stops one cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import CallbackError, PersistentMachine
from fsm.defaults import utc_now
from tests.schemas import fresh_schema
from tests.worker.machines import (
    EFFECTS,
    SLOW_GUARD,
    SLOW_NOTE,
    BrokenSteps,
    FileSteps,
    Noted,
    ReminderSteps,
    effects,
    reminder,
)

ROOT = Path(__file__).parents[2]
FACTORY = "tests.worker.machines:reminder_runs"


@pytest.fixture
def database(postgres_server: str) -> Iterator[tuple[str, Engine]]:
    with fresh_schema(postgres_server, "fsm_worker") as url:
        engine = create_engine(url)
        init_db(engine)
        try:
            yield url, engine
        finally:
            engine.dispose()


class Scene:
    """Reminder runs started an hour ago (so due, and past any grace) on one database."""

    def __init__(self, url: str, engine: Engine, tmp_path: Path) -> None:
        self.url = url
        self.engine = engine
        self.log = tmp_path / "effects.log"
        self.past = utc_now() - timedelta(hours=1)

    def runs(self, steps: ReminderSteps) -> PersistentMachine[str]:
        return PersistentMachine(reminder, SqlUnitOfWork(self.engine), steps=steps, clock=self.now)

    def now(self) -> datetime:
        return self.past

    def start(self, names: list[str]) -> None:
        runs = self.runs(FileSteps(self.log))
        for name in names:
            runs.start({"name": name}, run_id=name)

    def leave_between_steps(self, names: list[str]) -> None:
        """Runs whose process died after committing `expired`: its note never ran."""
        self.start(names)
        broken = self.runs(BrokenSteps())
        for name in names:
            with pytest.raises(CallbackError):
                broken.send(name, "expire")

    def worker(
        self, *options: str, slow_guard: float = 0.0, slow_note: float = 0.0
    ) -> subprocess.Popen[str]:
        env = {
            **os.environ,
            EFFECTS: str(self.log),
            SLOW_GUARD: str(slow_guard),
            SLOW_NOTE: str(slow_note),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "fsm", "worker", "--db-url", self.url, FACTORY, *options],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def states(self) -> Counter[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(text("select state from runs"))
            return Counter(state for (state,) in rows)

    def claimed(self) -> list[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(text("select id from runs where claimed_by is not null"))
            return [run_id for (run_id,) in rows]

    def history_of(self, name: str) -> list[object]:
        return [t.trigger for t in self.runs(FileSteps(self.log)).load(name).history]


def finished(process: subprocess.Popen[str], timeout: float = 60) -> str:
    """The process's stderr once it exited 0."""
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err
    return err


@pytest.fixture
def scene(database: tuple[str, Engine], tmp_path: Path) -> Scene:
    return Scene(*database, tmp_path)


def test_three_workers_fire_each_timer_and_resume_each_run_once(scene: Scene) -> None:
    """40 due timers and 20 runs left between steps, three workers at once: every run ends
    noted, its expiry noted exactly once (the note is outside the database and slow: only
    the claim keeps two workers from both making it), and each worker's summary adds up."""
    due = [f"due-{i}" for i in range(40)]
    left = [f"left-{i}" for i in range(20)]
    scene.start(due)
    scene.leave_between_steps(left)
    assert scene.states() == Counter(waiting=40, expired=20)

    options = ("--until-idle", "--grace-seconds", "30", "--batch-size", "10")
    workers = [scene.worker(*options, slow_note=0.1) for _ in range(3)]
    logs = [finished(worker) for worker in workers]

    assert scene.states() == Counter(noted=60)
    assert Counter(effects(scene.log)) == Counter({name: 1 for name in due + left})
    assert scene.history_of("due-0") == ["expire", Noted]
    assert scene.history_of("left-0") == ["expire", Noted]
    fired = sum(_count(log, "fired", "timeouts") for log in logs)
    resumed = sum(_count(log, "resumed", "runs") for log in logs)
    assert (fired, resumed) == (40, 20), logs
    assert sum(_count(log, "fired", "timeouts") > 0 for log in logs) >= 2, "one worker did it all"


def test_a_worker_killed_holding_a_claim_loses_nothing(scene: Scene) -> None:
    """kill -9 while it holds a claim (mid-step, its guard asleep): the others fire every
    other run and leave that one alone while the lease lasts; after it, one fires it."""
    lease = 8.0
    scene.start([f"due-{i}" for i in range(5)])
    doomed = scene.worker("--lease-seconds", str(lease), slow_guard=60.0)
    deadline = time.monotonic() + 30
    while not scene.claimed():
        assert time.monotonic() < deadline, "the doomed worker never claimed a run"
        time.sleep(0.05)
    claimed_at = time.monotonic()
    [held] = scene.claimed()
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.communicate(timeout=30)

    finished(scene.worker("--until-idle"))
    assert time.monotonic() - claimed_at < lease, "too slow to check the lease held"
    assert scene.states() == Counter(noted=4, waiting=1)
    assert scene.runs(FileSteps(scene.log)).load(held).state == "waiting"

    time.sleep(max(0.0, claimed_at + lease + 0.5 - time.monotonic()))
    finished(scene.worker("--until-idle"))
    assert scene.states() == Counter(noted=5)
    assert Counter(effects(scene.log)) == Counter({f"due-{i}": 1 for i in range(5)})
    assert scene.claimed() == []


def test_sigterm_stops_a_worker_cleanly(scene: Scene) -> None:
    """A long-running worker exits 0 on SIGTERM, logging its summary."""
    scene.start(["due-0"])
    worker = scene.worker("--idle-interval", "0.1")
    deadline = time.monotonic() + 30
    while effects(scene.log) != ["due-0"]:
        assert time.monotonic() < deadline, "the worker never fired the timer"
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    err = finished(worker)
    assert "stopping after the run in hand" in err
    assert "stopped; fired 1 timeouts, resumed 0 runs, skipped 0, failed 0" in err


def _count(log: str, verb: str, noun: str) -> int:
    """The number in the worker's final summary line, e.g. `fired 12 timeouts`."""
    line = next(line for line in log.splitlines() if ": stopped; " in line)
    words = line.split(f"{verb} ", 1)[1].split()
    assert words[1].rstrip(",") == noun, line
    return int(words[0])
