"""The Stepper drives real runs one row at a time with scripted action outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fsm import (
    BindError,
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    RunError,
    State,
    UnhandledOutcome,
)
from fsm.examples import (
    Authorized,
    Captured,
    CaptureFailed,
    Declined,
    PaymentSteps,
    Updated,
    UserNotFound,
    payment,
    ping,
    update,
)
from fsm.testing import ScriptError, Stepper

from .machines import PublishDown, PublishFailed, Rejected, Saved, Sent, calls, flow


class TestStepping:
    """step() replaces one action call and follows exactly one row."""

    def test_step_follows_one_row_and_runs_no_real_action(self) -> None:
        """A scripted outcome moves one row; the target's action is not run."""
        before = len(calls)
        stepper = Stepper(flow).script("received", Saved())
        transition = stepper.step()
        assert (transition.source, transition.trigger, transition.target) == (
            "received",
            Saved,
            "saved",
        )
        assert stepper.state == "saved"
        assert stepper.pending
        assert len(calls) == before

    def test_outcomes_are_consumed_in_order(self) -> None:
        """Several outcomes for one state are used one per visit."""
        stepper = Stepper(
            flow,
            {"attempts": 0},
            outcomes={"received": [Saved()], "saved": [PublishFailed(), Sent()]},
        )
        stepper.step()
        stepper.step()
        stepper.send("retry")
        stepper.step()
        stepper.assert_path(["received", "saved", "publish_failed", "saved", "published"])
        stepper.assert_finished()
        assert stepper.remaining() == {}

    def test_inline_outcome(self) -> None:
        """step(outcome) gives the result without a script."""
        stepper = Stepper(flow)
        stepper.step(Rejected("frozen account"))
        assert stepper.expect("rejected").finished
        assert stepper.history[-1].outcome == Rejected("frozen account")

    def test_settle_steps_until_the_run_waits(self) -> None:
        """settle() follows scripted outcomes as the engine would, then stops at a wait."""
        stepper = Stepper(flow, outcomes={"received": [Saved()], "saved": [PublishFailed()]})
        done = stepper.settle()
        assert [t.target for t in done] == ["saved", "publish_failed"]
        assert not stepper.pending

    def test_follow_mixes_outcomes_and_events(self) -> None:
        """follow() steps where an action is pending and sends where the run waits."""
        stepper = Stepper(flow, {"attempts": 5})
        stepper.follow(Saved(), PublishFailed(), "retry")
        stepper.assert_path(["received", "saved", "publish_failed", "dead"])

    def test_start_mid_flow(self) -> None:
        """at= starts the stepper in a given state, as a restored run."""
        stepper = Stepper(flow, {"attempts": 1}, at="publish_failed")
        stepper.send("retry")
        stepper.assert_path(["publish_failed", "saved"])

    def test_start_mid_flow_with_an_id_listeners_and_steps(self) -> None:
        """A run started mid-flow keeps the id, listeners and collaborator it is given."""
        seen: list[str] = []
        gateway = Gateway()
        stepper = Stepper(
            payment,
            at="authorized",
            run_id="p-9",
            steps=gateway,
            real=["capture"],
            listeners=[lambda run, t: seen.append(t.target)],
        )
        stepper.step()
        assert (stepper.run.id, stepper.state, seen) == ("p-9", "captured", ["captured"])
        assert gateway.calls == [("capture", "p-9:1")]
        assert Stepper(payment, at="authorized").run.id  # a new id when none is given

    def test_real_listeners_see_the_steps(self) -> None:
        """Listeners passed to the stepper are called as for any run."""
        seen: list[str] = []
        stepper = Stepper(ping, listeners=[lambda run, t: seen.append(t.target)])
        stepper.follow("start", "pause")
        assert seen == ["busy", "idle"]


class TestScriptedFailures:
    """A scripted exception fails like a real action: CallbackError, run stays."""

    def test_exception_instance(self) -> None:
        """The scripted exception is the CallbackError's cause; the state does not change."""
        stepper = Stepper(flow, outcomes={"received": [Saved()], "saved": [PublishDown("x")]})
        stepper.step()
        with pytest.raises(CallbackError) as caught:
            stepper.step()
        assert isinstance(caught.value.__cause__, PublishDown)
        assert caught.value.kind == "action"
        assert caught.value.name == "publish"
        assert stepper.state == "saved"
        assert (caught.value.machine, caught.value.run_id, caught.value.state) == (
            "flow",
            stepper.run.id,
            "saved",
        )

    def test_exception_class(self) -> None:
        """An exception class is raised as an instance of it."""
        stepper = Stepper(flow).script("received", PublishDown)
        with pytest.raises(CallbackError) as caught:
            stepper.step()
        assert isinstance(caught.value.error, PublishDown)


