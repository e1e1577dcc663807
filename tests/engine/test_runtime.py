"""Runtime rules: dispatch, outcomes, guards, errors, Enum states, listeners, restore."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from fsm import (
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    RestoreError,
    Run,
    RunError,
    RunFinished,
    State,
    Transition,
    UnhandledOutcome,
)
from fsm.examples import ping


class Light(enum.Enum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"


@dataclass(frozen=True)
class Failure:
    reason: str


@dataclass(frozen=True)
class Timeout(Failure): ...


@dataclass(frozen=True)
class Done: ...


class TestEvents:
    """Sending named events."""

    def test_send_returns_the_run(self) -> None:
        """send() returns the run so calls can be chained."""
        run = ping.start()
        assert run.send("start").send("pause").state == "idle"

    def test_unknown_event_names_allowed_ones(self) -> None:
        """An event with no row raises InvalidEvent naming the allowed events and context."""
        run = ping.start(run_id="r1")
        with pytest.raises(InvalidEvent) as caught:
            run.send("finish")
        error = caught.value
        assert (error.event, error.allowed, error.state, error.run_id) == (
            "finish",
            ("start",),
            "idle",
            "r1",
        )
        assert str(error) == (
            "event 'finish' is not allowed here; allowed: 'start' "
            "(machine 'ping', run r1, state 'idle')"
        )
        assert run.state == "idle" and run.history == []

    def test_finished_run_refuses_events(self) -> None:
        """A run in a final state raises RunFinished."""
        run = ping.start().send("start").send("finish")
        with pytest.raises(RunFinished, match="event 'start' is refused: the run is finished"):
            run.send("start")

    def test_unhashable_event_is_refused_cleanly(self) -> None:
        """An unhashable event is matched by type only and refused with InvalidEvent."""
        with pytest.raises(InvalidEvent):
            ping.start().send(["start"])

    def test_event_objects_match_their_class(self) -> None:
        """An event instance fires the row of its class and is kept as the outcome."""
        m = Machine(
            "m",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", Done, "b")],
        )
        run = m.start().send(Done())
        assert run.state == "b" and run.outcome == Done()
        assert run.history == [Transition("a", Done, "b", Done())]

    def test_allowed_lists_current_triggers(self) -> None:
        """allowed names the triggers of the current state in table order."""
        assert ping.start().send("start").allowed == ("pause", "finish")


class TestGuards:
    """Guards choose among rows with the same source and trigger."""

    def make(self) -> Machine[str]:
        def big(run: Run[Any]) -> bool:
            return bool(run.context["n"] > 10)

        def small(run: Run[Any]) -> bool:
            return bool(run.context["n"] > 0)

        return Machine(
            "guarded",
            states=[State("a", initial=True), State("big", final=True), State("small", final=True)],
            transitions=[("a", "go", "big", big), ("a", "go", "small", small)],
        )

    def test_first_passing_guard_wins(self) -> None:
        """Rows are tried in table order; the first whose guard passes fires."""
        machine = self.make()
        assert machine.start({"n": 50}).send("go").state == "big"
        assert machine.start({"n": 5}).send("go").state == "small"

    def test_no_guard_passes(self) -> None:
        """When every guard refuses, GuardRejected names the guards and the run stays."""
        run = self.make().start({"n": 0}, run_id="g")
        with pytest.raises(GuardRejected) as caught:
            run.send("go")
        assert caught.value.guards == ("big", "small")
        assert "no row fired for 'go': every guard refused (big -> 'big', small -> 'small')" in str(
            caught.value
        )
        assert run.state == "a" and run.history == []

    def test_guard_that_raises(self) -> None:
        """A guard that raises leaves the run in place and names itself."""

        def broken(run: Run[Any]) -> bool:
            raise KeyError("n")

        m = Machine(
            "m",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", "go", "b", broken)],
        )
        run = m.start()
        with pytest.raises(CallbackError) as caught:
            run.send("go")
        assert (caught.value.kind, caught.value.name, caught.value.state) == (
            "guard",
            "broken",
            "a",
        )
        assert isinstance(caught.value.__cause__, KeyError)
        assert run.state == "a" and run.history == []


class TestActions:
    """Actions run on entry and their outcomes drive the run."""

    def test_most_specific_class_wins(self) -> None:
        """A Timeout outcome fires the Timeout row, not its base Failure's."""

        def act(context: dict[str, Any]) -> Done | Failure:
            return context["result"]  # type: ignore[no-any-return]

        m = Machine(
            "m",
            states=[
                State("work", initial=True, action=act),
                State("ok", final=True),
                State("failed", final=True),
                State("timed_out", final=True),
            ],
            transitions=[
                ("work", Failure, "failed"),
                ("work", Timeout, "timed_out"),
                ("work", Done, "ok"),
            ],
        )
        assert m.start({"result": Timeout("slow")}).state == "timed_out"
        assert m.start({"result": Failure("no")}).state == "failed"
        assert m.start({"result": Done()}).state == "ok"

    def test_chain_of_actions_runs_by_itself(self) -> None:
        """Actions chain until a state waits for an event."""
        calls: list[str] = []

        def one(context: dict[str, Any]) -> Done:
            calls.append("one")
            return Done()

        def two(context: dict[str, Any]) -> Done:
            calls.append("two")
            return Done()

        m = Machine(
            "chain",
            states=[
                State("a", initial=True),
                State("b", action=one),
                State("c", action=two),
                State("wait"),
                State("end", final=True),
            ],
            transitions=[
                ("a", "go", "b"),
                ("b", Done, "c"),
                ("c", Done, "wait"),
                ("wait", "close", "end"),
            ],
        )
        run = m.start()
        assert calls == [] and run.state == "a"
        run.send("go")
        assert calls == ["one", "two"] and run.state == "wait"
        assert [t.target for t in run.history] == ["b", "c", "wait"]

    def test_action_that_raises_leaves_run_in_its_state(self) -> None:
        """A raising action records nothing; advance() tries it again."""
        attempts: list[int] = []

        def flaky(context: dict[str, Any]) -> Done:
            attempts.append(1)
            if len(attempts) == 1:
                raise ConnectionError("db down")
            return Done()

        m = Machine(
            "flaky",
            states=[State("a", initial=True, action=flaky), State("b", final=True)],
            transitions=[("a", Done, "b")],
        )
        run = m.create(run_id="f1")
        with pytest.raises(CallbackError) as caught:
            run.advance()
        error = caught.value
        assert (error.machine, error.run_id, error.state, error.kind) == (
            "flaky",
            "f1",
            "a",
            "action",
        )
        assert "action flaky raised ConnectionError: db down" in str(error)
        assert run.state == "a" and run.history == [] and run.outcome is None
        assert run.advance().state == "b"

    def test_unhandled_outcome(self) -> None:
        """An action returning an outcome outside its declared family raises UnhandledOutcome."""
        m = Machine(
            "m",
            states=[
                State("a", initial=True, action=lambda ctx: "surprise", outcomes=(Done,)),
                State("b", final=True),
            ],
            transitions=[("a", Done, "b")],
        )
        run = m.create()
        with pytest.raises(UnhandledOutcome) as caught:
            run.advance()
        assert str(caught.value).startswith(
            "action <lambda> returned 'surprise', which no row from here handles; handled: Done"
        )
        assert (caught.value.outcome, caught.value.handled) == ("surprise", (Done,))
        assert run.state == "a"

    def test_events_cannot_skip_an_action(self) -> None:
        """A state with an action takes no events, not even its outcomes sent from outside."""

        def act(context: dict[str, Any]) -> Done:
            return Done()

        m = Machine(
            "m",
            states=[State("a", initial=True, action=act), State("b", final=True)],
            transitions=[("a", Done, "b")],
        )
        run = m.create()
        with pytest.raises(InvalidEvent, match="runs action act and takes no events; call advance"):
            run.send(Done())
        assert run.state == "a" and run.advance().state == "b"

    def test_failing_action_after_an_event_keeps_the_event(self) -> None:
        """send() whose next action raises keeps the event's transition; the error says where."""

        def boom(context: dict[str, Any]) -> Done:
            raise RuntimeError("boom")

        m = Machine(
            "m",
            states=[State("a", initial=True), State("b", action=boom), State("c", final=True)],
            transitions=[("a", "go", "b"), ("b", Done, "c")],
        )
        run = m.start()
        with pytest.raises(CallbackError) as caught:
            run.send("go")
        assert caught.value.state == "b" and run.state == "b"
        assert [t.trigger for t in run.history] == ["go"]

    def test_action_loop_is_bounded(self) -> None:
        """An action that keeps choosing its own loop stops advance() with a RunError."""

        def again(context: dict[str, Any]) -> Literal["again", "done"]:
            return "again"

        m = Machine(
            "loop",
            states=[State("a", initial=True, action=again), State("b", final=True)],
            transitions=[("a", "again", "a"), ("a", "done", "b")],
        )
        with pytest.raises(RunError, match="advance\\(\\) followed 50 actions"):
            m.create().advance(max_steps=50)


