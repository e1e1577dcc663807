"""The pytest plugin (entry point `pytest11`): transition coverage and the stepper fixture."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import pytest

from fsm.coverage import Coverage, CoverageError, CoverageReport, resolve_machines
from fsm.testing import Stepper


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fsm", "fsm transition coverage")
    group.addoption(
        "--fsm-coverage",
        action="store_true",
        default=False,
        help="record which rows of which fsm machines fire, and report the rows never fired",
    )
    group.addoption(
        "--fsm-coverage-fail-under",
        type=float,
        default=None,
        metavar="PERCENT",
        help="fail the session when under PERCENT of the rows fired (implies --fsm-coverage)",
    )
    group.addoption(
        "--fsm-coverage-machine",
        action="append",
        default=[],
        metavar="MODULE:ATTR",
        help="count this machine (or every machine of MODULE); repeatable; "
        "overrides the fsm_coverage_machines ini option",
    )
    parser.addini(
        "fsm_coverage_machines",
        type="linelist",
        default=[],
        help="machines (MODULE:ATTR or MODULE) that transition coverage counts; "
        "default: every machine that ran",
    )


def pytest_configure(config: pytest.Config) -> None:
    threshold = config.getoption("fsm_coverage_fail_under")
    if config.getoption("fsm_coverage") or threshold is not None:
        if threshold is not None and not 0 <= threshold <= 100:
            raise pytest.UsageError(
                f"--fsm-coverage-fail-under={threshold}: give a percentage from 0 to 100"
            )
        specs = config.getoption("fsm_coverage_machine") or config.getini("fsm_coverage_machines")
        config.pluginmanager.register(CoveragePlugin(specs, threshold), "fsm-coverage")


class CoveragePlugin:
    """Records transition coverage over the session and reports it at the end."""

    def __init__(self, specs: Sequence[str], threshold: float | None) -> None:
        self.specs = list(specs)
        self.threshold = threshold
        self.coverage = Coverage().start()
        self.report: CoverageReport | None = None
        self.problem: str | None = None

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        result = yield
        self.coverage.stop()
        if session.config.option.collectonly:
            return result
        try:
            scope = resolve_machines(self.specs) if self.specs else None
        except CoverageError as error:
            self.problem = str(error)
            session.testsfailed += 1
            return result
        self.report = self.coverage.report(scope)
        if self.threshold is not None and self.report.under(self.threshold):
            self.problem = (
                f"transition coverage {self.report.percent:.1f}% "
                f"is under the required {self.threshold:g}%"
            )
            session.testsfailed += 1  # so that the session exits with TESTS_FAILED
        return result

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        writer = terminalreporter
        if self.report is None and self.problem is None:
            return
        writer.write_sep("-", "fsm transition coverage")
        if self.report is not None:
            if not self.report.machines:
                writer.write_line("no machine ran a transition")
            for line in self.report.lines():
                writer.write_line(line)
        if self.problem is not None:
            writer.write_line(f"FAIL {self.problem}", red=True, bold=True)
        elif self.threshold is not None:
            writer.write_line(f"required transition coverage of {self.threshold:g}% reached")

    def pytest_unconfigure(self) -> None:
        self.coverage.stop()


@pytest.fixture
def fsm_stepper() -> type[Stepper[Any]]:
    """A factory of Steppers, the class itself: `fsm_stepper(machine, context, outcomes=...,
    steps=..., real=..., at=...)`."""
    return Stepper
