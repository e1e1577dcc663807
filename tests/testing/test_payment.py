"""The card payment example: its generated paths alone fire every row, guarded retry included."""

from __future__ import annotations

from pathlib import Path as FilePath

import pytest

from fsm.examples import payment
from fsm.paths import path_tests

pytest_plugins = ["pytester"]

test_payment_paths = path_tests(payment, max_row_visits=2)
"""The whole suite of the machine's paths, in one line: each way to a final state, the retry
loop taken at most twice, guards forced as each path needs."""


class TestCoverageOfThePaths:
    """The generated paths cover the machine on their own."""

    def test_generated_paths_alone_cover_every_row(self, pytester: pytest.Pytester) -> None:
        """In an inner session running only test_payment_paths: every path passes, none is
        skipped, and the session's transition coverage of payment is 100%."""
        here = FilePath(__file__)
        pytester.makeini(
            "[pytest]\naddopts = -p no:hypothesispytest -p no:cacheprovider -p no:asyncio\n"
        )
        result = pytester.runpytest_subprocess(
            f"{here}::test_payment_paths",
            "--fsm-coverage-fail-under=100",
            "--fsm-coverage-machine=fsm.examples:payment",
            f"--rootdir={here.parents[2]}",
        )
        result.assert_outcomes(passed=6)
        result.stdout.fnmatch_lines(["fsm.examples:payment *6 *6 *100.0%"])
        assert result.ret == pytest.ExitCode.OK
