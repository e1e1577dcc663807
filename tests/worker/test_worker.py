"""The worker in one process, on the in-memory store and on SQLite and PostgreSQL: due
timeouts fired once, runs left between steps resumed after the grace, claims respected."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.memory import InMemoryRunStore, InMemoryUnitOfWork
from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import CallbackError, PersistentMachine
from fsm.examples import hold
from fsm.ports import UnitOfWork
from fsm.worker import Worker, WorkerReport, WorkerSettings, WorkerSettingsError
from tests.clock import T0, Clock
from tests.schemas import fresh_schema
from tests.worker.machines import (
    BrokenSteps,
    FileSteps,
    Noted,
    ReminderSteps,
    effects,
    reminder,
)

LEASE = timedelta(seconds=30)
GRACE = timedelta(seconds=60)


class Scene:
    """Reminder runs on one store, one clock; workers and the starting process on it."""

    def __init__(self, new_uow: type[UnitOfWork] | object, tmp_path: Path) -> None:
        self.clock = Clock()
        self.new_uow = new_uow
        self.log = tmp_path / "effects.log"

    def uow(self) -> UnitOfWork:
        factory = self.new_uow
        assert callable(factory)
        uow: UnitOfWork = factory()
        return uow

    def runs(
        self, name: str = "starter", steps: ReminderSteps | None = None
    ) -> PersistentMachine[str]:
        return PersistentMachine(
            reminder,
            self.uow(),
            steps=steps if steps is not None else FileSteps(self.log),
            worker=name,
            lease=LEASE,
            clock=self.clock,
        )

    def worker(self, name: str = "w1") -> Worker:
        return Worker(
            [self.runs(name)],
            settings=WorkerSettings(grace=GRACE),
            name=name,
            clock=self.clock,
            sleep=self.clock.sleep,
        )

    def start(self, count: int) -> list[str]:
        runs = self.runs()
        return [runs.start({"name": f"r{i}"}, run_id=f"r{i}").id for i in range(count)]

    def leave_between_steps(self, run_id: str) -> None:
        """Send expire through a process whose note fails: the run stays in `expired`."""
        with pytest.raises(CallbackError):
            self.runs(steps=BrokenSteps()).send(run_id, "expire")

    def state(self, run_id: str) -> str:
        return self.runs().load(run_id).state


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def scene(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Scene]:
    """The in-memory store, a SQLite file or a fresh PostgreSQL schema."""
    if request.param == "memory":
        store = InMemoryRunStore()
        yield Scene(lambda: InMemoryUnitOfWork(runs=store), tmp_path)
        return
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'fsm.sqlite3'}"
        else:
            url = stack.enter_context(
                fresh_schema(request.getfixturevalue("postgres_server"), "fsm_test")
            )
        engine = create_engine(url)
        stack.callback(engine.dispose)
        init_db(engine)
        scene = Scene(None, tmp_path)
        scene.new_uow = lambda: SqlUnitOfWork(engine, clock=scene.clock)
        yield scene


class TestDueTime:
    def test_entering_a_waiting_state_stores_when_it_times_out(self, scene: Scene) -> None:
        """The step that enters `waiting` stores due_at = entry + after; leaving clears it."""
        [run_id] = scene.start(1)
        stored = scene.runs().load(run_id)
        assert stored.due_at == T0 + timedelta(minutes=5)
        scene.clock.advance(10)
        paid = scene.runs().send(run_id, "pay")
        assert paid.state == "paid" and paid.due_at is None
        assert scene.runs().load(run_id).due_at is None

    def test_a_claim_keeps_the_due_time(self, scene: Scene) -> None:
        """Claiming a waiting run (a worker about to fire it) does not move its due time."""
        [run_id] = scene.start(1)
        scene.clock.advance(60)
        run = scene.runs("w1").load(run_id)
        assert run.claim()
        assert scene.runs().load(run_id).due_at == T0 + timedelta(minutes=5)


class TestTimers:
    def test_a_due_timeout_fires_once(self, scene: Scene) -> None:
        """At the due time the worker sends expire; the row's target's action runs once;
        a second round finds nothing."""
        scene.start(3)
        worker = scene.worker()
        scene.clock.advance(299)
        assert worker.run_once() == WorkerReport()
        scene.clock.advance(1)
        report = worker.run_once()
        assert (report.found, report.fired, report.skipped, report.failed) == (3, 3, 0, 0)
        assert sorted(effects(scene.log)) == ["r0", "r1", "r2"]
        assert [t.trigger for t in scene.runs().load("r0").history] == ["expire", Noted]
        assert worker.run_once() == WorkerReport()
        assert len(effects(scene.log)) == 3

    def test_a_run_that_left_the_state_is_not_fired(self, scene: Scene) -> None:
        """A run paid before its timeout is never sent expire."""
        [run_id] = scene.start(1)
        scene.runs().send(run_id, "pay")
        scene.clock.advance(3600)
        assert scene.worker().run_once().fired == 0
        assert scene.state(run_id) == "paid"

    def test_a_run_another_worker_claimed_waits_for_its_lease(self, scene: Scene) -> None:
        """A claim that has not run out hides the run; after the lease, it fires."""
        [run_id] = scene.start(1)
        scene.clock.advance(300)
        assert scene.runs("dead-worker").load(run_id).claim()  # then it died
        worker = scene.worker()
        assert worker.run_once().found == 0
        scene.clock.advance(LEASE.total_seconds())
        assert worker.run_once().fired == 1
        assert scene.state(run_id) == "noted"

    def test_two_workers_that_found_the_same_run(self, scene: Scene) -> None:
        """The second worker's claim fails on the version: it skips, nothing runs twice."""
        [run_id] = scene.start(1)
        scene.clock.advance(300)
        late = scene.runs("late").load(run_id)  # read before the other worker fired it
        assert scene.worker().run_once().fired == 1
        assert not late.claim()
        assert effects(scene.log) == ["r0"]