def pick(context: dict[str, Any]) -> int:
    """An action returning one of a family of values (never called: it is scripted)."""
    return 1


class TestHonesty:
    """The real table, guards and outcome families decide, not the test."""

    def test_guard_is_the_real_one(self) -> None:
        """With attempts used up the guarded row is skipped for the fallback row."""
        stepper = Stepper(flow, {"attempts": 3}, at="publish_failed")
        stepper.send("retry")
        stepper.expect("dead")

    def test_all_guards_refusing(self) -> None:
        """When every guard refuses, GuardRejected comes from the engine."""
        stepper = Stepper(ping, {"ok": False})
        stepper.send("start")
        with pytest.raises(GuardRejected):
            stepper.send("finish")
        stepper.expect("busy")

    def test_outcome_outside_the_family_is_refused(self) -> None:
        """Scripting a value the action's annotation cannot return fails at once."""
        with pytest.raises(ScriptError, match=r"action save cannot return Sent\(\)"):
            Stepper(flow).script("received", Sent())

    def test_a_value_outside_the_declared_outcomes_is_refused(self) -> None:
        """outcomes= of values: an equal value of another type (True for 1) is not one."""
        machine = Machine(
            "m",
            states=[
                State("a", initial=True, action=pick, outcomes=(1, 2)),
                State("b", final=True),
            ],
            transitions=[("a", 1, "b"), ("a", 2, "b")],
        )
        Stepper(machine).script("a", 1, 2)
        with pytest.raises(ScriptError) as caught:
            Stepper(machine).script("a", True)
        assert str(caught.value) == (
            "state 'a': action pick cannot return True; it returns one of 1, 2"
        )

    def test_unhandled_outcome_of_an_open_action(self) -> None:
        """An action with an open family (`-> str`): an outcome with no row is UnhandledOutcome."""

        def act(context: dict[str, Any]) -> str:
            return "ok"

        machine = Machine(
            "open",
            states=[State("a", initial=True, action=act), State("b", final=True)],
            transitions=[("a", "ok", "b")],
        )
        with pytest.raises(UnhandledOutcome):
            Stepper(machine).step("nope")

    def test_guard_that_raises_keeps_its_cause(self) -> None:
        """A failing guard surfaces as the engine's CallbackError, cause included."""

        def broken(run: object) -> bool:
            raise LookupError("flag store down")

        machine = Machine(
            "guarded",
            states=[State("a", initial=True), State("b", final=True)],
            transitions=[("a", "go", "b", broken)],
        )
        with pytest.raises(CallbackError) as caught:
            Stepper(machine).send("go")
        assert isinstance(caught.value.__cause__, LookupError)
        assert caught.value.kind == "guard"

    def test_unknown_event(self) -> None:
        """An event with no row raises InvalidEvent naming the allowed triggers."""
        with pytest.raises(InvalidEvent) as caught:
            Stepper(ping).send("finish")
        assert caught.value.allowed == ("start",)


class TestMessages:
    """Failures show the path so far and the allowed triggers."""

    def test_expect_shows_path_and_allowed(self) -> None:
        """expect() names both states, the path and what is allowed."""
        stepper = Stepper(ping)
        stepper.send("start")
        with pytest.raises(AssertionError) as caught:
            stepper.expect("done")
        assert str(caught.value) == (
            "expected the run of 'ping' in 'done', it is in 'busy'\n"
            "path so far: 'idle' --'start'--> 'busy'\n"
            "allowed from 'busy': 'pause', 'finish'"
        )

    def test_assert_path_shows_both_paths(self) -> None:
        """assert_path() prints the expected and the actual path."""
        stepper = Stepper(ping).follow("start")
        with pytest.raises(AssertionError, match="expected the path 'idle' -> 'done'"):
            stepper.assert_path(["idle", "done"])

    def test_engine_errors_carry_a_note(self) -> None:
        """An engine error keeps its type and gains a note with the path."""
        stepper = Stepper(ping).follow("start")
        with pytest.raises(InvalidEvent) as caught:
            stepper.send("start")
        assert "path so far: 'idle' --'start'--> 'busy'" in caught.value.__notes__[0]

    def test_nothing_scripted(self) -> None:
        """Stepping with no script says which state and how to script it."""
        with pytest.raises(ScriptError) as caught:
            Stepper(flow).step()
        assert str(caught.value) == (
            "nothing scripted for state 'received' (action save); "
            "use script('received', outcome) or step(outcome)"
        )

    def test_send_while_an_action_is_pending(self) -> None:
        """An event sent before the action ran is the engine's InvalidEvent, as for a run."""
        with pytest.raises(InvalidEvent, match="runs action save and takes no events") as caught:
            Stepper(flow).send("retry")
        assert caught.value.state == "received"
        assert "action save not stepped yet (step() runs it)" in caught.value.__notes__[0]

    def test_step_without_action(self) -> None:
        """step() on a waiting or finished state is the engine's RunError: nothing to call."""
        with pytest.raises(RunError, match="state 'idle' has no action to call"):
            Stepper(ping).step()
        with pytest.raises(RunError, match="state 'done' has no action to call"):
            Stepper(ping, at="done").step()

    def test_script_unknown_state(self) -> None:
        """Scripting a state or action the machine lacks lists states and actions."""
        with pytest.raises(
            ScriptError,
            match=r"has no state or action 'nowhere'; states: 'received', .*"
            r"states with actions: 'received' \(save\), 'saved' \(publish\)",
        ):
            Stepper(flow).script("nowhere", Saved())

    def test_script_state_without_action(self) -> None:
        """Scripting a state without action lists those that have one."""
        with pytest.raises(ScriptError, match=r"states with actions: 'received' \(save\), 'saved'"):
            Stepper(flow).script("publish_failed", Saved())


