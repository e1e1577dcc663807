"""Paths through a machine's table: shortest ones to each state and row, all ones to the finals."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from fsm.definition import Machine
from fsm.errors import FSMError, GuardRejected, callable_name, show
from fsm.table import Guard, Row
from fsm.testing import Stepper

S = TypeVar("S", bound=Hashable)


class TooManyPaths(FSMError):
    """Enumerating paths went past the limit; tighten the bound instead of waiting forever."""


@dataclass(frozen=True)
class Path(Generic[S]):
    """A sequence of rows from the machine's initial state; `str(path)` is a readable test id."""

    machine: Machine[S]
    rows: tuple[Row[S], ...]

    @property
    def states(self) -> tuple[S, ...]:
        """The states visited, the initial one first."""
        return (self.machine.initial.name, *(row.target for row in self.rows))

    @property
    def triggers(self) -> tuple[Hashable, ...]:
        """The trigger of each row, in order."""
        return tuple(row.trigger for row in self.rows)

    @property
    def target(self) -> S:
        """The state the path ends in."""
        return self.states[-1]

    @property
    def id(self) -> str:
        """A readable id such as `idle-start->busy-finish->done`, for pytest parametrize."""
        parts = [_label(self.machine.initial.name)]
        parts += [f"-{_label(row.trigger)}->{_label(row.target)}" for row in self.rows]
        return "".join(parts)

    def __str__(self) -> str:
        return self.id

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def steps(self) -> tuple[PathStep[S], ...]:
        """Each row with what the guards must answer for the table to pick it."""
        return tuple(
            PathStep(number, row, _tried_before(self.machine, row))
            for number, row in enumerate(self.rows, 1)
        )


@dataclass(frozen=True)
class PathStep(Generic[S]):
    """One row of a path and what the guards must answer for the table to pick it: the
    rows tried before it for the same trigger refuse, its own guard (if any) passes."""

    number: int
    """Where the row is in the path, from 1."""
    row: Row[S]
    refused: tuple[Row[S], ...]
    """The rows the table tries before `row` on the same source and trigger (each has a
    guard: an unguarded one would always win); each guard must refuse."""

    def needs(self, guard: Guard) -> bool | None:
        """What `guard` must answer at this step: True (the row's own), False (the guard of
        a row tried before it) or None (not asked)."""
        if guard is self.row.guard:
            return True
        if any(guard is row.guard for row in self.refused):
            return False
        return None


def shortest_paths(machine: Machine[S]) -> dict[S, Path[S]]:
    """The shortest path to every state, in `machine.states` order (the initial's is empty)."""
    reached = _breadth_first(machine)
    return {s.name: Path(machine, reached[s.name]) for s in machine.states if s.name in reached}


def row_paths(machine: Machine[S]) -> list[Path[S]]:
    """For each row in table order, the shortest path that ends by firing it."""
    reached = _breadth_first(machine)
    return [Path(machine, (*reached[row.source], row)) for row in machine.transitions]


def final_paths(
    machine: Machine[S],
    *,
    max_row_visits: int = 1,
    max_length: int | None = None,
    limit: int = 10_000,
) -> list[Path[S]]:
    """Every path from the initial state to a final state, depth first in table order.

    A path uses each row at most `max_row_visits` times (1: no row twice, so every
    cycle is taken at most once per way round it) and has at most `max_length` rows.
    More than `limit` paths raises TooManyPaths rather than exploding.
    """
    if max_row_visits < 1:
        raise ValueError(f"max_row_visits is {max_row_visits}; give 1 or more")
    if max_length is not None and max_length < 0:
        raise ValueError(f"max_length is {max_length}; give 0 or more, or None")
    finals = {s.name for s in machine.states if s.final}
    found: list[Path[S]] = []
    used: Counter[int] = Counter()
    rows: list[Row[S]] = []
    # Depth first with an explicit stack of (state, index of the next row to try).
    outgoing = {
        s.name: [(i, r) for i, r in enumerate(machine.transitions) if r.source == s.name]
        for s in machine.states
    }
    stack: list[tuple[S, int]] = [(machine.initial.name, 0)]
    if machine.initial.name in finals:
        found.append(Path(machine, ()))
    while stack:
        state, next_index = stack[-1]
        choices = outgoing[state]
        if next_index >= len(choices) or (max_length is not None and len(rows) >= max_length):
            stack.pop()
            if rows:
                used[id(rows.pop())] -= 1
            continue
        stack[-1] = (state, next_index + 1)
        _, row = choices[next_index]
        if used[id(row)] >= max_row_visits:
            continue
        used[id(row)] += 1
        rows.append(row)
        if row.target in finals:
            found.append(Path(machine, tuple(rows)))
            if len(found) > limit:
                raise TooManyPaths(
                    f"machine {machine.name!r} has more than {limit} paths to its final states "
                    f"with max_row_visits={max_row_visits}, max_length={max_length}; "
                    "lower them or raise limit"
                )
            used[id(rows.pop())] -= 1
            continue
        stack.append((row.target, 0))
    return found


