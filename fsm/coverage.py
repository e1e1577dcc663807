"""Transition coverage: which rows of which machines fired while it was recording."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fsm.definition import Machine
from fsm.errors import FSMError
from fsm.runtime import Run, Transition, observe
from fsm.table import Row


class CoverageError(FSMError):
    """A machine named for coverage cannot be found (bad MODULE:ATTR)."""


@dataclass(frozen=True)
class MachineCoverage:
    """How often each row of one machine fired, in table order."""

    machine: Machine[Any]
    label: str
    counts: tuple[int, ...]

    @property
    def total(self) -> int:
        """The number of rows in the table."""
        return len(self.counts)

    @property
    def fired(self) -> int:
        """The number of rows that fired at least once."""
        return sum(1 for count in self.counts if count)

    @property
    def missing(self) -> list[Row[Any]]:
        """The rows that never fired, in table order."""
        return [row for row, n in zip(self.machine.transitions, self.counts, strict=True) if not n]

    @property
    def percent(self) -> float:
        """The share of rows that fired, 0 to 100 (100 for a machine without rows)."""
        return 100.0 * self.fired / self.total if self.total else 100.0


@dataclass(frozen=True)
class CoverageReport:
    """Coverage of a set of machines, and the totals over all of them."""

    machines: tuple[MachineCoverage, ...]

    @property
    def total(self) -> int:
        """Rows over all machines."""
        return sum(m.total for m in self.machines)

    @property
    def fired(self) -> int:
        """Rows that fired over all machines."""
        return sum(m.fired for m in self.machines)

    @property
    def percent(self) -> float:
        """The share of all rows that fired, 0 to 100 (100 when there are no rows)."""
        return 100.0 * self.fired / self.total if self.total else 100.0

    def under(self, threshold: float) -> bool:
        """True when the share of rows fired is below `threshold` percent (compared exactly)."""
        return self.fired * 100 < threshold * self.total

    def lines(self) -> list[str]:
        """The report as text lines: one per machine, its never-fired rows, then the total."""
        width = max([len(m.label) for m in self.machines] + [len("TOTAL")])
        out = [f"{'machine':<{width}}  {'rows':>5}  {'fired':>5}  {'cover':>6}"]
        for m in self.machines:
            out.append(f"{m.label:<{width}}  {m.total:>5}  {m.fired:>5}  {m.percent:>5.1f}%")
            out += [f"    never fired: {row.describe()}" for row in m.missing]
        out.append(f"{'TOTAL':<{width}}  {self.total:>5}  {self.fired:>5}  {self.percent:>5.1f}%")
        return out


class Coverage:
    """Records every row fired by runs created between `start()` and `stop()`.

    It registers one observer with the runtime (`fsm.runtime.observe`); while stopped
    the engine does no extra work at all.
    """

    def __init__(self) -> None:
        self._machines: dict[int, tuple[Machine[Any], dict[int, int], list[int]]] = {}
        self._stop: Any = None

    def start(self) -> Coverage:
        """Begin observing runs created from now on."""
        if self._stop is None:
            self._stop = observe(self._record, rows=self._count)
        return self

    def stop(self) -> None:
        """Stop observing; what was recorded stays."""
        if self._stop is not None:
            self._stop()
            self._stop = None

    def __enter__(self) -> Coverage:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _record(self, run: Run[Any], transition: Transition[Any]) -> None:
        self._count(run.machine, run.last_row)

    def _count(self, machine: Machine[Any], row: Row[Any]) -> None:
        """Count `row` of `machine` fired (by a run, or written from a run's head)."""
        entry = self._machines.get(id(machine))
        if entry is None:
            rows = machine.transitions
            index = {id(row): i for i, row in enumerate(rows)}
            # Keeping the machine in the entry keeps its id (the key) from being reused.
            entry = self._machines[id(machine)] = (machine, index, [0] * len(rows))
        entry[2][entry[1][id(row)]] += 1

    def observed(self) -> list[Machine[Any]]:
        """The machines that had at least one run fire a row, in the order first seen."""
        return [machine for machine, _, _ in self._machines.values()]

    def counts(self, machine: Machine[Any]) -> tuple[int, ...]:
        """How often each of `machine`'s rows fired, in table order."""
        entry = self._machines.get(id(machine))
        return tuple(entry[2]) if entry is not None else (0,) * len(machine.transitions)

    def report(self, machines: Sequence[tuple[str, Machine[Any]]] | None = None) -> CoverageReport:
        """Coverage of the given (label, machine) pairs, or of every machine observed."""
        if machines is None:
            machines = [(m.name, m) for m in self.observed()]
        return CoverageReport(
            tuple(MachineCoverage(m, label, self.counts(m)) for label, m in machines)
        )


def resolve_machines(specs: Sequence[str]) -> list[tuple[str, Machine[Any]]]:
    """The machines that `MODULE:ATTR` (one machine) or `MODULE` (all its machines) name."""
    found: list[tuple[str, Machine[Any]]] = []
    for spec in specs:
        module_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            raise CoverageError(
                f"coverage scope {spec!r}: cannot import {module_name!r}: {error}"
            ) from None
        if not attr:
            machines = [
                (f"{module_name}:{k}", v) for k, v in vars(module).items() if isinstance(v, Machine)
            ]
            if not machines:
                raise CoverageError(f"coverage scope {spec!r}: module has no Machine")
            found += machines
            continue
        value: object = module
        for part in attr.split("."):
            value = getattr(value, part, None)
        if not isinstance(value, Machine):
            what = "nothing" if value is None else f"a {type(value).__name__}"
            raise CoverageError(
                f"coverage scope {spec!r} names {what}, not an fsm.Machine; "
                "give MODULE:ATTR of a machine or MODULE"
            )
        found.append((spec, value))
    seen: set[int] = set()
    unique = []
    for label, machine in found:
        if id(machine) not in seen:
            seen.add(id(machine))
            unique.append((label, machine))
    return unique