class TestFixture:
    """The plugin's fsm_stepper fixture makes Steppers."""

    def test_fsm_stepper(self, fsm_stepper: Callable[..., Stepper[str]]) -> None:
        """The factory takes the Stepper's arguments."""
        stepper = fsm_stepper(flow, outcomes={"received": [Rejected("no")]})
        stepper.step()
        stepper.expect("rejected")


class TestRealActionsAndLeftovers:
    """Pure actions may run for real; leftover scripts can be checked."""

    def test_real_action(self) -> None:
        """A state listed in real= runs its real action when nothing is scripted."""
        stepper = Stepper(update, {"user_id": 4}, real=["received"])
        stepper.step()
        stepper.expect("failed")
        assert stepper.history[-1].outcome == UserNotFound(4)

    def test_script_wins_over_real(self) -> None:
        """A scripted outcome is used before the real action."""
        stepper = Stepper(update, real=["received"], outcomes={"received": [Updated()]})
        stepper.step()
        stepper.expect("updated")

    def test_real_action_failing(self) -> None:
        """A real action that raises fails like in the engine."""

        def broken(context: dict[str, Any]) -> str:
            raise KeyError("user")

        machine = Machine(
            "broken",
            states=[State("a", initial=True, action=broken), State("b", final=True)],
            transitions=[("a", "ok", "b")],
        )
        with pytest.raises(CallbackError) as caught:
            Stepper(machine, real=["a"]).step()
        assert isinstance(caught.value.error, KeyError)

    def test_leftover_script(self) -> None:
        """assert_script_used names what was never consumed."""
        stepper = Stepper(flow, outcomes={"received": [Saved()], "saved": [Sent()]})
        stepper.step()
        with pytest.raises(AssertionError, match=r"never used: 'saved': Sent\(\)"):
            stepper.assert_script_used()
        stepper.step()
        stepper.assert_script_used()


class Gateway:
    """A card gateway fake that records its calls: the collaborator a real run would get."""

    def __init__(self, captures: list[Captured | CaptureFailed] | None = None) -> None:
        self.calls: list[tuple[str, str | None]] = []
        self.captures = list(captures or [Captured()])

    def authorize(self, context: dict[str, Any]) -> Authorized | Declined:
        self.calls.append(("authorize", None))
        return Authorized() if context.get("amount", 0) <= 100 else Declined()

    def capture(self, context: dict[str, Any], key: str) -> Captured | CaptureFailed:
        self.calls.append(("capture", key))
        context["attempts"] = context.get("attempts", 0) + 1
        return self.captures.pop(0)


