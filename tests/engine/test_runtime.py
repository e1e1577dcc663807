"""Runtime rules: dispatch, outcomes, guards, errors, Enum states, listeners, restore."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import pytest

from fsm import (
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    RestoreError,
    Rollback,
    Run,
    RunError,
    RunFinished,
    State,
    Transition,
    UnhandledOutcome,
    runtime,
)
from fsm.drive import Steps
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

    def test_a_failing_commit_hook_undoes_the_transition(self) -> None:
        """The commit hook (where a persistent runner stores the step) runs after the
        listeners; if it raises, the transition is undone and the error names the hook."""
        heard: list[str] = []

        def store(run: Run[str], transition: Transition[str]) -> Steps[None]:
            if transition.trigger == "finish":
                raise OSError("database gone")
            yield from ()

        run = ping.start(listeners=[lambda r, t: heard.append(t.target)]).send("start")
        run.commit_hook = store
        with pytest.raises(CallbackError) as caught:
            run.send("finish")
        assert str(caught.value).startswith("listener store raised OSError: database gone")
        assert isinstance(caught.value.error, OSError) and caught.value.state == "busy"
        assert run.state == "busy" and len(run.history) == 1 and run.outcome == "start"
        assert heard == ["busy", "done"]
        assert run.send("pause").state == "idle"


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


@dataclass(frozen=True)
class Charged: ...


@dataclass(frozen=True)
class Refused: ...


class TestExternalActions:
    """An external action is called with the context and the step's idempotency key."""

    @staticmethod
    def machine(calls: list[tuple[dict[str, Any], str]]) -> Machine[str]:
        """reserve (local) -> charge (external) -> done."""

        def reserve(context: dict[str, Any]) -> Literal["ok"]:
            return "ok"

        def charge(context: dict[str, Any], key: str) -> Charged | Refused:
            calls.append((dict(context), key))
            return Charged()

        return Machine(
            "charge",
            states=[
                State("reserving", initial=True, action=reserve),
                State("charging", action=charge, external=True),
                State("done", final=True),
                State("refused", final=True),
            ],
            transitions=[
                ("reserving", "ok", "charging"),
                ("charging", Charged, "done"),
                ("charging", Refused, "refused"),
            ],
        )

    def test_called_with_context_and_key(self) -> None:
        """The key is the run id and the number of the step the action takes."""
        calls: list[tuple[dict[str, Any], str]] = []
        run = self.machine(calls).start({"amount": 3}, run_id="r7")
        assert run.state == "done"
        assert calls == [({"amount": 3}, "r7:2")]
        assert run.step_key == "r7:3"

    def test_hold_external_stops_before_the_call(self) -> None:
        """With hold_external the run stops in front of the external action, uncalled."""
        calls: list[tuple[dict[str, Any], str]] = []
        run = self.machine(calls).create(run_id="r8")
        assert run.hold_external is False
        run.hold_external = True
        run.advance()
        assert (run.state, run.external, calls) == ("charging", True, [])
        assert run.call() == Charged()
        assert calls == [({}, "r8:2")]

    def test_a_local_action_is_not_external(self) -> None:
        """external is False in a state whose action is local, and in one without action."""
        run = self.machine([]).create()
        assert not run.external
        assert not ping.create().external

    def test_pending_says_whether_an_action_is_left_to_run(self) -> None:
        """pending is True in a state with an action (local or external), False in a wait
        and in a final state."""
        run = self.machine([]).create()
        run.hold_external = True
        assert run.pending
        run.advance()
        assert (run.state, run.pending) == ("charging", True)
        run.hold_external = False
        assert (run.advance().state, run.pending) == ("done", False)
        assert not ping.create().pending

    def test_advance_stops_at_a_wait_reached_on_its_last_allowed_step(self) -> None:
        """max_steps counts actions: reaching a wait or an external hold with none left is fine."""
        run = self.machine([]).create()
        assert run.advance(max_steps=2).state == "done"
        held = self.machine([]).create()
        held.hold_external = True
        assert held.advance(max_steps=1).state == "charging"
        with pytest.raises(RunError, match="followed 1 actions"):
            self.machine([]).create().advance(max_steps=1)


