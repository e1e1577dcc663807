"""A hypothesis strategy of random valid machines, for the differential and walk tests."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from hypothesis import assume
from hypothesis import strategies as st

from fsm import DefinitionError, Machine, Row, State


class Signal(Enum):
    """Enum-member triggers."""

    GO = "go"
    STOP = "stop"


@dataclass(frozen=True)
class Base:
    """An outcome class; rows on it also catch Sub unless a Sub row is there."""


@dataclass(frozen=True)
class Sub(Base):
    """A more specific outcome."""


TRIGGERS: list[Hashable] = ["a", "b", "c", Signal.GO, Signal.STOP, Base, Sub]


def examples(trigger: Hashable) -> list[object]:
    """Values that select `trigger` (a Base row is also selected by a Sub)."""
    if trigger is Base:
        return [Base(), Sub()]
    if trigger is Sub:
        return [Sub()]
    return [trigger]


def flag_guard(name: str) -> Any:
    """A guard reading the flag `name` of the context (true when absent)."""

    def guard(run: Any) -> bool:
        return bool(run.context.get("flags", {}).get(name, True))

    guard.__name__ = name
    return guard


GUARDS = [flag_guard(f"flag{i}") for i in range(3)]


def never_called(context: dict[str, Any]) -> object:
    """An action the tests always script; calling it is a bug."""
    raise AssertionError("a real action ran")


class Exhausted(Exception):
    """A rotating action ran out of budget (this is how runs of action cycles stop)."""


def rotating(options: list[object]) -> Any:
    """A deterministic action: the next of `options` per call, while context["budget"] lasts."""

    def action(context: dict[str, Any]) -> object:
        if context.get("budget", 0) <= 0:
            raise Exhausted()
        context["budget"] -= 1
        context["tick"] = context.get("tick", 0) + 1
        return options[context["tick"] % len(options)]

    return action


@st.composite
def machines(draw: st.DrawFn, with_actions: bool = False, runnable: bool = False) -> Machine[str]:
    """Valid machines of 2 to 6 states: every state reachable, every way leads to a final.

    With actions, some open states get one: `never_called` (for scripted tests) or, if
    `runnable`, a `rotating` action over values for the triggers of the rows leaving it.
    """
    size = draw(st.integers(2, 6))
    finals = draw(st.integers(1, size - 1))
    open_count = size - finals
    names = [f"s{i}" for i in range(size)]
    trigger = st.sampled_from(TRIGGERS)
    guard = st.none() | st.sampled_from(GUARDS)
    rows: list[Row[str]] = []
    # Reach each state from an open state before it, and leave each open state forwards.
    for i in range(1, size):
        earlier = draw(st.integers(0, min(i, open_count) - 1))
        rows.append(Row(names[earlier], draw(trigger), names[i]))
    for i in range(open_count):
        rows.append(Row(names[i], draw(trigger), names[draw(st.integers(i + 1, size - 1))]))
    for _ in range(draw(st.integers(0, 8))):
        source = names[draw(st.integers(0, open_count - 1))]
        target = names[draw(st.integers(0, size - 1))]
        rows.append(Row(source, draw(trigger), target, draw(guard)))
    order = draw(st.permutations(rows))
    states = []
    for i, name in enumerate(names):
        action = None
        if with_actions and i < open_count and draw(st.booleans()):
            options = [v for row in order if row.source == name for v in examples(row.trigger)]
            action = rotating(options) if runnable else never_called
        states.append(State(name, initial=i == 0, final=i >= open_count, action=action))
    try:
        return Machine("generated", states=states, transitions=order)
    except DefinitionError:
        assume(False)  # a shadowed row: hypothesis draws another table
        raise


flags = st.fixed_dictionaries({g.__name__: st.booleans() for g in GUARDS})
"""The context flags the generated guards read."""