class TestCollaborator:
    """Scripts name a state or an action; real= runs the bound collaborator's methods."""

    def test_script_by_action_name_serves_every_state_running_it(self) -> None:
        """Outcomes scripted for 'capture' are used wherever capture runs, in order."""
        stepper = Stepper(
            payment,
            outcomes={"authorize": [Authorized()], "capture": [CaptureFailed(), Captured()]},
        )
        stepper.step()
        stepper.step()
        stepper.send("retry")
        stepper.step()
        stepper.assert_path(["created", "authorized", "capture_failed", "authorized", "captured"])
        stepper.assert_script_used()

    def test_script_by_the_protocol_method(self) -> None:
        """The protocol's method itself is a key; remaining() shows it as given."""
        stepper = Stepper(payment).script(PaymentSteps.authorize, Declined(), Authorized())
        stepper.step()
        stepper.expect("declined")
        assert stepper.remaining() == {PaymentSteps.authorize: [Authorized()]}
        with pytest.raises(AssertionError, match=r"never used: authorize: Authorized\(\)"):
            stepper.assert_script_used()

    def test_a_state_script_comes_before_its_action_script(self) -> None:
        """Scripted for both the state and its action, the state's own outcome is used first."""
        stepper = Stepper(
            payment,
            {"attempts": 0},
            outcomes={"capture": [Captured()], "authorized": [CaptureFailed()]},
            at="authorized",
        )
        stepper.step()
        stepper.expect("capture_failed").send("retry")
        stepper.step()
        stepper.expect("captured")

    def test_action_scripts_are_checked_against_its_family(self) -> None:
        """An outcome the protocol method's annotation cannot return is refused."""
        with pytest.raises(ScriptError, match=r"action capture cannot return Declined\(\)"):
            Stepper(payment).script("capture", Declined())

    def test_real_collaborator_for_some_actions(self) -> None:
        """real=['authorize'] calls the object's method; capture stays scripted."""
        gateway = Gateway()
        stepper = Stepper(
            payment,
            {"amount": 40},
            steps=gateway,
            real=["authorize"],
            outcomes={"capture": [CaptureFailed()]},
        )
        stepper.step()
        stepper.step()
        stepper.expect("capture_failed")
        assert gateway.calls == [("authorize", None)]
        assert stepper.history[0].outcome == Authorized()

    def test_real_external_action_gets_the_step_key(self) -> None:
        """An external action run for real is called with the context and the step's key."""
        gateway = Gateway([CaptureFailed(), Captured()])
        stepper = Stepper(payment, steps=gateway, real=[PaymentSteps.capture], run_id="r1")
        stepper.step(Authorized())
        stepper.step()
        stepper.send("retry")
        stepper.step()
        assert gateway.calls == [("capture", "r1:2"), ("capture", "r1:4")]
        assert stepper.context["attempts"] == 2
        stepper.expect("captured")

    def test_real_collaborator_failing(self) -> None:
        """A collaborator's method that raises fails the step as CallbackError; the run stays."""

        class Down(Gateway):
            def authorize(self, context: dict[str, Any]) -> Authorized | Declined:
                raise ConnectionError("issuer unreachable")

        stepper = Stepper(payment, steps=Down(), real=["created"])
        with pytest.raises(CallbackError) as caught:
            stepper.step()
        assert isinstance(caught.value.__cause__, ConnectionError)
        assert caught.value.name == "authorize"
        stepper.expect("created")

    def test_real_step_action_without_steps(self) -> None:
        """Running a protocol method for real with no collaborator is the engine's BindError."""
        stepper = Stepper(payment, real=["authorize"])
        with pytest.raises(BindError, match="runs authorize of PaymentSteps") as caught:
            stepper.step()
        assert caught.value.missing == ("authorize",)

    def test_an_incomplete_collaborator_is_refused(self) -> None:
        """The steps object is bound as for a run: missing methods are one BindError."""

        class HalfGateway:
            def authorize(self, context: dict[str, Any]) -> Authorized | Declined:
                return Authorized()

        with pytest.raises(BindError) as caught:
            Stepper(payment, steps=HalfGateway())
        assert caught.value.missing == ("capture",)

    def test_a_name_for_two_actions_is_ambiguous(self) -> None:
        """A name two different callables share must be scripted by state or callable."""

        def go(context: dict[str, Any]) -> str:
            return "ok"

        def other_go(context: dict[str, Any]) -> str:
            return "ok"

        other_go.__name__ = "go"
        machine = Machine(
            "twice",
            states=[
                State("a", initial=True, action=go),
                State("b", action=other_go),
                State("c", final=True),
            ],
            transitions=[("a", "ok", "b"), ("b", "ok", "c")],
        )
        with pytest.raises(ScriptError) as caught:
            Stepper(machine).script("go", "ok")
        assert str(caught.value) == (
            "'go' names several actions of 'twice'; script each by its state or by the "
            "callable itself"
        )
        Stepper(machine).script(go, "ok").script("b", "ok").settle()