class TestRollback:
    """An action raising Rollback(outcome) takes the outcome's row after the hook."""

    @staticmethod
    def machine(external: bool) -> Machine[str]:
        def work(context: dict[str, Any], *key: str) -> Charged | Refused:
            raise Rollback(Refused())

        return Machine(
            "undo",
            states=[
                State("working", initial=True, action=work, external=external),
                State("done", final=True),
                State("refused", final=True),
            ],
            transitions=[("working", Charged, "done"), ("working", Refused, "refused")],
        )

    def test_local_action_calls_the_hook_then_takes_the_row(self) -> None:
        """The rollback hook runs once, then the outcome's row fires."""
        hooked: list[str] = []
        run = self.machine(external=False).create()

        def hook() -> Steps[None]:  # the runtime drives hooks as Steps (fsm.drive)
            hooked.append(run.state)
            yield from ()

        run.rollback_hook = hook
        run.advance()
        assert (run.state, run.outcome, hooked) == ("refused", Refused(), ["working"])

    def test_without_a_hook_the_row_is_taken(self) -> None:
        """An in-memory run has no hook: the outcome's row is simply taken."""
        run = self.machine(external=False).start()
        assert run.rollback_hook is None
        assert run.state == "refused"

    def test_external_action_has_nothing_to_roll_back(self) -> None:
        """The hook is not called for an external action: it wrote nothing."""
        hooked: list[str] = []
        run = self.machine(external=True).create()

        def hook() -> Steps[None]:
            hooked.append("called")
            yield from ()

        run.rollback_hook = hook
        run.advance()
        assert (run.state, hooked) == ("refused", [])

    def test_the_rollback_says_what_it_does(self) -> None:
        """Rollback keeps its outcome and says so."""
        rollback = Rollback(Refused())
        assert rollback.outcome == Refused()
        assert str(rollback) == "roll this step back, then take the row of Refused()"


class TestRunIdentity:
    """A run's id and how it reads."""

    def test_fresh_ids(self) -> None:
        """Without run_id each run gets its own id; with one it keeps it."""
        first, second = ping.create(), ping.create()
        assert first.id != second.id and len(first.id) == 32
        assert ping.create(run_id="mine").id == "mine"

    def test_repr(self) -> None:
        """repr names the run, its machine and its state."""
        assert repr(ping.create(run_id="r1")) == "<Run r1 of 'ping' in 'idle'>"


class TestErrorsCarryTheirContext:
    """Each engine error says what went wrong and keeps the values as attributes."""

    def test_call_without_action(self) -> None:
        """call() in a state without action is a RunError naming the state."""
        with pytest.raises(RunError) as caught:
            ping.create(run_id="r1").call()
        assert str(caught.value) == (
            "state 'idle' has no action to call (machine 'ping', run r1, state 'idle')"
        )
        assert (caught.value.machine, caught.value.run_id, caught.value.state) == (
            "ping",
            "r1",
            "idle",
        )

    def test_event_refused_by_an_action_state(self) -> None:
        """An event sent to a state with an action names the event and the action."""
        run = TestExternalActions.machine([]).create(run_id="r2")
        with pytest.raises(InvalidEvent) as caught:
            run.send("ok")
        assert caught.value.event == "ok" and caught.value.allowed == ()
        assert str(caught.value) == (
            "event 'ok' is refused: this state runs action reserve and takes no events; call "
            "advance() to run it (machine 'charge', run r2, state 'reserving')"
        )

    def test_outcome_in_a_state_without_action(self) -> None:
        """An outcome fired where no action runs is unhandled, by action '(none)'."""
        with pytest.raises(UnhandledOutcome) as caught:
            ping.create().fire("start", outcome=True)
        assert caught.value.action == "(none)" and caught.value.handled == ()

    def test_guard_error_keeps_the_error(self) -> None:
        """A guard that raises is a CallbackError holding the guard's exception."""
        failure = LookupError("flags down")

        def flag(run: Run[str]) -> bool:
            raise failure

        m = Machine(
            "m",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", "go", "b", flag)],
        )
        with pytest.raises(CallbackError) as caught:
            m.start().send("go")
        assert caught.value.error is failure and caught.value.name == "flag"

    def test_loop_message(self) -> None:
        """The loop error says what advance() did and asks the question."""
        run = TestExternalActions.machine([]).create(run_id="r3")
        with pytest.raises(RunError) as caught:
            run.advance(max_steps=1)
        assert str(caught.value) == (
            "advance() followed 1 actions and the run neither waits nor ends; is an action "
            "looping? (machine 'charge', run r3, state 'charging')"
        )

    def test_a_refused_listener_move_restores_the_outcome(self) -> None:
        """After a listener's refused move the run's outcome is the one before it."""

        def reenter(run: Run[str], transition: Transition[str]) -> None:
            if transition.trigger == "pause":
                run.send("start")

        run = ping.start(listeners=[reenter]).send("start")
        with pytest.raises(CallbackError) as caught:
            run.send("pause")
        assert str(caught.value.error).startswith(
            "a listener tried to move the run; listeners may only observe"
        )
        assert (run.state, run.outcome) == ("busy", "start")


class TestListenerSwallowingTheRefusal:
    """A listener that catches its own refused move leaves the transition it saw made."""

    def test_outcome_is_the_events(self) -> None:
        """The refused inner move is undone back to the outer transition, outcome included."""
        refusals: list[str] = []

        def meddle(run: Run[str], transition: Transition[str]) -> None:
            try:
                run.send("pause")
            except RunError as error:
                refusals.append(type(error).__name__)

        run = ping.start(listeners=[meddle]).send("start")
        assert (run.state, run.outcome, refusals) == ("busy", "start", ["RunError"])
        assert run.history == [Transition("idle", "start", "busy", "start")]


