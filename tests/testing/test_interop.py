"""Export to python-statemachine, and the differential test: both engines, same traces."""

from __future__ import annotations

import functools
import os
import re
from typing import Any, Literal

import pytest
import statemachine
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statemachine.exceptions import InvalidDefinition, TransitionNotAllowed

from fsm import (
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    Run,
    State,
    UnhandledOutcome,
)
from fsm.examples import ping, update
from fsm.interop import ExportError, RunView, to_statemachine
from fsm.strategies import Walk, walks

from .generated import Base, Exhausted, Sub, examples, flags, machines, rotating
from .machines import PublishFailed, Saved, Sent, flow

EXAMPLES = int(os.environ.get("FSM_DIFFERENTIAL_EXAMPLES", "150"))
"""Examples per differential test; raise it for a deeper one-off search."""


class TestExport:
    """The exported class has the machine's states, events and guards."""

    def test_states_and_events(self) -> None:
        """States keep our names as values; triggers become event names."""
        exported = to_statemachine(flow)
        instance = exported.create({"attempts": 0})
        assert exported.state_of(instance) == "received"
        assert exported.event_ids[Saved] == "Saved"
        assert {s.value for s in exported.cls.states} == {s.name for s in flow.states}
        assert {s.value for s in exported.cls.final_states} == {"published", "rejected", "dead"}

    def test_outcomes_are_sent_as_events(self) -> None:
        """Outcome instances are dispatched to their class's event."""
        exported = to_statemachine(flow)
        instance = exported.create({"attempts": 0})
        for value in (Saved(), PublishFailed(), "retry", Sent()):
            exported.send(instance, value)
        assert exported.state_of(instance) == "published"
        assert instance.is_terminated

    def test_guards_see_the_context(self) -> None:
        """A guard reads the context given to create()."""
        exported = to_statemachine(ping)
        refused = exported.create({"ok": False})
        exported.send(refused, "start")
        with pytest.raises(TransitionNotAllowed):
            exported.send(refused, "finish")
        accepted = exported.create({"ok": True})
        exported.send(accepted, "start")
        assert exported.send(accepted, "finish") == "done"

    @pytest.mark.parametrize(
        ("states", "transitions", "state_ids", "event_ids"),
        [
            pytest.param(
                ["send", "my state", "3"],
                [("send", "send", "my state"), ("my state", "model", "3")],
                {"send": "send_", "my state": "my_state", "3": "x3"},
                {"send": "send__", "model": "model_"},
                id="reserved-and-not-identifiers",
            ),
            pytest.param(
                ["", "_hidden", "class"],
                [("", "Xgo", "_hidden"), ("_hidden", "def", "class")],
                {"": "x_", "_hidden": "x_hidden", "class": "xclass"},
                {"Xgo": "Xgo", "def": "xdef"},
                id="empty-underscore-keyword",
            ),
        ],
    )
    def test_odd_names_get_new_ids(
        self,
        states: list[str],
        transitions: list[tuple[str, str, str]],
        state_ids: dict[str, str],
        event_ids: dict[str, str],
    ) -> None:
        """Names that clash with StateMachine attributes or are not identifiers get new ids:
        an empty name, a leading underscore, a digit first or a Python keyword get an `x`
        in front, a reserved name a `_` after; other letters stay."""
        first, middle, last = states
        machine = Machine(
            "odd names",
            states=[State(first, initial=True), State(middle), State(last, final=True)],
            transitions=transitions,
        )
        exported = to_statemachine(machine)
        assert exported.state_ids == state_ids
        assert exported.event_ids == event_ids
        instance = exported.create()
        exported.send(instance, transitions[0][1])
        assert exported.send(instance, transitions[1][1]) == last

    def test_value_matching_no_trigger(self) -> None:
        """A value no row can take is an ExportError naming it and every trigger."""
        with pytest.raises(ExportError) as caught:
            to_statemachine(update).event_for("received", "nope")
        assert str(caught.value) == (
            "'nope' matches no trigger of machine 'update'; triggers: Updated, UserNotFound"
        )

    def test_the_class_and_its_states_are_named_after_ours(self) -> None:
        """The class is named after the machine (or `class_name`); each state keeps our
        state's name as its name, and the one marked initial is initial wherever it is listed."""
        exported = to_statemachine(flow)
        assert exported.cls.__name__ == "FlowMachine"
        assert to_statemachine(flow, class_name="Publishing").cls.__name__ == "Publishing"
        late = Machine(
            "user_status_update",
            states=[State("my state", final=True), State("start", initial=True)],
            transitions=[("start", "go", "my state")],
        )
        exported = to_statemachine(late)
        assert exported.cls.__name__ == "UserStatusUpdateMachine"
        assert {s.value: s.name for s in exported.cls.states} == {
            "my state": "my state",
            "start": "start",
        }
        assert exported.state_of(exported.create()) == "start"

    def test_a_class_python_statemachine_refuses(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A definition the library refuses is an ExportError naming the machine and why."""

        class Strict(statemachine.StateMachine):
            def __init_subclass__(cls, **kwargs: Any) -> None:
                if cls.__name__ == "Refused":
                    raise InvalidDefinition("Refused breaks a rule")
                super().__init_subclass__(**kwargs)

        monkeypatch.setattr(statemachine, "StateMachine", Strict)
        with pytest.raises(ExportError) as caught:
            to_statemachine(ping, class_name="Refused")
        assert str(caught.value) == (
            "python-statemachine refused machine 'ping': Refused breaks a rule"
        )

    def test_guards_and_actions_keep_their_names(self) -> None:
        """python-statemachine lists a row's guard and a state's entry by our guard's and
        action's names (`guard` and `action` for a callable without one)."""

        def saved(context: dict[str, Any]) -> Literal["ok"]:
            return "ok"

        def ready(run: Any) -> bool:
            return True

        machine = Machine(
            "named",
            states=[
                State("a", initial=True, action=saved),
                State("b", action=functools.partial(saved)),
                State("c", final=True),
            ],
            transitions=[("a", "ok", "b", ready), ("b", "ok", "c", functools.partial(ready))],
        )
        exported = to_statemachine(machine, actions=True)
        states = {s.value: s for s in exported.cls.states}
        assert next(str(c) for c in states["a"].enter) == "enter_saved"
        assert next(str(c) for c in states["b"].enter) == "enter_action"
        guards = {
            t.source.value: [str(c) for c in t.cond]
            for s in exported.cls.states
            for t in s.transitions
        }
        assert guards == {"a": ["_following", "ready"], "b": ["_following", "guard"]}
        assert exported.state_of(exported.create()) == "c"


def run_both(machine: Machine[str], context: dict[str, Any], values: list[object]) -> None:
    """Send `values` to our run and to the exported instance; traces and refusals must match."""
    ours = machine.create(context)
    exported = to_statemachine(machine)
    theirs = exported.create(context)
    trace_ours = [ours.state]
    trace_theirs = [exported.state_of(theirs)]
    for value in values:
        in_action = machine.state(ours.state).action is not None
        try:
            ours.fire(value, outcome=in_action)  # the plain table: outcomes are sent as events
            ours_moved = True
        except (InvalidEvent, UnhandledOutcome, GuardRejected):
            ours_moved = False
        try:
            exported.send(theirs, value)
            theirs_moved = True
        except TransitionNotAllowed:
            theirs_moved = False
        assert ours_moved == theirs_moved, f"{value!r}: ours moved {ours_moved}"
        trace_ours.append(ours.state)
        trace_theirs.append(exported.state_of(theirs))
    assert trace_ours == trace_theirs
    assert ours.finished == theirs.is_terminated


class TestDifferential:
    """Random valid machines and event sequences give identical state traces in both engines."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            *settings().suppress_health_check,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(st.data(), machines(with_actions=True), flags)
    def test_random_sequences(
        self, data: st.DataObject, machine: Machine[str], context: dict[str, bool]
    ) -> None:
        """Any sequence of known triggers, allowed or not, is accepted or refused alike."""
        values = [v for row in machine.transitions for v in examples(row.trigger)]
        sequence = data.draw(st.lists(st.sampled_from(values), max_size=12))
        run_both(machine, {"flags": context}, sequence)

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            *settings().suppress_health_check,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(st.data(), machines(with_actions=True), flags)
    def test_valid_walks(
        self, data: st.DataObject, machine: Machine[str], context: dict[str, bool]
    ) -> None:
        """Walks generated on our engine are all accepted by python-statemachine, same states."""
        walk: Walk[str] = data.draw(walks(machine, context={"flags": context}, max_steps=12))
        exported = to_statemachine(machine)
        theirs = exported.create({"flags": context})
        trace = [exported.state_of(theirs)]
        trace += [exported.send(theirs, value) for value in walk.values]
        assert trace == list(walk.states)

    def test_specific_class_wins_in_both(self) -> None:
        """A Sub outcome takes the Sub row over the Base row, in both engines."""
        machine = Machine(
            "mro",
            states=[State("a", initial=True), State("b", final=True), State("c", final=True)],
            transitions=[("a", Base, "b"), ("a", Sub, "c")],
        )
        run_both(machine, {}, [Sub()])
        run_both(machine, {}, [Base()])


def attempt(action: Any) -> bool:
    """Call `action`; True if it raised (any engine error or an action's own)."""
    try:
        action()
    except Exception:
        return True
    return False


def boom(context: dict[str, Any]) -> Literal["ok"]:
    raise RuntimeError("port down")


FAILS = Machine(
    "fails",
    states=[State("a", initial=True), State("b", action=boom), State("c", final=True)],
    transitions=[("a", "go", "b"), ("b", "ok", "c")],
)
"""A machine whose one action always fails."""


class TestDifferentialWithActions:
    """Exported with actions=True, instances run by themselves exactly as our runs do."""

    def test_failing_action_stays_in_the_entered_state(self) -> None:
        """Like a Run, the instance stays where the failing action was entered."""
        machine = FAILS
        exported = to_statemachine(machine, actions=True)
        instance = exported.create()
        with pytest.raises(RuntimeError, match="port down"):
            exported.send(instance, "go")
        run = machine.create()
        with pytest.raises(CallbackError):
            run.send("go")
        assert exported.state_of(instance) == run.state == "b"
        assert instance.model.history == run.history

    def test_an_action_state_takes_no_event(self) -> None:
        """After a failing action the instance waits in its state, as a Run: the action's
        outcome sent as an event is refused in both."""
        machine = FAILS
        exported = to_statemachine(machine, actions=True)
        instance = exported.create()
        with pytest.raises(RuntimeError):
            exported.send(instance, "go")
        with pytest.raises(TransitionNotAllowed):
            exported.send(instance, "ok")
        run = machine.create()
        with pytest.raises(CallbackError):
            run.send("go")
        with pytest.raises(InvalidEvent):
            run.send("ok")
        assert exported.state_of(instance) == run.state == "b"

    def test_an_outcome_matching_no_trigger(self) -> None:
        """An action returning what no trigger takes leaves the instance in its state, as a
        Run; send raises an ExportError naming the value and the triggers."""

        def sloppy(context: dict[str, Any]) -> Literal["ok"]:
            return context["answer"]  # type: ignore[no-any-return]

        machine = Machine(
            "sloppy",
            states=[State("a", initial=True), State("b", action=sloppy), State("c", final=True)],
            transitions=[("a", "go", "b"), ("b", "ok", "c")],
        )
        exported = to_statemachine(machine, actions=True)
        instance = exported.create({"answer": "odd"})
        with pytest.raises(ExportError) as caught:
            exported.send(instance, "go")
        assert str(caught.value) == (
            "'odd' matches no trigger of machine 'sloppy'; triggers: 'go', 'ok'"
        )
        run = machine.create({"answer": "odd"})
        with pytest.raises(UnhandledOutcome):
            run.send("go")
        assert exported.state_of(instance) == run.state == "b"
        assert instance.model.history == run.history

    def test_the_model_is_a_view_of_a_run(self) -> None:
        """The model has the machine, a run id of its own, the latest outcome (None before
        any row) and the step key an external action is given, as a Run's."""
        keys: list[tuple[dict[str, Any], str]] = []

        def charge(context: dict[str, Any], key: str) -> Literal["paid"]:
            keys.append((context, key))
            return "paid"

        machine = Machine(
            "pay",
            states=[
                State("new", initial=True),
                State("charging", action=charge, external=True),
                State("paid", final=True),
            ],
            transitions=[("new", "pay", "charging"), ("charging", "paid", "paid")],
        )
        exported = to_statemachine(machine, actions=True)
        instance = exported.create({"amount": 5})
        view = instance.model
        assert view.machine is machine
        assert view.outcome is None
        assert re.fullmatch("[0-9a-f]{32}", view.id)
        assert view.id != exported.create().model.id
        assert exported.send(instance, "pay") == "paid"
        assert view.outcome == "paid"
        assert keys == [({"amount": 5}, f"{view.id}:2")]
        run: Run[str] = machine.create({"amount": 5})
        run.send("pay")
        assert keys[1] == ({"amount": 5}, f"{run.id}:2")

    def test_examples_run_by_themselves(self) -> None:
        """update's real action picks the same final state in both engines."""
        exported = to_statemachine(update, actions=True)
        for user_id, final in ((1, "updated"), (9, "failed")):
            instance = exported.create({"user_id": user_id})
            assert exported.state_of(instance) == final == update.start({"user_id": user_id}).state

    def test_self_transition_reruns_the_action(self) -> None:
        """A self-transition re-enters the state in both; the failing call is recorded alike."""
        machine = Machine(
            "again",
            states=[State("s0", initial=True, action=rotating(["b"])), State("s1", final=True)],
            transitions=[("s0", "b", "s0"), ("s0", "c", "s1")],
        )
        ours = machine.create({"budget": 3})
        with pytest.raises(CallbackError):
            ours.advance()
        view = RunView(machine, {"budget": 3})
        with pytest.raises(Exhausted):
            to_statemachine(machine, actions=True).create(model=view)
        assert view.history == ours.history
        assert len(ours.history) == 3

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[
            *settings().suppress_health_check,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(st.data(), machines(with_actions=True, runnable=True), flags, st.integers(0, 12))
    def test_random_runs(
        self, data: st.DataObject, machine: Machine[str], context: dict[str, bool], budget: int
    ) -> None:
        """Start, then random events: same transitions, same failures, in both engines."""
        values = [v for row in machine.transitions for v in examples(row.trigger)]
        sequence = data.draw(st.lists(st.sampled_from(values), max_size=10))
        start = {"flags": context, "budget": budget}
        ours = machine.create(start)
        exported = to_statemachine(machine, actions=True)
        view = RunView(machine, dict(start))
        ours_failed = attempt(ours.advance)
        theirs: list[Any] = []
        theirs_failed = attempt(lambda: theirs.append(exported.create(model=view)))
        assert ours_failed == theirs_failed
        assert view.history == ours.history
        if not theirs:
            return  # create() raised the initial action's error, as start() would
        for value in sequence:
            assert attempt(lambda v=value: ours.send(v)) == attempt(
                lambda v=value: exported.send(theirs[0], v)
            ), f"{value!r} after {ours.history}"
            assert view.history == ours.history
            assert exported.state_of(theirs[0]) == ours.state