class TestTake:
    """take=row forces the guards so that row fires; asked records what guards answered."""

    RETRY, GIVE_UP = payment.transitions[4], payment.transitions[5]

    def test_take_the_fallback_row(self) -> None:
        """Forcing the unguarded fallback: attempts_left refuses without being called."""
        stepper = Stepper(payment, {"attempts": 0}, at="capture_failed")
        stepper.send("retry", take=self.GIVE_UP)
        stepper.expect("voided")
        assert stepper.asked == [(self.RETRY, False)]

    def test_take_the_guarded_row(self) -> None:
        """Forcing the guarded row: it passes although the real guard would refuse."""
        stepper = Stepper(payment, {"attempts": 9}, at="capture_failed")
        stepper.send("retry", take=self.RETRY)
        stepper.expect("authorized")
        assert stepper.asked == [(self.RETRY, True)]

    def test_nothing_asked_before_a_move(self) -> None:
        """A new stepper has asked no guard yet."""
        assert Stepper(payment).asked == []

    def test_asked_records_the_real_guards(self) -> None:
        """Without take= the real guard is called and its answer recorded."""
        stepper = Stepper(payment, {"attempts": 9}, at="capture_failed")
        stepper.send("retry")
        stepper.expect("voided")
        assert stepper.asked == [(self.RETRY, False)]

    def test_take_on_an_outcome(self) -> None:
        """take= works on a stepped outcome too (here a row with no rival)."""
        stepper = Stepper(payment)
        stepper.step(Declined(), take=payment.transitions[1])
        stepper.expect("declined")
        assert stepper.asked == []

    def test_take_a_row_the_value_does_not_try(self) -> None:
        """A row that is not among those the value tries is a script mistake; nothing moves."""
        stepper = Stepper(payment, at="capture_failed")
        with pytest.raises(ScriptError) as caught:
            stepper.send("retry", take=payment.transitions[1])
        assert str(caught.value) == (
            "take=('created', Declined, 'declined') is not a row 'retry' tries from "
            f"'capture_failed'; it tries: {self.RETRY.describe()}, {self.GIVE_UP.describe()}"
        )
        stepper.expect("capture_failed")

    def test_take_a_row_the_outcome_does_not_try(self) -> None:
        """The same mistake on a stepped outcome: its rows are the outcome's, not events'."""
        stepper = Stepper(payment)
        with pytest.raises(ScriptError, match="is not a row Declined\\(\\) tries from 'created'"):
            stepper.step(Declined(), take=payment.transitions[0])
        assert stepper.asked == []

    def test_take_when_moving_an_outcome(self) -> None:
        """move(outcome, take=row) forces the guards as step does."""
        machine = Machine(
            "m",
            states=[
                State("a", initial=True, action=lambda ctx: "x", outcomes=("x",)),
                State("b", final=True),
                State("c", final=True),
            ],
            transitions=[("a", "x", "b", lambda run: False), ("a", "x", "c")],
        )
        stepper = Stepper(machine)
        stepper.move("x", take=machine.transitions[0])
        stepper.expect("b")


class TestMoreMessages:
    """The Stepper's own messages, in full."""

    def test_repr(self) -> None:
        """repr names the machine and the state."""
        assert repr(Stepper(ping)) == "<Stepper of 'ping' in 'idle'>"

    def test_leftovers_of_several_keys(self) -> None:
        """Each key's leftovers are listed, separated."""
        stepper = Stepper(payment, outcomes={"created": [Declined(), Authorized()]})
        stepper.script("capture", Captured())
        with pytest.raises(AssertionError) as caught:
            stepper.assert_script_used()
        assert str(caught.value).splitlines()[0] == (
            "scripted outcomes never used: 'created': Declined(), Authorized(); capture: Captured()"
        )

    def test_assert_path_and_finished(self) -> None:
        """Both paths are shown; an unfinished run names its state; a final one allows nothing."""
        stepper = Stepper(ping).follow("start")
        with pytest.raises(AssertionError) as caught:
            stepper.assert_path(["idle"])
        assert str(caught.value).splitlines()[:2] == [
            "expected the path 'idle'",
            "     got the path 'idle' -> 'busy'",
        ]
        with pytest.raises(AssertionError) as caught:
            stepper.assert_finished()
        assert str(caught.value).splitlines()[0] == (
            "expected the run of 'ping' to be finished, it is in 'busy'"
        )
        done = Stepper(ping, at="done")
        assert done.describe() == "path so far: 'done'\nallowed from 'done': nothing (final)"

    def test_keys_of_a_machine_without_actions(self) -> None:
        """Scripting a machine with no action says so; an unhashable key is no state."""
        with pytest.raises(ScriptError) as caught:
            Stepper(ping).script("idle", "x")
        assert str(caught.value) == (
            "state 'idle' of 'ping' has no action to script; states with actions: none"
        )
        with pytest.raises(ScriptError, match=r"has no state or action \['idle'\]"):
            Stepper(ping).script(["idle"], "x")