class TestEnumStates:
    """States given as Enum members come back as Enum members."""

    def test_enum_states_round_trip(self) -> None:
        """The run's state and history hold the Enum members of the definition."""
        lamp: Machine[Light] = Machine(
            "lamp",
            states=[
                State(Light.OFF, initial=True),
                State(Light.ON),
                State(Light.BROKEN, final=True),
            ],
            transitions=[
                (Light.OFF, "switch", Light.ON),
                (Light.ON, "switch", Light.OFF),
                (Light.ON, "smash", Light.BROKEN),
            ],
        )
        run = lamp.start().send("switch")
        state: Light = run.state
        assert state is Light.ON
        run.send("smash")
        assert run.finished and run.history[-1] == Transition(
            Light.ON, "smash", Light.BROKEN, "smash"
        )


class TestListeners:
    """Listeners see every transition and can veto it."""

    def test_listener_receives_transitions(self) -> None:
        """Each transition reaches every listener, in order, after it is applied."""
        seen: list[tuple[str, object]] = []
        run = ping.start(listeners=[lambda r, t: seen.append((r.state, t.trigger))])
        run.send("start").send("finish")
        assert seen == [("busy", "start"), ("done", "finish")]

    def test_add_listener(self) -> None:
        """add_listener subscribes an existing run."""
        seen: list[Transition[str]] = []
        run = ping.start()
        run.add_listener(lambda r, t: seen.append(t))
        run.send("start")
        assert seen == [Transition("idle", "start", "busy", "start")]

    def test_later_listener_failure_undoes_for_all(self) -> None:
        """When the second listener raises, the transition the first one saw is undone."""
        seen: list[str] = []

        def second(run: Run[str], transition: Transition[str]) -> None:
            raise OSError("no")

        run = ping.start(listeners=[lambda r, t: seen.append(t.target), second])
        with pytest.raises(CallbackError, match="listener second"):
            run.send("start")
        assert seen == ["busy"] and run.state == "idle" and run.history == []

    def test_listener_cannot_move_the_run(self) -> None:
        """A listener that calls send() is refused and the run stays consistent."""

        def reenter(run: Run[str], transition: Transition[str]) -> None:
            if transition.trigger == "start":
                run.send("pause")

        run = ping.start(listeners=[reenter])
        with pytest.raises(CallbackError) as caught:
            run.send("start")
        assert isinstance(caught.value.error, RunError)
        assert "listeners may only observe" in str(caught.value.error)
        assert run.state == "idle" and run.history == []

    def test_listener_adding_a_listener(self) -> None:
        """A listener added during a notification hears from the next transition on."""
        late: list[str] = []

        def adder(run: Run[str], transition: Transition[str]) -> None:
            run.add_listener(lambda r, t: late.append(t.target))

        run = ping.start(listeners=[adder]).send("start")
        assert late == []
        run.send("pause")
        assert late == ["idle"]

    def test_listener_failure_undoes_the_transition(self) -> None:
        """A listener that raises undoes the transition: state, history and outcome."""

        def refuse(run: Run[str], transition: Transition[str]) -> None:
            if transition.trigger == "finish":
                raise OSError("disk full")

        run = ping.start(listeners=[refuse]).send("start")
        with pytest.raises(CallbackError, match="listener refuse raised OSError: disk full"):
            run.send("finish")
        assert run.state == "busy" and len(run.history) == 1 and run.outcome == "start"


