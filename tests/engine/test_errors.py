"""The engine's errors: messages name the context, which stays on the error as attributes."""

from __future__ import annotations

import pytest

from fsm import AsyncRequired, DefinitionError, GuardRejected, InvalidEvent, UnhandledOutcome
from fsm.outbox import LeaseLost
from fsm.ports import ConcurrencyError, RunExists, RunNotFound

WHERE = " (machine 'pay', run r1, state 'held')"
"""How a RunError of run r1 of machine pay, in state held, ends its message."""


def context(error: InvalidEvent | UnhandledOutcome | GuardRejected) -> tuple[object, ...]:
    """The machine, run and state an error carries."""
    return (error.machine, error.run_id, error.state)


class TestDefinitionError:
    """Every problem of a definition, one a line."""

    def test_one_problem(self) -> None:
        """A single problem is counted in the singular."""
        error = DefinitionError("pay", ["no initial state"])
        assert str(error) == "machine 'pay' has 1 problem:\n  - no initial state"

    def test_several_problems(self) -> None:
        """Several are counted in the plural and listed one a line."""
        error = DefinitionError("pay", ["no initial state", "state x is unreachable"])
        assert str(error) == (
            "machine 'pay' has 2 problems:\n  - no initial state\n  - state x is unreachable"
        )


class TestAsyncRequired:
    """The machine is named when it is known."""

    def test_with_and_without_a_machine(self) -> None:
        """With a machine the message starts with it; without one it is the message alone."""
        assert str(AsyncRequired("await it", machine="pay")) == "machine 'pay': await it"
        assert str(AsyncRequired("await it")) == "await it"


class TestRunErrors:
    """Errors of a run carry its machine, run and state, and say what would have worked."""

    def test_an_event_where_none_is_allowed(self) -> None:
        """InvalidEvent says so when the state accepts no event at all."""
        error = InvalidEvent("go", [], machine="pay", run_id="r1", state="held")
        assert str(error) == "event 'go' is not allowed here; allowed: none" + WHERE

    def test_an_unhandled_outcome(self) -> None:
        """UnhandledOutcome names the action, the outcome and what the state handles."""
        error = UnhandledOutcome(
            "late", ["ok", "failed"], "capture", machine="pay", run_id="r1", state="held"
        )
        assert context(error) == ("pay", "r1", "held")
        assert str(error) == (
            "action capture returned 'late', which no row from here handles; "
            "handled: 'ok', 'failed'" + WHERE
        )
        nothing = UnhandledOutcome("late", [], "capture", machine="pay", run_id="r1", state="x")
        assert "handled: none (" in str(nothing)

    def test_a_rejected_guard(self) -> None:
        """GuardRejected names each guard tried with the state it would have led to."""
        error = GuardRejected(
            "retry",
            ["attempts_left", "cooled"],
            ["authorized", "voided"],
            machine="pay",
            run_id="r1",
            state="held",
        )
        assert (error.trigger, *context(error)) == ("retry", "pay", "r1", "held")
        assert str(error) == (
            "no row fired for 'retry': every guard refused "
            "(attempts_left -> 'authorized', cooled -> 'voided')" + WHERE
        )

    def test_a_guard_needs_its_target(self) -> None:
        """Guards and targets come in pairs; a missing target is a bug, not a shorter list."""
        with pytest.raises(ValueError):
            GuardRejected("retry", ["attempts_left"], [], machine="pay", run_id="r1", state="h")


class TestLeaseLost:
    """A relay that lost an outbox message's lease is told which message and owner."""

    def test_names_the_message_and_the_owner(self) -> None:
        """The event id and the owner are attributes and in the message."""
        error = LeaseLost("e-1", "slow")
        assert (error.event_id, error.owner) == ("e-1", "slow")
        assert str(error) == (
            "outbox message 'e-1' is not leased to 'slow' any more "
            "(its lease expired or it left the pending set); nothing was changed"
        )


class TestStoreErrors:
    """What the stores raise names the record and what to do."""

    def test_a_stale_version(self) -> None:
        moved = ConcurrencyError("run", "r1", expected=3, found=4)
        gone = ConcurrencyError("user", 7, expected=3, found=None)
        assert str(moved) == (
            "run r1 was changed by someone else: expected version 3, found version 4; "
            "nothing was written, reload and try again"
        )
        assert str(gone) == (
            "user 7 was changed by someone else: expected version 3, it no longer exists; "
            "nothing was written, reload and try again"
        )
        assert (moved.run_id, gone.run_id) == ("r1", None)

    def test_a_missing_or_taken_run_id(self) -> None:
        assert (RunNotFound("r1").run_id, RunExists("r2").run_id) == ("r1", "r2")
