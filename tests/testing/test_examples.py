"""The bundled example machines, tested with the toolkit to full transition coverage."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest

from fsm.examples import Updated, UserNotFound, hold, ping, update, update_status
from fsm.paths import Path, final_paths, replay, row_paths
from fsm.testing import Stepper

INSTANCES = {UserNotFound: UserNotFound(7)}


class TestPing:
    """The ping machine: start, pause, and a guarded finish."""

    @pytest.mark.parametrize("path", row_paths(ping), ids=str)
    def test_every_row(self, path: Path[str]) -> None:
        """The shortest path to each row replays with the guard allowing it."""
        replay(path, context={"ok": True})

    @pytest.mark.parametrize("path", final_paths(ping, max_row_visits=2), ids=str)
    def test_ways_to_done(self, path: Path[str]) -> None:
        """Every way to done, the pause cycle taken at most twice, ends finished."""
        replay(path).assert_finished()

    def test_guard_holds_the_run(self) -> None:
        """With ok false the run stays busy, and may still pause."""
        stepper = Stepper(ping, {"ok": False}).follow("start")
        assert stepper.allowed == ("pause", "finish")
        stepper.follow("pause").expect("idle")


class TestUpdate:
    """The update machine: its action's outcome picks the final state."""

    @pytest.mark.parametrize("path", row_paths(update), ids=str)
    def test_every_outcome(self, path: Path[str]) -> None:
        """Each outcome of update_status leads to its own final state."""
        replay(path, instances=INSTANCES).assert_finished()

    def test_the_real_action_agrees(self) -> None:
        """The real action returns the outcomes the stepper scripts, for these contexts."""
        assert update_status({"user_id": 1}) == Updated()
        assert update_status({"user_id": 9}) == UserNotFound(9)
        assert update.start({"user_id": 9}).state == "failed"

    def test_the_real_action_changes_the_users_it_holds(self) -> None:
        """With no users given the context holds user 1, active, and the change (suspended
        unless told) is written there; given users, the named one changes."""
        run = update.start()
        assert (run.state, run.context["users"]) == ("updated", {"1": "suspended"})
        missing = update.start({"user_id": 9})
        assert (missing.state, missing.context["users"]) == ("failed", {"1": "active"})
        users = {"1": "active", "2": "active"}
        update.start({"users": users, "user_id": 2, "new_status": "closed"})
        assert users == {"1": "active", "2": "closed"}


class TestHold:
    """The hold machine: captured in time, or voided when its timeout's row fires."""

    @pytest.mark.parametrize("path", row_paths(hold), ids=str)
    def test_every_row(self, path: Path[str]) -> None:
        """Capture and the 7-day expiry each end the hold (the worker sends expire when
        due: tests/worker)."""
        replay(path).assert_finished()


class TestCoverageOfTheExamples:
    """This file alone exercises every row of the example machines."""

    def test_full_coverage(self, pytester: pytest.Pytester) -> None:
        """Run this module in an inner session that fails under 100% transition coverage of
        ping, update and hold (payment has its own, tests/testing/test_payment.py)."""
        here = FilePath(__file__)
        pytester.makeini(
            "[pytest]\naddopts = -p no:hypothesispytest -p no:cacheprovider -p no:asyncio\n"
        )
        result = pytester.runpytest_subprocess(
            str(here),
            "--fsm-coverage-fail-under=100",
            "--fsm-coverage-machine=fsm.examples:ping",
            "--fsm-coverage-machine=fsm.examples:update",
            "--fsm-coverage-machine=fsm.examples:hold",
            "-k",
            "not TestCoverageOfTheExamples",  # not itself: that would recurse
            f"--rootdir={here.parent.parent.parent}",
        )
        result.stdout.fnmatch_lines(["TOTAL *8 *8 *100.0%"])
        assert result.ret == pytest.ExitCode.OK


pytest_plugins = ["pytester"]
