"""The runtime hooks the toolkit adds: Run.fire, observe(), Run.last_row and RunHandle."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory import InMemoryUnitOfWork
from fsm import (
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    PersistentMachine,
    Row,
    Run,
    State,
    Transition,
    UnhandledOutcome,
)
from fsm.examples import Authorized, CaptureFailed, Declined, payment, ping, update
from fsm.runtime import RunHandle, _observers, observe
from fsm.testing import Stepper

from .machines import Saved, calls, flow


class TestFire:
    """Run.fire follows one row and runs no action."""

    def test_no_action_runs(self) -> None:
        """Firing into a state with an action leaves that action for later."""
        before = len(calls)
        run = flow.create()
        transition = run.fire(Saved(), outcome=True)
        assert transition == Transition("received", Saved, "saved", Saved())
        assert run.state == "saved"
        assert len(calls) == before

    def test_unknown_outcome_and_event(self) -> None:
        """An unknown outcome is UnhandledOutcome, an unknown event InvalidEvent."""
        with pytest.raises(UnhandledOutcome):
            update.create().fire("nope", outcome=True)
        with pytest.raises(InvalidEvent) as caught:
            update.create().fire("nope")
        assert not isinstance(caught.value, UnhandledOutcome)

    def test_answer_stands_in_for_the_guards(self) -> None:
        """answer= is asked about each guarded row tried, in table order; no guard is called."""
        asked: list[Row[str]] = []

        def answer(row: Row[str]) -> bool:
            asked.append(row)
            return False

        run = payment.create({"attempts": 0})
        run.fire(Authorized(), outcome=True)
        run.fire(CaptureFailed(), outcome=True)
        run.fire("retry", answer=answer)
        assert run.state == "voided"
        assert asked == [payment.transitions[4]]

    def test_answer_for_outcomes(self) -> None:
        """answer= works for an outcome's rows too, and its refusal is GuardRejected."""
        machine = Machine(
            "gated",
            states=[
                State("a", initial=True, action=lambda context: "ok", outcomes=("ok",)),
                State("b", final=True),
            ],
            transitions=[("a", "ok", "b", lambda run: True)],
        )
        with pytest.raises(GuardRejected):
            machine.create().fire("ok", outcome=True, answer=lambda row: False)
        assert machine.create().fire("ok", outcome=True, answer=lambda row: True).target == "b"

    def test_rows_for(self) -> None:
        """rows_for lists the rows a value would try from here, for events and outcomes."""
        run = payment.create()
        assert run.rows_for(Declined(), outcome=True) == (payment.transitions[1],)
        assert run.rows_for(Declined()) == ()
        assert run.rows_for("retry") == ()
        failed = payment.restore("r", "capture_failed")
        assert failed.rows_for("retry") == payment.transitions[4:]
        assert failed.rows_for("retry", outcome=True) == ()

    def test_history_and_outcome(self) -> None:
        """A fired row is in the history and becomes the run's outcome."""
        run = ping.create()
        run.fire("start")
        assert run.history == [Transition("idle", "start", "busy", "start")]
        assert run.outcome == "start"


class TestObserve:
    """observe() gives a listener to runs created while it is registered."""

    def test_observed_runs(self) -> None:
        """Runs created after observe() call it; after stop() new runs do not."""
        seen: list[tuple[str, str]] = []

        def listener(run: Run[Any], transition: Transition[Any]) -> None:
            seen.append((run.machine.name, transition.target))

        stop = observe(listener)
        try:
            observed = ping.start()
            observed.send("start")
        finally:
            stop()
        ping.start().send("start")
        observed.send("pause")  # a run keeps the observers it was created with
        assert seen == [("ping", "busy"), ("ping", "idle")]
        assert listener not in _observers
        stop()  # stopping twice is harmless

    def test_observer_that_raises_undoes_the_transition(self) -> None:
        """An observer is a listener like any other: if it raises, the transition is undone."""

        def refuse(run: Run[Any], transition: Transition[Any]) -> None:
            raise RuntimeError("no")

        stop = observe(refuse)
        try:
            run = ping.start()
        finally:
            stop()
        with pytest.raises(CallbackError):
            run.send("start")
        assert run.state == "idle"


class TestLastRow:
    """Run.last_row names the table row behind the latest transition."""

    def test_row_identity(self) -> None:
        """It is the Row object of the machine's table."""
        run = ping.start({"ok": True}).send("start").send("finish")
        assert run.last_row is ping.transitions[2]

    def test_no_transition_yet(self) -> None:
        """Before any transition it says so."""
        with pytest.raises(ValueError, match="has no transition yet"):
            ping.create().last_row  # noqa: B018


class TestRunHandle:
    """A PersistentRun and a Stepper show their run read-only, by the Run's own names."""

    NAMES = sorted(n for n, v in vars(RunHandle).items() if isinstance(v, property) and n != "run")

    def test_names_are_the_runs(self) -> None:
        """Every property a RunHandle shows is a Run attribute of the same name."""
        assert "state" in self.NAMES
        assert [n for n in self.NAMES if not hasattr(Run, n)] == []

    @pytest.mark.parametrize("kind", ["stepper", "persistent"])
    def test_reads_the_run_it_holds(self, kind: str) -> None:
        """Each property is the held run's, as it is now."""
        handle: RunHandle[str]
        if kind == "stepper":
            handle = Stepper(ping, {"ok": True}).follow("start")
        else:
            handle = PersistentMachine(ping, InMemoryUnitOfWork()).start({"ok": True})
            handle.send("start")
        assert handle.state == "busy"
        for name in self.NAMES:
            assert getattr(handle, name) == getattr(handle.run, name), name
