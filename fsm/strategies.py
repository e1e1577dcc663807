"""hypothesis strategies: valid walks through a machine, made by a real run (needs hypothesis)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fsm.definition import Machine
from fsm.errors import GuardRejected, show
from fsm.testing import Stepper

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

S = TypeVar("S", bound=Hashable)

ContextSpec = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None


@dataclass(frozen=True)
class Step:
    """One move of a walk: a value stepped as an action's outcome, or sent as an event."""

    value: object
    outcome: bool

    def __repr__(self) -> str:
        return f"{'outcome' if self.outcome else 'event'} {show(self.value)}"


@dataclass(frozen=True)
class Walk(Generic[S]):
    """A valid sequence of events and outcomes, and the states the real run went through."""

    machine: Machine[S] = field(repr=False)
    context: Mapping[str, Any] = field(repr=False)
    steps: tuple[Step, ...]
    states: tuple[S, ...]

    @property
    def values(self) -> list[object]:
        """The events and outcomes in order (what `Stepper.follow` takes)."""
        return [step.value for step in self.steps]

    def replay(self, stepper: Stepper[S] | None = None) -> Stepper[S]:
        """Apply the walk to a new Stepper (or the one given), asserting the same states."""
        if stepper is None:
            stepper = Stepper(self.machine, copy.deepcopy(dict(self.context)))
        for step in self.steps:
            if step.outcome:
                stepper.step(step.value)
            else:
                stepper.send(step.value)
        stepper.assert_path(list(self.states))
        return stepper


def values_for(
    trigger: Hashable, strategies: Mapping[Any, SearchStrategy[Any]] | None = None
) -> SearchStrategy[Any]:
    """Values that select `trigger`: the trigger itself, or instances of a class trigger.

    For a class, the strategy given in `strategies` for it, else `st.builds(cls)` (which
    fills required arguments from their annotations).
    """
    from hypothesis import strategies as st

    if isinstance(trigger, type):
        if strategies is not None and trigger in strategies:
            return strategies[trigger]
        return st.builds(trigger)
    return st.just(trigger)


def walks(
    machine: Machine[S],
    *,
    context: ContextSpec = None,
    strategies: Mapping[Any, SearchStrategy[Any]] | None = None,
    max_steps: int = 20,
) -> SearchStrategy[Walk[S]]:
    """Walks of up to `max_steps` moves from the initial state that only take allowed triggers.

    Each move picks a row trigger from the current state and makes a value for it; a
    real run (through a Stepper, actions scripted) decides where it goes, so guards are
    respected: a trigger whose guards all refuse is dropped and another is drawn. A walk
    stops when the run finishes, when no trigger passes its guards, after `max_steps`
    moves, or (only where the run waits for an event) when hypothesis chooses to.
    `context` is a mapping (deep-copied per walk) or a function making one.
    """
    from hypothesis import strategies as st

    if max_steps < 0:
        raise ValueError(f"max_steps is {max_steps}; give 0 or more")

    @st.composite
    def build(draw: DrawFn) -> Walk[S]:
        start = dict(context() if callable(context) else (context or {}))
        stepper = Stepper(machine, copy.deepcopy(start))
        steps: list[Step] = []
        while not stepper.finished and len(steps) < max_steps:
            pending = stepper.pending
            if not pending and not draw(st.booleans()):
                break
            candidates = list(stepper.allowed)
            moved = False
            while candidates and not moved:
                trigger = draw(st.sampled_from(candidates))
                value = draw(values_for(trigger, strategies))
                try:
                    stepper.move(value)
                except GuardRejected:
                    candidates.remove(trigger)
                    continue
                steps.append(Step(value, pending))
                moved = True
            if not moved:
                break
        return Walk(machine, start, tuple(steps), tuple(stepper.path))

    return build()
