"""The worker in one process, on the in-memory store and on SQLite and PostgreSQL: due
timeouts fired once, runs left between steps resumed after the grace, claims respected."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest

from adapters.memory import InMemoryRunStore, InMemoryUnitOfWork
from adapters.sqlalchemy import SqlUnitOfWork, create_engine, init_db
from fsm import CallbackError, PersistentMachine
from fsm.cli import UsageError
from fsm.examples import hold
from fsm.ports import UnitOfWork
from fsm.worker import (
    Worker,
    WorkerReport,
    WorkerSettings,
    WorkerSettingsError,
    _fire,
    _resume,
    runs_of,
)
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


class TestStaleLookups:
    """Between a lookup and each run's load, the run may have moved: the worker skips it,
    counts it so, and goes on with the rest of the batch."""

    def test_runs_no_longer_due_are_skipped_not_fired_early(self, scene: Scene) -> None:
        """A run whose timeout is not due (or that left the state) is not sent expire."""
        run_ids = scene.start(2)
        scene.clock.advance(299)
        worker, runs = scene.worker(), scene.runs("w1")
        assert not _fire(runs, runs.load(run_ids[0]))
        report = WorkerReport()
        worker._each(runs, run_ids, _fire, report)
        assert (report.found, report.skipped, report.fired) == (2, 2, 0)
        assert [scene.state(r) for r in run_ids] == ["waiting", "waiting"]

    def test_runs_another_worker_holds_or_that_are_gone_are_skipped(self, scene: Scene) -> None:
        """A due run another worker claimed after the lookup is not fired; an id no run
        has any more is skipped too; each is counted once and the batch goes on."""
        run_ids = scene.start(2)
        scene.clock.advance(300)
        for run_id in run_ids:
            assert scene.runs("other").load(run_id).claim()
        report = WorkerReport()
        scene.worker()._each(scene.runs("w1"), [*run_ids, "gone-1", "gone-2"], _fire, report)
        assert (report.found, report.skipped, report.fired) == (4, 4, 0)
        assert effects(scene.log) == []

    def test_runs_with_no_step_pending_are_not_resumed(self, scene: Scene) -> None:
        """A run waiting (no action pending) or finished is not advanced; one another
        worker holds is not either."""
        waiting, done, held = scene.start(3)
        scene.runs().send(done, "pay")
        scene.leave_between_steps(held)
        assert scene.runs("other").load(held).claim()
        runs = scene.runs("w1")
        assert not _resume(runs, runs.load(waiting))
        report = WorkerReport()
        scene.worker()._each(runs, [waiting, done, held], _resume, report)
        assert (report.skipped, report.resumed) == (3, 0)
        assert [scene.state(r) for r in (waiting, done, held)] == ["waiting", "paid", "expired"]

    def test_every_failing_run_is_counted_and_logged(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One run's failure does not end the batch: each is tried, counted and logged."""
        run_ids = scene.start(2)
        for run_id in run_ids:
            scene.leave_between_steps(run_id)
        scene.clock.advance(GRACE.total_seconds() + 1)
        broken = Worker([scene.runs("w1", steps=BrokenSteps())], name="w1", clock=scene.clock)
        assert broken.run_once().failed == 2
        for run_id in run_ids:
            assert (
                f"worker w1: run {run_id} of 'reminder' failed: action note raised "
                "RuntimeError: the process stopped here"
            ) in caplog.text

    def test_every_run_resumed_is_counted(self, scene: Scene) -> None:
        run_ids = scene.start(2)
        for run_id in run_ids:
            scene.leave_between_steps(run_id)
        scene.clock.advance(GRACE.total_seconds() + 1)
        assert scene.worker().run_once().resumed == 2