def replay(
    path: Path[S],
    stepper: Stepper[S] | None = None,
    *,
    context: Mapping[str, Any] | Callable[[PathStep[S]], Mapping[str, Any]] | None = None,
    instances: Mapping[Any, object | Callable[[], object]] | None = None,
    guards: Literal["real", "forced"] = "real",
) -> Stepper[S]:
    """Drive a Stepper along `path`, asserting that each step fires exactly the path's row.

    Rows from a state with an action are stepped with an outcome made for their trigger;
    other rows are sent as events. A class trigger needs an instance: from `instances`
    (an instance, or a factory called with no arguments), else the class called with none.
    With `guards="real"` the guards are called: give a `context` in which the path's
    guards agree, or a function of each PathStep whose result is merged into the run's
    context before that step; a guard that disagrees with the path fails it, named. With
    `guards="forced"` each guard answers as the path needs (see `PathStep`) and is not
    called; the table still decides everything else.
    """
    if guards not in ("real", "forced"):
        raise ValueError(f"guards={guards!r}; give 'real' or 'forced'")
    if stepper is None:
        stepper = Stepper(path.machine, None if callable(context) else context)
    for step in path.steps:
        row = step.row
        if stepper.state != row.source:
            raise AssertionError(
                f"path {path.id}: step {step.number} starts from {show(row.source)} "
                f"but the run is in {show(stepper.state)}\n{stepper.describe()}"
            )
        if callable(context):
            stepper.context.update(context(step))
        value = example(row.trigger, instances or {})
        try:
            stepper.move(value, take=row if guards == "forced" else None)
        except GuardRejected as error:
            raise AssertionError(_missed(path, step, stepper)) from error
        if stepper.run.last_row is not row:
            raise AssertionError(_missed(path, step, stepper))
    return stepper


def path_tests(
    machine: Machine[S, Any],
    *,
    guards: Literal["real", "forced"] = "forced",
    context: Mapping[str, Any] | Callable[[PathStep[S]], Mapping[str, Any]] | None = None,
    instances: Mapping[Any, object | Callable[[], object]] | None = None,
    max_row_visits: int = 1,
    max_length: int | None = None,
) -> Callable[[Path[S]], None]:
    """A pytest test, parametrized with every path of `final_paths(machine, ...)`, that
    replays each (see `replay`): `test_payment = path_tests(payment)` in a test module.

    ValueError, when the module is collected, if some row is on no generated path (a
    cycle needs more `max_row_visits`, or `max_length` cuts it): the paths cover every row.
    """
    import pytest  # only here: the rest of the toolkit runs without pytest

    paths = final_paths(machine, max_row_visits=max_row_visits, max_length=max_length)
    on_a_path = {id(row) for path in paths for row in path.rows}
    missed = [row.describe() for row in machine.transitions if id(row) not in on_a_path]
    if missed:
        raise ValueError(
            f"machine {machine.name!r}: no path to a final state with max_row_visits="
            f"{max_row_visits}, max_length={max_length} fires {', '.join(missed)}; raise them"
        )

    @pytest.mark.parametrize("path", paths, ids=str)
    def test_path(path: Path[S]) -> None:
        replay(path, context=context, instances=instances, guards=guards).assert_finished()

    return test_path


def example(trigger: Hashable, instances: Mapping[Any, object | Callable[[], object]]) -> object:
    """A value that selects `trigger`: the trigger itself, or an instance of a class trigger."""
    if not isinstance(trigger, type):
        return trigger
    if trigger in instances:
        given = instances[trigger]
        return given() if callable(given) and not isinstance(given, trigger) else given
    try:
        return trigger()
    except TypeError as error:
        raise TypeError(
            f"cannot build {trigger.__qualname__}() for a path step ({error}); "
            f"pass instances={{{trigger.__qualname__}: an instance or a factory}}"
        ) from None


def _tried_before(machine: Machine[S, Any], row: Row[S]) -> tuple[Row[S], ...]:
    """The rows the table tries before `row` for the same trigger, from the same source."""
    same = [other for other in machine.rows_from(row.source) if other.trigger == row.trigger]
    return tuple(itertools.takewhile(lambda other: other is not row, same))


def _missed(path: Path[S], step: PathStep[S], stepper: Stepper[S]) -> str:
    """Why the run did not take the step's row: the first guard that answered otherwise."""
    head = f"path {path.id}: step {step.number} should fire {step.row.describe()}"
    for row, said in stepper.asked:
        if said != (row is step.row):
            assert row.guard is not None  # only guarded rows are asked
            guard = callable_name(row.guard)
            needed = "pass" if row is step.row else "refuse"
            return (
                f"{head} but guard {guard} of {row.describe()} "
                f"{'passed' if said else 'refused'}; the path needs it to {needed}"
                f"\n{stepper.describe()}"
            )
    fired = stepper.run.last_row.describe()
    return f"{head} but fired {fired}\n{stepper.describe()}"


def _breadth_first(machine: Machine[S]) -> dict[S, tuple[Row[S], ...]]:
    start = machine.initial.name
    reached: dict[S, tuple[Row[S], ...]] = {start: ()}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        for row in machine.rows_from(state):
            if row.target not in reached:
                reached[row.target] = (*reached[state], row)
                queue.append(row.target)
    return reached


def _label(value: object) -> str:
    text = show(value)
    return text[1:-1] if isinstance(value, str) else text
