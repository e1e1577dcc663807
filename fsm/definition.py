"""The declarative definition: states, the transitions table, and the Machine built from them."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fsm.errors import DefinitionError, callable_name, show

if TYPE_CHECKING:
    from fsm.runtime import Listener, Run

S = TypeVar("S", bound=Hashable)

Action = Callable[[dict[str, Any]], object]
"""A state's action: called with the run's context on entry, returns an outcome."""

Guard = Callable[["Run[Any]"], bool]
"""A row's guard: called with the run, the row fires only when it returns true."""


@dataclass(frozen=True, slots=True)
class State(Generic[S]):
    """One state of a machine: a name (a string or an Enum member) and its role."""

    name: S
    initial: bool = False
    final: bool = False
    action: Action | None = None
    failure: bool = False
    """Marks a state that stands for a failure (drawn distinctly, counted in reports)."""
    description: str = ""
    outcomes: tuple[Hashable, ...] | None = None
    """The action's closed family of outcomes (classes, Enum members or values), for an action
    whose return annotation cannot say it (a lambda, say); used instead of the annotation."""


@dataclass(frozen=True, slots=True)
class Row(Generic[S]):
    """One row of the transitions table: from `source`, `trigger` leads to `target`."""

    source: S
    trigger: Hashable
    target: S
    guard: Guard | None = None

    def describe(self) -> str:
        guard = f", {callable_name(self.guard)}" if self.guard is not None else ""
        return f"({show(self.source)}, {show(self.trigger)}, {show(self.target)}{guard})"


RowSpec = Row[S] | tuple[S, Hashable, S] | tuple[S, Hashable, S, Guard | None]


class Machine(Generic[S]):
    """An immutable, validated state machine; build it once, start as many runs as you like."""

    def __init__(
        self,
        name: str,
        *,
        states: Iterable[State[S]],
        transitions: Iterable[RowSpec[S]],
    ) -> None:
        from fsm.runtime import compile_machine
        from fsm.validation import normalize_rows, validate

        self.name = name
        self.states: tuple[State[S], ...] = tuple(states)
        rows, problems = normalize_rows(transitions)
        self.transitions: tuple[Row[S], ...] = tuple(rows)
        problems += validate(self)
        if problems:
            raise DefinitionError(name, problems)
        self._by_name: dict[S, State[S]] = {state.name: state for state in self.states}
        self.initial: State[S] = next(state for state in self.states if state.initial)
        self._nodes = compile_machine(self)
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        # Every reader (runtime, diagrams, stores, tests) must see the table that was validated.
        if getattr(self, "_frozen", False):
            raise AttributeError(f"machine {self.name!r} is immutable; build a new Machine")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Machine {self.name!r}: {len(self.states)} states, {len(self.transitions)} rows>"

    def state(self, name: S) -> State[S]:
        """The state called `name`; KeyError naming the states if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            states = ", ".join(show(s.name) for s in self.states)
            raise KeyError(
                f"machine {self.name!r} has no state {show(name)}; states: {states}"
            ) from None

    def rows_from(self, source: S) -> tuple[Row[S], ...]:
        """The rows whose source is `source`, in table order."""
        return tuple(row for row in self.transitions if row.source == source)

    def start(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
    ) -> Run[S]:
        """Start a run in the initial state and follow actions until it waits or finishes."""
        run = self.create(context, run_id=run_id, listeners=listeners)
        run.advance()
        return run

    def create(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
    ) -> Run[S]:
        """A run in the initial state whose actions have not run yet; call `advance()`."""
        from fsm.runtime import Run

        return Run(self, self._nodes[self.initial.name], context, run_id, (), listeners)

    def restore(
        self,
        run_id: str,
        state: S,
        context: Mapping[str, Any] | None = None,
        history: Iterable[Sequence[Any]] = (),
        *,
        listeners: Sequence[Listener[S]] = (),
    ) -> Run[S]:
        """Rebuild a run (from storage, say) at `state`; its actions are not run again.

        The history must be one path of the table from the initial state to `state`;
        anything else is a RestoreError naming the run and the first record that is wrong.
        """
        from fsm.runtime import Run, rebuild

        node, log = rebuild(self, self._nodes, run_id, state, history)
        return Run(self, node, context, run_id, log, listeners)