class TestRestore:
    """Rebuilding a run from stored parts."""

    def test_restore_continues_where_it_stopped(self) -> None:
        """A restored run has its history and accepts the next event."""
        run = ping.restore("r9", "busy", {"ok": True}, [("idle", "start", "busy", "start")])
        assert run.id == "r9" and run.outcome == "start"
        assert run.send("finish").history[-1].target == "done"

    def test_restore_round_trips_a_history(self) -> None:
        """A run's own history restores it: Transitions are tuples."""
        run = ping.start().send("start").send("pause").send("start")
        again = ping.restore(run.id, run.state, run.context, run.history)
        assert again.history == run.history and again.state == "busy"

    @pytest.mark.parametrize(
        ("state", "history", "message"),
        [
            (
                "busy",
                [("idle", "start", "busy", None), ("idle", "start", "busy", None)],
                "record 1 leaves 'idle', but the run was in 'busy'",
            ),
            (
                "done",
                [("idle", "start", "busy", None)],
                "ends in 'busy', but the stored state is 'done'",
            ),
            ("busy", [("idle", "start")], "record 0 is ('idle', 'start'), not (source, trigger"),
            ("busy", [("idle", ["x"], "busy", None)], "record 0 is"),
            (["x"], [], "unknown state ['x']"),
        ],
    )
    def test_restore_refuses_a_broken_history(
        self, state: Any, history: list[Any], message: str
    ) -> None:
        """A history that is not one path of the table ending in `state` is refused."""
        with pytest.raises(RestoreError) as caught:
            ping.restore("r9", state, history=history)
        assert message in str(caught.value)

    def test_restore_mid_flow(self) -> None:
        """With no history a run can be restored at any state; a trimmed history may start late."""
        assert ping.restore("r1", "busy").send("finish").finished
        trimmed = ping.restore("r2", "idle", history=[("busy", "pause", "idle", "pause")])
        assert trimmed.history[0].source == "busy"

    def test_restore_unknown_state(self) -> None:
        """An unknown stored state is a RestoreError naming the run and the states."""
        with pytest.raises(
            RestoreError, match=r"run r9 .* unknown state 'gone'; states: 'idle', 'busy', 'done'"
        ):
            ping.restore("r9", "gone")

    def test_restore_unknown_row(self) -> None:
        """A stored transition the table lacks is a RestoreError."""
        with pytest.raises(RestoreError, match="no row 'idle' --'finish'--> 'done'"):
            ping.restore("r9", "done", history=[("idle", "finish", "done", None)])

    def test_state_lookup(self) -> None:
        """machine.state() finds a state, or names the ones there are."""
        assert ping.state("busy").name == "busy"
        with pytest.raises(KeyError, match="no state 'nope'; states: 'idle', 'busy', 'done'"):
            ping.state("nope")

    def test_machine_is_immutable(self) -> None:
        """A built machine refuses changes: every reader sees the validated table."""
        with pytest.raises(AttributeError, match="machine 'ping' is immutable"):
            ping.transitions = ()

    def test_context_is_copied(self) -> None:
        """The run works on its own copy of the given context."""
        given = {"ok": True}
        run = ping.start(given)
        run.context["ok"] = False
        assert given == {"ok": True}
