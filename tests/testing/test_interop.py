"""Export to python-statemachine, and the differential test: both engines, same traces."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from statemachine.exceptions import TransitionNotAllowed

from fsm import GuardRejected, InvalidEvent, Machine, State
from fsm.examples import ping, update
from fsm.interop import ExportError, to_statemachine
from fsm.strategies import Walk, walks

from .generated import Base, Sub, examples, flags, machines
from .machines import PublishFailed, Saved, Sent, flow


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

    def test_reserved_and_odd_names_are_renamed(self) -> None:
        """Names that clash with StateMachine attributes or are not identifiers get new ids."""
        machine = Machine(
            "odd names",
            states=[State("send", initial=True), State("my state"), State(3, final=True)],
            transitions=[("send", "send", "my state"), ("my state", "model", 3)],
        )
        exported = to_statemachine(machine)
        assert exported.state_ids == {"send": "send_", "my state": "my_state", 3: "x3"}
        assert exported.event_ids == {"send": "send__", "model": "model_"}
        instance = exported.create()
        exported.send(instance, "send")
        assert exported.send(instance, "model") == 3

    def test_value_matching_no_trigger(self) -> None:
        """A value no row can take is an ExportError naming the triggers."""
        with pytest.raises(ExportError, match="matches no trigger of machine 'update'"):
            to_statemachine(update).event_for("received", "nope")


def run_both(machine: Machine[str], context: dict[str, Any], values: list[object]) -> None:
    """Send `values` to our run and to the exported instance; traces and refusals must match."""
    ours = machine.create(context)
    exported = to_statemachine(machine)
    theirs = exported.create(context)
    trace_ours = [ours.state]
    trace_theirs = [exported.state_of(theirs)]
    for value in values:
        try:
            ours.fire(value)
            ours_moved = True
        except (InvalidEvent, GuardRejected):
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
        max_examples=150,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
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
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
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
