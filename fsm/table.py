"""The parts of a definition: states, the rows of the transitions table and their callables."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fsm.errors import callable_name, show

if TYPE_CHECKING:
    from fsm.runtime import Run

S = TypeVar("S", bound=Hashable)

Action = Callable[[dict[str, Any]], object]
"""A state's action: called with the run's context on entry, returns an outcome (an
`async def` action is awaited by an async run; a sync run refuses it)."""

ExternalAction = Callable[[dict[str, Any], str], object]
"""An external action (`State(..., external=True)`): called with the context and the step's
idempotency key, outside any database transaction."""

StepAction = Callable[[Any, dict[str, Any]], object] | Callable[[Any, dict[str, Any], str], object]
"""An action named as a method of the machine's steps protocol (`Steps.method`): each run
calls that method of the object it is given (`steps=`)."""

Guard = Callable[["Run[Any]"], bool] | Callable[["Run[Any]"], Awaitable[bool]]
"""A row's guard: called with the run, the row fires only when it returns true (an
`async def` guard is awaited by an async run; a sync run refuses it)."""


@dataclass(frozen=True, slots=True)
class State(Generic[S]):
    """One state of a machine: a name (a string or an Enum member) and its role."""

    name: S
    initial: bool = False
    final: bool = False
    action: Action | ExternalAction | StepAction | None = None
    external: bool = False
    """The action calls another system (a payment gateway, a broker). A persistent run
    claims the run in one transaction, calls the action with no transaction open, passing
    the step's idempotency key (`action(context, key)`), and records its outcome in a new
    transaction that checks the claim. A local action (the default) writes through the
    unit of work and commits with its transition."""
    failure: bool = False
    """Marks a state that stands for a failure (drawn distinctly, counted in reports)."""
    description: str = ""
    outcomes: tuple[Hashable, ...] | None = None
    """The action's closed family of outcomes (classes, Enum members or values), for an action
    whose return annotation cannot say it (a lambda, say); used instead of the annotation."""
    aliases: tuple[str, ...] = ()
    """Former stored names of this state (it was renamed): runs stored under them load in
    this state, and their next step writes its current name."""
    after: timedelta | tuple[timedelta, Hashable] | None = None
    """A waiting state's timeout: `(timedelta(days=7), "expire")` sends the run "expire"
    once it has been in the state that long (`timedelta(...)` alone: the trigger
    "timeout"); a row from the state must take the trigger (see fsm.timers)."""


@dataclass(frozen=True, slots=True)
class Row(Generic[S]):
    """One row of the transitions table: from `source`, `trigger` leads to `target`."""

    source: S
    trigger: Hashable
    target: S
    guard: Guard | None = None

    def describe(self) -> str:
        guard = "" if self.guard is None else f", {_named(self.guard)}"
        return f"({show(self.source)}, {show(self.trigger)}, {show(self.target)}{guard})"


def _named(guard: object) -> str:
    """A guard as rows show it: its name, or the value itself when it is not callable."""
    return callable_name(guard) if callable(guard) else repr(guard)


RowSpec = Row[S] | tuple[S, Hashable, S] | tuple[S, Hashable, S, Guard | None]
