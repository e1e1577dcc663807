"""After-commit and failure hooks, and the step log lines, of the sync persistent runner on
SQLite and PostgreSQL: told after the commit, never of a step that rolled back."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from sqlalchemy import Engine

from adapters.sqlalchemy import SqlUnitOfWork
from fsm import CallbackError, ConcurrencyError, InvalidEvent, PersistentMachine
from fsm.examples import payment, ping
from fsm.hooks import StepCommitted, StepFailed, watch_steps
from tests.clock import T0, Clock
from tests.observe.support import Gateway, Told, failing_commit

FIELDS = ("fsm_machine", "fsm_run_id", "fsm_source", "fsm_trigger", "fsm_target")
IDLE_TO_BUSY = ["idle", "start", "busy"]


def pings(engine: Engine, told: Told, clock: Clock) -> PersistentMachine[str]:
    return PersistentMachine(ping, SqlUnitOfWork(engine, clock=clock), clock=clock, **told.hooks())


def failed_payment(engine: Engine, gateway: Gateway, error: str) -> tuple[StepFailed, Told]:
    """Start payment p-1 on a gateway that fails with `error`: the one failure its hooks
    were told, and the hooks."""
    told = Told()
    machine = PersistentMachine(payment, SqlUnitOfWork(engine), steps=gateway, **told.hooks())
    with pytest.raises(CallbackError, match=error):
        machine.start(run_id="p-1")
    (failure,) = told.failed
    return failure, told


def step_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "fsm.steps"]


class TestAfterCommit:
    """The after-commit hook is told of each committed step, once it has committed."""

    def test_each_committed_transition(self, engine: Engine) -> None:
        """One call per transition, with the machine, run, labels, outcome and times."""
        told, clock = Told(), Clock()
        run = pings(engine, told, clock).start()
        assert told.committed == []  # the run's creation alone is no step
        clock.advance(5)
        run.send("start")
        clock.advance(2)
        run.send("finish")
        first, second = told.committed
        assert first == StepCommitted(
            machine="ping",
            run_id=run.id,
            seq=1,
            source="idle",
            trigger="start",
            target="busy",
            outcome="start",
            began_at=T0 + timedelta(seconds=5),
            at=T0 + timedelta(seconds=5),
            entered_at=T0,
        )
        assert first.time_in_source == timedelta(seconds=5)
        assert (second.seq, second.source, second.target) == (2, "busy", "done")
        assert second.time_in_source == timedelta(seconds=2)
        assert told.failed == []

    def test_called_after_the_commit(self, engine: Engine) -> None:
        """Another connection already sees the step's history row when the hook runs."""
        told = Told(engine)
        run = pings(engine, told, Clock()).start()
        run.send("start")
        run.send("finish")
        assert told.seen == [1, 2]

    def test_time_in_state_after_a_reload(self, engine: Engine) -> None:
        """A run loaded from the store knows when it entered its state (its last history
        row, or its creation)."""
        told, clock = Told(), Clock()
        machine = pings(engine, told, clock)
        run_id = machine.start().id
        clock.advance(30)
        machine.send(run_id, "start")
        clock.advance(60)
        machine.send(run_id, "finish")
        assert [s.time_in_source for s in told.committed] == [
            timedelta(seconds=30),
            timedelta(seconds=60),
        ]

    def test_not_called_for_a_failed_commit(self, engine: Engine) -> None:
        """A commit that fails: no after-commit call, one failure call; the retry is told once."""
        told, clock = Told(), Clock()
        run = pings(engine, told, clock).start()
        with failing_commit(engine):
            run.send("start")
        assert (told.committed, run.state, run.version) == ([], "idle", 1)
        (failure,) = told.failed
        assert (failure.machine, failure.run_id, failure.source) == ("ping", run.id, "idle")
        assert (failure.trigger, failure.target) == ("start", "busy")
        run.send("start")
        assert told.moves() == [("idle", "start", "busy")]

    def test_a_lost_acknowledgement(self, engine: Engine) -> None:
        """A commit that happened though the caller got an error: told as committed, once,
        and never as failed (the run as reloaded is in the step's target)."""
        told = Told()
        run = pings(engine, told, Clock()).start()
        with failing_commit(engine, "lost-ack"):
            run.send("start")
        assert (run.state, told.failed) == ("busy", [])
        assert told.moves() == [("idle", "start", "busy")]
        run.send("finish")
        assert [s.seq for s in told.committed] == [1, 2]

    def test_a_hook_error_changes_nothing(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A hook that raises is logged; the step stays committed and later hooks are told."""
        told = Told()

        def broken(step: StepCommitted) -> None:
            raise RuntimeError("metrics backend away")

        machine = PersistentMachine(
            ping, SqlUnitOfWork(engine), after_commit=[broken, told.after_commit]
        )
        run = machine.start().send("start")
        assert (run.state, machine.load(run.id).state, told.moves()) == (
            "busy",
            "busy",
            [("idle", "start", "busy")],
        )
        (error,) = [r for r in step_records(caplog) if r.levelno == logging.ERROR]
        assert error.getMessage() == (
            f"ping run {run.id}: hook broken failed (the step is committed all the same)"
        )
        assert error.fsm_run_id == run.id  # type: ignore[attr-defined]
        assert error.exc_info is not None and "metrics backend away" in str(error.exc_info[1])

    def test_an_async_hook_in_a_sync_run(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A sync runner cannot await an `async def` hook: that is logged as the hook's
        error, and the step stays committed."""
        told = Told()

        async def awaited(step: StepCommitted) -> None:
            told.after_commit(step)

        machine = PersistentMachine(ping, SqlUnitOfWork(engine), after_commit=[awaited])
        run = machine.start().send("start")
        assert (machine.load(run.id).state, told.committed) == ("busy", [])
        assert "hook awaited failed (the step is committed all the same)" in caplog.text
        assert "AsyncRequired" in caplog.text


class TestAfterFailure:
    """The failure hook is told of each step that rolled back, with what is known of it."""

    def test_action_error(self, engine: Engine) -> None:
        """An action that raises: told with the state the run stays in, and the error."""
        failure, told = failed_payment(engine, Gateway(down=True), "gateway unreachable")
        assert (failure.machine, failure.run_id, failure.source) == ("payment", "p-1", "created")
        assert (failure.trigger, failure.target) == (None, None)
        assert isinstance(failure.error, CallbackError)
        assert told.committed == []

    def test_concurrency_conflict(self, engine: Engine) -> None:
        """Two handles of one run: the stale one's step is told as failed, not committed."""
        told = Told()
        machine = pings(engine, told, Clock())
        stale = machine.start()
        machine.load(stale.id).send("start")
        with pytest.raises(ConcurrencyError):
            stale.send("start")
        assert told.moves() == [("idle", "start", "busy")]
        (failure,) = told.failed
        assert (failure.source, failure.trigger, failure.target) == ("idle", "start", "busy")
        assert isinstance(failure.error, ConcurrencyError)
        assert (failure.began_at, failure.at) == (T0, T0)

    def test_refused_event(self, engine: Engine) -> None:
        """An event the state does not take is a failed step with no transition."""
        told = Told()
        run = pings(engine, told, Clock()).start()
        with pytest.raises(InvalidEvent):
            run.send("finish")
        (failure,) = told.failed
        assert (failure.source, failure.trigger, failure.target) == ("idle", None, None)

    def test_external_call_error(self, engine: Engine) -> None:
        """An external action that raises (no transaction open) is a failed step too."""
        failure, told = failed_payment(engine, Gateway(unanswered=True), "no answer")
        assert told.moves() == [("created", "Authorized", "authorized")]
        assert (failure.source, failure.trigger) == ("authorized", None)

    def test_a_failure_hook_error_changes_nothing(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failure hook that raises is logged as such; the step stays rolled back."""

        def broken(step: StepFailed) -> None:
            raise RuntimeError("alerting away")

        run = PersistentMachine(ping, SqlUnitOfWork(engine), after_failure=[broken]).start()
        with pytest.raises(InvalidEvent):
            run.send("finish")
        (error,) = [r for r in step_records(caplog) if r.levelno == logging.ERROR]
        assert error.getMessage() == (
            f"ping run {run.id}: hook broken failed (the step is rolled back all the same)"
        )


class TestBatch:
    """send_many's steps share one transaction: told after it commits, or told failed."""

    def test_told_after_the_batch_commits(self, engine: Engine) -> None:
        """Each run's step is told once, after the batch's one commit (another connection
        sees every history row by then)."""
        told = Told(engine)
        machine = pings(engine, told, Clock())
        ids = [machine.start().id for _ in range(3)]
        machine.send_many([(run_id, "start") for run_id in ids])
        assert [(s.run_id, s.seq, s.target) for s in told.committed] == [
            (run_id, 1, "busy") for run_id in ids
        ]
        assert told.seen == [3, 3, 3]

    def test_a_failed_batch(self, engine: Engine) -> None:
        """A batch that rolls back (one run's event refused) is never told as committed;
        the steps prepared before the refusal are told failed."""
        told = Told()
        machine = pings(engine, told, Clock())
        first, second = machine.start(), machine.start()
        second.send("start")
        told.committed.clear()
        with pytest.raises(InvalidEvent):
            machine.send_many([(first.id, "start"), (second.id, "start")])
        assert told.committed == []
        assert [(f.run_id, f.source, f.trigger, f.target) for f in told.failed] == [
            (first.id, "idle", "start", "busy")
        ]
        assert isinstance(told.failed[0].error, InvalidEvent)


class TestWatchSteps:
    """watch_steps tells its hooks of every persistent machine's steps, until stopped."""

    def test_every_machine_until_stopped(self, engine: Engine) -> None:
        """Machines built before the call are watched too; after stop() nothing is told."""
        told = Told()
        machine = PersistentMachine(ping, SqlUnitOfWork(engine))
        run = machine.start()
        stop = watch_steps(after_commit=told.after_commit, after_failure=told.after_failure)
        try:
            run.send("start")
            with pytest.raises(InvalidEvent):
                run.send("start")
        finally:
            stop()
        run.send("finish")
        assert told.moves() == [("idle", "start", "busy")]
        assert [f.source for f in told.failed] == ["busy"]


class TestStepLogs:
    """Committed steps log at DEBUG, failed ones at WARNING, with the fields as `extra`."""

    def test_committed_step_at_debug(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """One DEBUG line per committed step, naming the transition, with the fields."""
        caplog.set_level(logging.DEBUG, logger="fsm.steps")
        run = pings(engine, Told(), Clock()).start().send("start")
        (record,) = step_records(caplog)
        assert record.levelno == logging.DEBUG
        assert record.getMessage() == f"ping run {run.id}: step 1 committed: idle --start--> busy"
        assert [getattr(record, name) for name in FIELDS] == ["ping", run.id, *IDLE_TO_BUSY]
        assert record.fsm_seq == 1  # type: ignore[attr-defined]

    def test_rolled_back_step_at_warning_only(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A step whose commit failed logs one WARNING and no committed line."""
        caplog.set_level(logging.DEBUG, logger="fsm.steps")
        run = pings(engine, Told(), Clock()).start()
        with failing_commit(engine):
            run.send("start")
        (record,) = step_records(caplog)
        assert record.levelno == logging.WARNING
        assert [getattr(record, name) for name in FIELDS] == ["ping", run.id, *IDLE_TO_BUSY]
        assert "OperationalError" in record.fsm_error  # type: ignore[attr-defined]
        assert record.getMessage().startswith(
            f"ping run {run.id}: step from idle (--start--> busy) failed, rolled back: "
        )

    def test_a_failed_action_names_no_transition(
        self, engine: Engine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An action's failure took no row: the WARNING names the state and the error only."""
        failed_payment(engine, Gateway(down=True), "gateway unreachable")
        (record,) = [r for r in step_records(caplog) if r.levelno == logging.WARNING]
        assert record.getMessage() == (
            "payment run p-1: step from created failed, rolled back: "
            "ConnectionError: gateway unreachable"
        )

    def test_quiet_at_info(self, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
        """At INFO, committed steps log nothing."""
        caplog.set_level(logging.INFO, logger="fsm.steps")
        pings(engine, Told(), Clock()).start().send("start").send("finish")
        assert step_records(caplog) == []


def test_step_failed_fields() -> None:
    """A failed step's fields carry the error's one-line summary, no more."""
    step = StepFailed("m", "r", "a", None, None, ValueError("bad\nSQL: secret"), T0, T0)
    assert step.fields()["fsm_error"] == "ValueError: bad"
