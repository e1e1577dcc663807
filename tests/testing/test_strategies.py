"""hypothesis strategies: walks only take allowed triggers and replay to the same states."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsm import GuardRejected, Machine
from fsm.examples import ping
from fsm.strategies import Step, Walk, values_for, walks

from .generated import machines
from .machines import Rejected, flow


class TestWalks:
    """Generated walks are valid sequences of events and outcomes."""

    @given(
        walks(
            flow,
            context={"attempts": 0},
            strategies={Rejected: st.builds(Rejected, st.sampled_from(["frozen", "banned"]))},
        )
    )
    def test_flow_walks_replay(self, walk: Walk[str]) -> None:
        """A walk of the flow replays through a fresh Stepper to the same states."""
        stepper = walk.replay()
        assert stepper.path == list(walk.states)
        assert len(walk.states) == len(walk.steps) + 1

    @given(walks(ping, context={"ok": False}, max_steps=8))
    def test_guards_are_respected(self, walk: Walk[str]) -> None:
        """With the guard refusing, no walk of ping reaches done."""
        assert "done" not in walk.states
        assert len(walk.steps) <= 8

    @settings(
        suppress_health_check=[
            *settings().suppress_health_check,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ]
    )
    @given(st.data(), machines(with_actions=True))
    def test_random_machines(self, data: st.DataObject, machine: Machine[str]) -> None:
        """On any valid machine a walk replays, and stops at an action only when it must."""
        walk = data.draw(walks(machine, max_steps=10))
        stepper = walk.replay()
        if stepper.pending and len(walk.steps) < 10:
            # Only an action state whose every row is guarded can refuse all outcomes.
            assert all(row.guard is not None for row in machine.rows_from(stepper.state))
        for before, step in zip(walk.states, walk.steps, strict=False):
            assert step.outcome == (machine.state(before).action is not None)

    def test_walks_reach_every_state_of_the_flow(self) -> None:
        """Across examples the strategy explores the whole flow, finals included."""
        seen: set[str] = set()

        @settings(max_examples=200, database=None, derandomize=True)
        @given(walks(flow, context={"attempts": 0}, strategies={Rejected: st.just(Rejected("x"))}))
        def collect(walk: Walk[str]) -> None:
            seen.update(walk.states)

        collect()
        assert seen == {s.name for s in flow.states} - {"dead"}

    @given(st.data())
    def test_zero_steps_stay_at_the_start(self, data: st.DataObject) -> None:
        """With max_steps=0 a walk makes no move."""
        walk = data.draw(walks(ping, max_steps=0))
        assert (walk.steps, walk.states) == ((), ("idle",))

    def test_a_negative_max_steps_is_refused(self) -> None:
        """max_steps under 0 is refused, named."""
        with pytest.raises(ValueError, match=r"^max_steps is -1; give 0 or more$"):
            walks(ping, max_steps=-1)

    def test_replay_judges_guards_against_the_walks_context(self) -> None:
        """A fresh replay gets the walk's context: ping's guard reads `ok` there."""
        walk = Walk(
            ping,
            {"ok": False},
            (Step("start", outcome=False), Step("finish", outcome=False)),
            ("idle", "busy", "done"),
        )
        with pytest.raises(GuardRejected):
            walk.replay()

    def test_steps_show_what_they_are(self) -> None:
        """A step reads as an outcome or an event and its value (hypothesis prints walks)."""
        assert repr(Step("start", outcome=False)) == "event 'start'"
        assert repr(Step(Rejected("x"), outcome=True)) == "outcome Rejected(reason='x')"


class TestValues:
    """values_for makes values that select a trigger."""

    @given(values_for("start"))
    def test_plain_trigger(self, value: object) -> None:
        """An event name or Enum member is its own value."""
        assert value == "start"

    @given(values_for(Rejected))
    def test_class_trigger_is_built(self, value: object) -> None:
        """A class is built by st.builds, arguments inferred from annotations."""
        assert isinstance(value, Rejected)

    @given(values_for(Rejected, {Rejected: st.just(Rejected("given"))}))
    def test_class_trigger_with_a_strategy(self, value: object) -> None:
        """A strategy given for the class is used instead."""
        assert value == Rejected("given")