class TestResume:
    def test_a_run_left_between_steps_is_resumed_after_the_grace(self, scene: Scene) -> None:
        """A run whose process died after committing `expired` is resumed once the grace
        has passed, and only then."""
        [run_id] = scene.start(1)
        scene.leave_between_steps(run_id)
        assert scene.state(run_id) == "expired"
        worker = scene.worker()
        scene.clock.advance(GRACE.total_seconds() - 1)
        assert worker.run_once().found == 0
        scene.clock.advance(2)
        report = worker.run_once()
        assert (report.resumed, report.fired) == (1, 0)
        assert scene.state(run_id) == "noted"
        assert effects(scene.log) == ["r0"]
        assert worker.run_once().found == 0

    def test_a_failing_step_is_counted_and_tried_after_the_lease(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The step raises: counted as failed, logged with the run; its claim (written at
        the attempt) keeps the run from the next rounds until the grace has passed again."""
        [run_id] = scene.start(1)
        scene.leave_between_steps(run_id)
        scene.clock.advance(GRACE.total_seconds() + 1)
        broken = Worker(
            [scene.runs("w1", steps=BrokenSteps())], settings=WorkerSettings(grace=GRACE)
        )
        assert broken.run_once().failed == 1
        assert f"run {run_id} of 'reminder' failed" in caplog.text
        assert broken.run_once().found == 0
        scene.clock.advance(LEASE.total_seconds())
        assert broken.run_once().found == 0
        scene.clock.advance((GRACE - LEASE).total_seconds() + 1)
        assert scene.worker().run_once().resumed == 1


class TestRunning:
    def test_run_until_idle_reports_and_logs_a_summary(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        """run(until_idle=True) works until a round finds nothing and logs what it did."""
        caplog.set_level("INFO", logger="fsm.worker")
        scene.start(2)
        scene.clock.advance(300)
        report = scene.worker().run(until_idle=True)
        assert report.fired == 2
        assert "worker w1: stopped; fired 2 timeouts, resumed 0 runs" in caplog.text

    def test_stop_ends_the_loop(self, scene: Scene) -> None:
        """A worker asked to stop returns before its next round."""
        worker = scene.worker()
        worker.sleep = lambda seconds: worker.stop()
        assert worker.run() == WorkerReport()
        assert worker.stopping

    def test_a_summary_every_report_interval(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Idle rounds sleep the idle interval; a summary line comes each report interval."""
        caplog.set_level("INFO", logger="fsm.worker")
        worker = scene.worker()
        worker.settings = WorkerSettings(idle_interval=10, report_interval=30)
        worker.run(max_seconds=65)
        assert caplog.text.count("(last 30 s)") == 2

    def test_settings_are_checked(self) -> None:
        """Settings that cannot work are refused, each problem named."""
        with pytest.raises(WorkerSettingsError, match="batch_size must be positive, got 0"):
            WorkerSettings(batch_size=0)
        with pytest.raises(WorkerSettingsError, match="grace must not be negative"):
            WorkerSettings(grace=timedelta(seconds=-1))

    def test_a_machine_given_twice_is_refused(self, scene: Scene) -> None:
        with pytest.raises(WorkerSettingsError, match="machine 'reminder' is given twice"):
            Worker([scene.runs(), scene.runs()])


class TestTheExample:
    """fsm.examples.hold: an authorization voided when not captured within 7 days."""

    def test_expired_after_seven_days(self) -> None:
        """The worker voids the hold 7 days after it was authorized, not before."""
        clock = Clock()
        runs = PersistentMachine(hold, InMemoryUnitOfWork(), clock=clock)
        run_id = runs.start().id
        worker = Worker([runs], clock=clock)
        clock.advance(timedelta(days=7).total_seconds() - 1)
        assert worker.run_once().fired == 0
        clock.advance(1)
        assert worker.run_once().fired == 1
        assert runs.load(run_id).state == "voided"

    def test_captured_in_time(self) -> None:
        """Captured before its timeout, the hold never expires."""
        clock = Clock()
        runs = PersistentMachine(hold, InMemoryUnitOfWork(), clock=clock)
        run_id = runs.start().id
        assert runs.send(run_id, "capture").state == "captured"
        clock.advance(timedelta(days=8).total_seconds())
        assert Worker([runs], clock=clock).run_once() == WorkerReport()