class TestMachineReaders:
    """What a built machine tells its readers."""

    @staticmethod
    def build() -> Machine[str]:
        """A fresh machine, built in the test (a module-level one is built before it)."""
        return Machine(
            "door",
            states=[State("shut", initial=True), State("open"), State("gone", final=True)],
            transitions=[
                ("shut", "open", "open"),
                ("open", "close", "shut"),
                ("open", "go", "gone"),
            ],
        )

    def test_state_lookup(self) -> None:
        """state() finds a state by name, or names the states there are."""
        door = self.build()
        assert door.state("open") is door.states[1]
        with pytest.raises(KeyError, match="no state 'x'; states: 'shut', 'open', 'gone'"):
            door.state("x")

    def test_immutable(self) -> None:
        """A built machine refuses changes, naming itself."""
        door = self.build()
        with pytest.raises(AttributeError, match="machine 'door' is immutable"):
            door.name = "other"

    def test_rows_from(self) -> None:
        """rows_from gives a state's rows in table order."""
        door = self.build()
        assert door.rows_from("open") == door.transitions[1:]
        assert door.rows_from("gone") == ()

    def test_fixed_row_only_where_the_state_alone_decides(self) -> None:
        """fixed_row: the row an event fires whatever the context (an outcome class matched
        by a subclass too), and None for a guard, an action to run in the target, a state
        that runs an action itself, or no row."""

        def check(context: dict[str, Any]) -> Done:
            return Done()

        machine = Machine(
            "orders",
            states=[
                State("waiting", initial=True),
                State("checking", action=check),
                State("done", final=True),
                State("failed", final=True),
            ],
            transitions=[
                ("waiting", Failure, "failed"),
                ("waiting", "go", "done"),
                ("waiting", "maybe", "done", lambda run: True),
                ("waiting", "check", "checking"),
                ("checking", Done, "done"),
            ],
        )
        failed = machine.fixed_row("waiting", Timeout("slow"))
        assert failed is machine.transitions[0]
        assert machine.fixed_row("waiting", "go") is machine.transitions[1]
        assert machine.fixed_row("waiting", "maybe") is None  # its guard must be asked
        assert machine.fixed_row("waiting", "check") is None  # checking runs an action
        assert machine.fixed_row("checking", Done()) is None  # an outcome, not an event
        assert machine.fixed_row("waiting", "nope") is None
        assert machine.fixed_row("done", "go") is None

    def test_observers_with_and_without_a_row_observer(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """runs_observed() says whether a registered observer must be given a Run for every
        row (it has no row observer); fired_without_run tells the row observers alone."""
        monkeypatch.setattr(runtime, "_observers", [])
        monkeypatch.setattr(runtime, "_row_observers", [])
        door = self.build()
        heard: list[str] = []
        rows: list[object] = []
        assert not runtime.runs_observed()
        stop_rows = runtime.observe(
            lambda run, t: heard.append("rows"), rows=lambda m, r: rows.append((m, r))
        )
        assert not runtime.runs_observed()
        stop = runtime.observe(lambda run, transition: heard.append(str(transition.target)))
        assert runtime.runs_observed()
        door.start().send("open")
        runtime.fired_without_run(door, door.transitions[2])
        stop()
        assert not runtime.runs_observed()
        stop_rows()
        runtime.fired_without_run(door, door.transitions[1])
        assert heard == ["rows", "open"]
        assert rows == [(door, door.transitions[2])]

    def test_repr(self) -> None:
        """repr counts states and rows."""
        assert repr(self.build()) == "<Machine 'door': 3 states, 3 rows>"

    def test_generic_subscription(self) -> None:
        """Machine[S] stands for Machine[S, Any]; Machine[S, P] is taken as given."""
        assert Machine[str].__args__ == (str, Any)  # type: ignore[attr-defined]
        assert Machine[str, int].__args__ == (str, int)  # type: ignore[attr-defined]


class TestRestoreWith:
    """restore() takes the stored context and the run's collaborators."""

    def test_context_and_steps(self) -> None:
        """The restored run sees its context and calls its steps object."""

        class Steps:
            def charge(self, context: dict[str, Any], key: str) -> Charged | Refused:
                return Charged() if context["amount"] < 10 else Refused()

        class ChargeSteps(Protocol):
            def charge(self, context: dict[str, Any], key: str) -> Charged | Refused: ...

        m = Machine(
            "m",
            steps=ChargeSteps,
            states=[
                State("charging", initial=True, action=ChargeSteps.charge, external=True),
                State("done", final=True),
                State("refused", final=True),
            ],
            transitions=[("charging", Charged, "done"), ("charging", Refused, "refused")],
        )
        run = m.restore("r1", "charging", {"amount": 50}, steps=Steps())
        assert run.context == {"amount": 50}
        assert run.advance().state == "refused"

    def test_history_from_an_unknown_state(self) -> None:
        """A record leaving a state the machine lacks is a RestoreError naming machine and row."""
        with pytest.raises(RestoreError) as caught:
            ping.restore("r1", "busy", history=[("nowhere", "start", "busy", None)])
        assert caught.value.machine == "ping" and caught.value.run_id == "r1"
        assert (
            caught.value.reason
            == "history record 0: the table has no row 'nowhere' --'start'--> 'busy'"
        )
