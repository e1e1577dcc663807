"""The Stepper drives real runs one row at a time with scripted action outcomes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fsm import CallbackError, GuardRejected, InvalidEvent, Machine, State, UnhandledOutcome
from fsm.examples import Updated, UserNotFound, ping, update
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

    def test_exception_class(self) -> None:
        """An exception class is raised as an instance of it."""
        stepper = Stepper(flow).script("received", PublishDown)
        with pytest.raises(CallbackError) as caught:
            stepper.step()
        assert isinstance(caught.value.error, PublishDown)


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
        with pytest.raises(ScriptError, match=r"nothing scripted for state 'received'"):
            Stepper(flow).step()

    def test_send_while_an_action_is_pending(self) -> None:
        """send() before step() on an action state is a mistake, said plainly."""
        with pytest.raises(ScriptError, match=r"action save still to run; call step\(\)"):
            Stepper(flow).send("retry")

    def test_step_without_action(self) -> None:
        """step() on a waiting state says to use send()."""
        with pytest.raises(ScriptError, match="no action to step"):
            Stepper(ping).step()

    def test_script_unknown_state(self) -> None:
        """Scripting a state the machine lacks lists the states."""
        with pytest.raises(ScriptError, match="has no state 'nowhere'; states: 'received'"):
            Stepper(flow).script("nowhere", Saved())

    def test_script_state_without_action(self) -> None:
        """Scripting a state without action lists those that have one."""
        with pytest.raises(ScriptError, match="states with actions: 'received', 'saved'"):
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
