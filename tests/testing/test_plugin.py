"""The pytest plugin, run in an inner pytest session through pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

FLOWS = """
from fsm import Machine, State

door = Machine(
    "door",
    states=[State("shut", initial=True), State("open"), State("gone", final=True)],
    transitions=[("shut", "open", "open"), ("open", "close", "shut"), ("open", "leave", "gone")],
)
other = Machine(
    "other",
    states=[State("a", initial=True), State("b", final=True)],
    transitions=[("a", "go", "b")],
)
"""

PARTIAL = """
from flows import door

def test_open_and_leave(fsm_stepper):
    stepper = fsm_stepper(door)
    stepper.send("open")
    stepper.send("leave")
    stepper.assert_finished()
"""

FULL = (
    PARTIAL
    + """
def test_open_and_close():
    door.start().send("open").send("close")
"""
)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """An inner project with the `flows` module importable."""
    pytester.makepyfile(flows=FLOWS)
    pytester.syspathinsert()
    # hypothesis's own plugin is not under test and costs a second per inner session;
    # pytest-asyncio's is not either, and warns about its settings in every inner session.
    pytester.makeini("[pytest]\naddopts = -p no:hypothesispytest -p no:asyncio\n")
    return pytester


class TestThreshold:
    """--fsm-coverage-fail-under fails the session when a row never fired."""

    def test_fails_when_a_row_is_not_exercised(self, project: pytest.Pytester) -> None:
        """One row of three never fired: the tests pass, the session fails and says why."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest(
            "--fsm-coverage-fail-under=100", "--fsm-coverage-machine=flows:door"
        )
        result.assert_outcomes(passed=1)
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(
            [
                "*- fsm transition coverage -*",
                "flows:door *3 *2 *66.7%",
                "    never fired: ('open', 'close', 'shut')",
                "FAIL transition coverage 66.7% is under the required 100%",
            ]
        )

    def test_passes_when_every_row_is_exercised(self, project: pytest.Pytester) -> None:
        """With every row fired the session passes and reports 100%."""
        project.makepyfile(test_door=FULL)
        result = project.runpytest(
            "--fsm-coverage-fail-under=100", "--fsm-coverage-machine=flows:door"
        )
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(
            ["flows:door *3 *3 *100.0%", "required transition coverage of 100% reached"]
        )
        result.stdout.no_fnmatch_line("*never fired*")

    def test_lower_threshold_passes(self, project: pytest.Pytester) -> None:
        """Two rows of four is enough for a 50% threshold."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest("--fsm-coverage-fail-under=50", "--fsm-coverage-machine=flows")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["flows:other *1 *0 *0.0%", "TOTAL *4 *2 *50.0%"])

    @pytest.mark.parametrize("threshold", ["120", "100.5", "-0.5"])
    def test_bad_threshold(self, project: pytest.Pytester, threshold: str) -> None:
        """A percentage outside 0..100 is a usage error."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest(f"--fsm-coverage-fail-under={threshold}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        shown = float(threshold)
        result.stderr.fnmatch_lines([f"*--fsm-coverage-fail-under={shown}: give a percentage*"])

    def test_zero_is_a_threshold_any_run_reaches(self, project: pytest.Pytester) -> None:
        """0, the lowest percentage allowed, is reached even by a machine that never ran."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest("--fsm-coverage-fail-under=0", "--fsm-coverage-machine=flows")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["required transition coverage of 0% reached"])

    def test_a_failure_is_shown_in_bold_red(self, project: pytest.Pytester) -> None:
        """With colours on, the FAIL line stands out."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest(
            "--color=yes", "--fsm-coverage-fail-under=100", "--fsm-coverage-machine=flows:door"
        )
        assert "\x1b[31m\x1b[1mFAIL transition coverage 66.7%" in result.stdout.str()


class TestScopeAndReport:
    """Which machines count, and the report without a threshold."""

    def test_ini_option_scopes_the_report(self, project: pytest.Pytester) -> None:
        """fsm_coverage_machines in the ini file lists the machines that count."""
        project.makeini(
            "[pytest]\naddopts = -p no:hypothesispytest -p no:asyncio\n"
            "fsm_coverage_machines =\n    flows:other\n"
        )
        project.makepyfile(test_door=FULL)
        result = project.runpytest("--fsm-coverage-fail-under=100")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["flows:other *1 *0 *0.0%"])
        result.stdout.no_fnmatch_line("flows:door*")

    def test_default_scope_is_every_machine_that_ran(self, project: pytest.Pytester) -> None:
        """Without a scope the machines that ran are reported; a report alone never fails."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest("--fsm-coverage")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(["door *3 *2 *66.7%"])
        result.stdout.no_fnmatch_line("other*")

    def test_bad_scope_fails_the_session(self, project: pytest.Pytester) -> None:
        """A scope naming no machine fails with the reason."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest("--fsm-coverage", "--fsm-coverage-machine=flows:nope")
        assert result.ret == pytest.ExitCode.TESTS_FAILED
        result.stdout.fnmatch_lines(["FAIL coverage scope 'flows:nope' names nothing*"])

    def test_no_machine_ran(self, project: pytest.Pytester) -> None:
        """A session whose tests run no machine says so."""
        project.makepyfile(test_nothing="def test_nothing():\n    pass\n")
        result = project.runpytest("--fsm-coverage")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.fnmatch_lines(
            ["*- fsm transition coverage -*", "no machine ran a transition"]
        )

    def test_the_plugin_can_be_turned_off_by_name(self, project: pytest.Pytester) -> None:
        """The coverage plugin registers as `fsm-coverage`: `-p no:fsm-coverage` turns it
        off for one run even when an ini file's addopts give its options."""
        project.makeini(
            "[pytest]\naddopts = -p no:hypothesispytest -p no:asyncio "
            "--fsm-coverage-fail-under=100\n"
        )
        project.makepyfile(test_door=PARTIAL)
        assert project.runpytest().ret == pytest.ExitCode.TESTS_FAILED
        result = project.runpytest("-p", "no:fsm-coverage")
        assert result.ret == pytest.ExitCode.OK
        result.stdout.no_fnmatch_line("*fsm transition coverage*")

    def test_help_lists_the_options(self, project: pytest.Pytester) -> None:
        """`pytest --help` shows the options under their heading, with their values and
        what each does, and the ini option."""
        result = project.runpytest("--help")
        text = " ".join(result.stdout.str().split())
        for shown in [
            "fsm transition coverage: --fsm-coverage record which rows of which fsm machines "
            "fire, and report the rows never fired",
            "--fsm-coverage-fail-under=PERCENT fail the session when under PERCENT of the rows "
            "fired (implies --fsm-coverage)",
            "--fsm-coverage-machine=MODULE:ATTR count this machine (or every machine of "
            "MODULE); repeatable; overrides the fsm_coverage_machines ini option",
            "fsm_coverage_machines (linelist): machines (MODULE:ATTR or MODULE) that "
            "transition coverage counts; default: every machine that ran",
        ]:
            assert shown in text

    def test_off_by_default(self, project: pytest.Pytester) -> None:
        """Without the options there is no report."""
        project.makepyfile(test_door=PARTIAL)
        result = project.runpytest()
        assert result.ret == pytest.ExitCode.OK
        result.stdout.no_fnmatch_line("*fsm transition coverage*")
