"""Transition coverage: the recorder, its report, and the scope of machines it counts."""

from __future__ import annotations

import pytest

from fsm import Machine, State
from fsm.coverage import Coverage, CoverageError, resolve_machines
from fsm.examples import hold, payment, ping, update
from fsm.runtime import _observers
from fsm.testing import Stepper


def twin_guards() -> Machine[str]:
    """Two rows with the same source, trigger and target, told apart only by their guards."""

    def first(run: object) -> bool:
        return bool(getattr(run, "context", {}).get("first"))

    def second(run: object) -> bool:
        return True

    return Machine(
        "twins",
        states=[State("a", initial=True), State("b", final=True)],
        transitions=[("a", "go", "b", first), ("a", "go", "b", second)],
    )


class TestRecording:
    """Rows fired by runs created while recording are counted."""

    def test_counts_rows_by_identity(self) -> None:
        """Each fired row is counted, even when only the guard tells two rows apart."""
        machine = twin_guards()
        with Coverage() as coverage:
            machine.start().send("go")
            machine.start().send("go")
        assert coverage.counts(machine) == (0, 2)
        assert coverage.report().machines[0].missing == [machine.transitions[0]]

    def test_collaborators_bound_per_unit_of_work_count_for_the_one_definition(self) -> None:
        """Each request gets its own unit of work, its own collaborators and its own
        PersistentMachine; the rows are counted on the one module-level definition, 100%."""
        from datetime import timedelta
        from typing import Any

        from adapters.memory import InMemoryRunStore, InMemoryUnitOfWork
        from fsm import PersistentMachine
        from tests.persistence.external_support import Captured, Declined, Ready, machine

        class Service:
            def __init__(self, uow: InMemoryUnitOfWork, declines: bool) -> None:
                self.uow, self.declines = uow, declines

            def prepare(self, context: dict[str, Any]) -> Ready:
                return Ready()

            def capture(self, context: dict[str, Any], key: str) -> Captured | Declined:
                return Declined("no funds") if self.declines else Captured(key, "w")

        store = InMemoryRunStore()
        with Coverage() as coverage:
            for declines in (False, True):
                uow = InMemoryUnitOfWork(runs=store)  # one per request
                runs = PersistentMachine(
                    machine, uow, steps=Service(uow, declines), lease=timedelta(seconds=5)
                )
                runs.start({"payment": f"p-{declines}"})
        assert coverage.observed() == [machine]
        assert coverage.counts(machine) == (2, 1, 1)
        assert coverage.report([("capture", machine)]).percent == 100.0

    def test_runs_and_steppers_both_count(self) -> None:
        """Plain runs and Stepper runs go through the same observer."""
        with Coverage() as coverage:
            ping.start().send("start")
            Stepper(ping).follow("start", "pause")
        assert coverage.counts(ping) == (2, 1, 0)

    def test_stopped_coverage_leaves_no_observer(self) -> None:
        """After stop() the runtime has no observer left and runs are not counted."""
        coverage = Coverage().start()
        coverage.stop()
        assert coverage._stop is None
        assert all(o != coverage._record for o in _observers)
        ping.start().send("start")
        assert coverage.observed() == []

    def test_runs_created_before_start_are_not_observed(self) -> None:
        """Observers are given to runs when they are created, never later."""
        run = ping.start()
        with Coverage() as coverage:
            run.send("start")
        assert coverage.counts(ping) == (0, 0, 0)


class TestReport:
    """The report: per machine, never-fired rows, totals, threshold."""

    def test_lines(self) -> None:
        """Each machine gets a line, its missing rows, then the total."""
        with Coverage() as coverage:
            ping.start().send("start")
        report = coverage.report([("fsm.examples:ping", ping), ("fsm.examples:update", update)])
        assert report.lines() == [
            "machine               rows  fired   cover",
            "fsm.examples:ping        3      1   33.3%",
            "    never fired: ('busy', 'pause', 'idle')",
            "    never fired: ('busy', 'finish', 'done', ok)",
            "fsm.examples:update      2      0    0.0%",
            "    never fired: ('received', Updated, 'updated')",
            "    never fired: ('received', UserNotFound, 'failed')",
            "TOTAL                    5      1   20.0%",
        ]

    def test_threshold_is_compared_exactly(self) -> None:
        """Two of three rows is under 66.67 and not under 66.66."""
        with Coverage() as coverage:
            ping.start().send("start").send("pause")
        report = coverage.report([("ping", ping)])
        assert report.under(66.67)
        assert not report.under(66.66)
        assert not report.under(0)

    def test_empty_report_is_full(self) -> None:
        """No rows in scope counts as fully covered rather than dividing by zero."""
        assert Coverage().report([]).percent == 100.0


class TestScope:
    """MODULE:ATTR and MODULE name the machines that count."""

    def test_attr_and_module(self) -> None:
        """A module names all its machines; duplicates are dropped."""
        found = resolve_machines(["fsm.examples:ping", "fsm.examples"])
        assert [(label, m) for label, m in found] == [
            ("fsm.examples:ping", ping),
            ("fsm.examples:update", update),
            ("fsm.examples:hold", hold),
            ("fsm.examples:payment", payment),
        ]

    def test_specs_are_taken_in_order_a_module_among_them(self) -> None:
        """Every spec counts, in the order given, a module's machines where it stands; an
        attribute path may go through a module's attributes (`fsm:examples.ping`)."""
        from userstatus.flow import machine as flow

        found = resolve_machines(["fsm:examples.ping", "fsm.examples", "userstatus.flow:machine"])
        assert found == [
            ("fsm:examples.ping", ping),
            ("fsm.examples:update", update),
            ("fsm.examples:hold", hold),
            ("fsm.examples:payment", payment),
            ("userstatus.flow:machine", flow),
        ]

    def test_a_wrong_name_says_what_to_give(self) -> None:
        with pytest.raises(CoverageError) as refused:
            resolve_machines(["fsm.examples:ok"])
        assert str(refused.value) == (
            "coverage scope 'fsm.examples:ok' names a function, not an fsm.Machine; "
            "give MODULE:ATTR of a machine or MODULE"
        )

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("no_such_module:x", "cannot import 'no_such_module'"),
            ("fsm.examples:nothing", "names nothing, not an fsm.Machine"),
            ("fsm.examples:Updated", "names a type, not an fsm.Machine"),
            ("fsm.errors", "module has no Machine"),
        ],
    )
    def test_bad_specs(self, spec: str, message: str) -> None:
        """A wrong name says what it found and what to give."""
        with pytest.raises(CoverageError, match=message):
            resolve_machines([spec])
