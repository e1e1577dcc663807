"""External steps with real processes, on SQLite and PostgreSQL: one call between racing
workers, a worker killed mid-call finished by another after the lease with the same key,
and no transaction of the run open while the call runs (a local action as the control)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from adapters.sqlalchemy import SqlUnitOfWork
from fsm import CallbackError, Machine, PersistentMachine
from tests.persistence.external_support import (
    Captured,
    Gateway,
    Stage,
    another_writer_commits,
    calls,
    local_machine,
    machine,
    session_states,
)

ROOT = Path(__file__).parents[2]


class Worker:
    """A worker process holding a capture run, resuming it when `go()` is called."""

    def __init__(
        self, url: str, run_id: str, log: Path, *, seconds: float, lease: float, local: bool
    ) -> None:
        args = [url, run_id, str(log), str(seconds), str(lease), *(["local"] if local else [])]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.persistence.external_worker", *args],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line == "ready", self.process.communicate(timeout=30)[1]

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> str:
        out, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return out.strip()

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.communicate(timeout=30)
        assert self.process.returncode == -signal.SIGKILL


class Scene:
    """A database, a gateway log, and a capture run stuck before its external step."""

    def __init__(self, url: str, engine: Engine, log: Path, local: bool = False) -> None:
        self.url = url
        self.engine = engine
        self.log = log
        self.local = local
        self.machine: Machine[Stage] = local_machine if local else machine
        uow = SqlUnitOfWork(engine)
        gateway = Gateway(log, worker="first", uow=uow)
        gateway.down = True  # the first attempt failed: the run waits to capture, unclaimed
        self.first = PersistentMachine(self.machine, uow, steps=gateway, worker="first")
        with pytest.raises(CallbackError):
            self.first.start({"payment": "p-1"}, run_id="pay-1")
        assert self.runs().load("pay-1").state is Stage.CAPTURING
        assert calls(log) == []

    def runs(self) -> PersistentMachine[Stage]:
        return PersistentMachine(self.machine, SqlUnitOfWork(self.engine))

    def worker(self, *, seconds: float, lease: float = 30.0, url: str | None = None) -> Worker:
        return Worker(
            url or self.url, "pay-1", self.log, seconds=seconds, lease=lease, local=self.local
        )

    def wait_for_calls(self, count: int) -> list[tuple[str, str]]:
        deadline = time.monotonic() + 30
        while len(calls(self.log)) < count:
            assert time.monotonic() < deadline, "the gateway was never called"
            time.sleep(0.02)
        return calls(self.log)


@pytest.fixture
def scene(engine: Engine, db_url: str, tmp_path: Path) -> Scene:
    return Scene(db_url, engine, tmp_path / "calls.log")


class TestOneCall:
    def test_two_workers_resuming_together_make_one_call(self, scene: Scene) -> None:
        """Both resume the run at once: one claims it and calls, the other is told the run
        is claimed and calls nothing."""
        workers = [scene.worker(seconds=1.0) for _ in range(2)]
        for worker in workers:
            worker.go()
        results = sorted(worker.result() for worker in workers)
        assert results[0].startswith("claimed worker-"), results
        assert results[1] == "done captured", results
        assert len(calls(scene.log)) == 1
        run = scene.runs().load("pay-1")
        assert run.state is Stage.CAPTURED
        assert [(t.source, t.target) for t in run.history] == [
            (Stage.RECEIVED, Stage.CAPTURING),
            (Stage.CAPTURING, Stage.CAPTURED),
        ]

    def test_a_worker_killed_mid_call_is_finished_after_the_lease_with_the_same_key(
        self, scene: Scene
    ) -> None:
        """kill -9 during the call: until the lease runs out nobody calls again; then
        another worker does, with the same idempotency key, and the run finishes."""
        lease = 3.0
        doomed = scene.worker(seconds=60.0, lease=lease)
        doomed.go()
        [(key, _)] = scene.wait_for_calls(1)
        claimed_at = time.monotonic()
        doomed.kill()

        early = scene.worker(seconds=0.0)
        early.go()
        assert early.result().startswith("claimed worker-")
        assert len(calls(scene.log)) == 1
        assert time.monotonic() - claimed_at < lease, "the check ran too late to mean anything"

        time.sleep(max(0.0, claimed_at + lease + 0.5 - time.monotonic()))
        late = scene.worker(seconds=0.0)
        late.go()
        assert late.result() == "done captured"
        made = calls(scene.log)
        assert [k for k, _ in made] == [key, key] and key == "pay-1:2"
        assert made[0][1] != made[1][1]
        run = scene.runs().load("pay-1")
        assert run.outcome == Captured(key, made[1][1])


@pytest.fixture
def named(db_url: str) -> Iterator[tuple[str, str]]:
    """The URL with an application name its PostgreSQL sessions show (SQLite: as is)."""
    name = f"fsm-external-{uuid.uuid4().hex[:8]}"
    if db_url.startswith("sqlite"):
        yield db_url, name
        return
    yield (
        make_url(db_url)
        .update_query_dict({"application_name": name})
        .render_as_string(hide_password=False),
        name,
    )


class TestNoTransactionDuringTheCall:
    """While the gateway call runs, the run holds no transaction: PostgreSQL shows no
    idle-in-transaction session of the worker; on SQLite another writer commits. The same
    call made as a local action shows both (so the checks can see what they look for)."""

    @pytest.mark.parametrize("local", [False, True], ids=["external", "local-control"])
    def test_while_the_call_runs(
        self,
        engine: Engine,
        named: tuple[str, str],
        tmp_path: Path,
        local: bool,
    ) -> None:
        url, application = named
        scene = Scene(url, engine, tmp_path / "calls.log", local=local)
        worker = scene.worker(seconds=4.0)
        worker.go()
        scene.wait_for_calls(1)
        if engine.dialect.name == "postgresql":
            states = session_states(engine, application)
            assert states, "the worker's session is not visible: the check would see nothing"
            assert ("idle in transaction" in states) is local, states
        else:
            assert another_writer_commits(url) is not local
        assert worker.result() == "done captured"


def test_lease_must_be_positive(engine: Engine) -> None:
    with pytest.raises(ValueError, match="lease must be positive"):
        PersistentMachine(machine, SqlUnitOfWork(engine), lease=timedelta(0))