class TestLookups:
    def test_a_run_left_behind_that_another_worker_holds_is_not_found(self, scene: Scene) -> None:
        """A run another worker is resuming is left to it while its claim (30 s) has not
        run out, even past a grace shorter than that: not found, so not counted."""
        [run_id] = scene.start(1)
        scene.leave_between_steps(run_id)
        assert scene.runs("other").load(run_id).claim()
        worker = scene.worker()
        worker.settings = WorkerSettings(grace=timedelta(seconds=10))
        scene.clock.advance(11)
        assert worker.run_once() == WorkerReport()
        scene.clock.advance(LEASE.total_seconds())
        assert worker.run_once().resumed == 1

    def test_each_lookup_takes_at_most_a_batch(self, scene: Scene) -> None:
        """batch_size bounds the runs left behind found in one round, as the due ones."""
        for run_id in scene.start(3):
            scene.leave_between_steps(run_id)
        scene.clock.advance(GRACE.total_seconds() + 1)
        worker = scene.worker()
        worker.settings = WorkerSettings(batch_size=2, grace=GRACE)
        assert [worker.run_once().resumed for _ in range(3)] == [2, 1, 0]


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

    def test_run_until_idle_with_nothing_to_do_returns_at_once(self, scene: Scene) -> None:
        """A first round that finds nothing ends the run, with no wait."""
        worker = scene.worker()
        waits: list[float] = []
        worker.sleep = waits.append
        assert worker.run(until_idle=True) == WorkerReport()
        assert waits == []

    def test_max_seconds_lets_the_last_round_start_at_the_bound(
        self, scene: Scene, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Rounds every idle interval (10 s) while at most max_seconds (60) have passed:
        the last starts at 60 s and the worker returns after the one at 70 s, its report
        and its summary line given."""
        caplog.set_level("INFO", logger="fsm.worker")
        worker = scene.worker()
        worker.settings = WorkerSettings(idle_interval=10)
        began = scene.clock()
        assert worker.run(max_seconds=60) == WorkerReport()
        assert scene.clock() - began == timedelta(seconds=70)
        assert "worker w1: stopped; fired 0 timeouts" in caplog.text

    def test_without_a_sleep_given_stop_ends_the_wait(self, scene: Scene) -> None:
        """The default sleep is the worker's own wait, which stop() cuts short."""
        worker = Worker([scene.runs("w1")], settings=WorkerSettings(idle_interval=600))
        done: list[WorkerReport] = []
        thread = threading.Thread(target=lambda: done.append(worker.run()))
        thread.start()
        worker.stop()
        thread.join(timeout=10)
        assert done == [WorkerReport()]

    def test_runs_may_be_given_by_name(self, scene: Scene) -> None:
        """A mapping of machine names to runs is taken by its values."""
        runs = scene.runs("w1")
        assert Worker({"reminder": runs}).runs == (runs,)

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
        with pytest.raises(WorkerSettingsError) as refused:
            WorkerSettings(idle_interval=0, report_interval=-1)
        assert str(refused.value) == (
            "idle_interval must be positive, got 0; report_interval must be positive, got -1"
        )

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


class TestRunsOf:
    """What `fsm worker MODULE:ATTR` loads: a machine's runs, or a factory's."""

    def test_a_machine_gets_the_workers_name_and_lease(self) -> None:
        uow = InMemoryUnitOfWork()
        lease = timedelta(seconds=45)
        runs = runs_of("fsm.examples:hold", uow, worker="w7", lease=lease)
        assert (runs.machine, runs.uow, runs.worker, runs.lease) == (hold, uow, "w7", lease)

    def test_a_factory_is_given_the_unit_of_work_name_and_lease(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setenv("FSM_TEST_EFFECTS", str(tmp_path / "effects.log"))
        uow = InMemoryUnitOfWork()
        runs = runs_of("tests.worker.machines:reminder_runs", uow, worker="w7", lease=LEASE)
        assert (runs.machine, runs.uow, runs.worker, runs.lease) == (reminder, uow, "w7", LEASE)

    def test_anything_else_is_named_with_what_is_wanted(self) -> None:
        with pytest.raises(UsageError) as refused:
            runs_of("fsm.examples:ok", InMemoryUnitOfWork(), worker="w7", lease=LEASE)
        assert str(refused.value) == (
            "fsm.examples:ok is a function; give an fsm.Machine or a function of "
            "(uow, *, worker, lease) returning a PersistentMachine"
        )
