"""Stored names: how states and triggers are spelled in a store, and the former names read back."""

from __future__ import annotations

from collections.abc import Hashable
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsm.definition import State


def state_label(state: Hashable) -> str:
    """How a state is stored: a string as is; an Enum member by its value when that is a
    non-empty str (`"published"` for `FlowState.PUBLISHED`), else by its name (an IntEnum's
    `HIGH` reads better in SQL than `2`)."""
    if isinstance(state, Enum):
        value = state.value
        return value if isinstance(value, str) and value else state.name
    if isinstance(state, str):
        return state
    return repr(state)


def trigger_label(trigger: Hashable) -> str:
    """How a trigger is stored in the history: readable, and unique among a state's rows."""
    if isinstance(trigger, str):
        return trigger
    if isinstance(trigger, Enum):
        return f"{type(trigger).__qualname__}.{trigger.name}"
    if isinstance(trigger, type):
        return trigger.__qualname__
    return repr(trigger)


def former_labels(state: State[Any]) -> tuple[str, ...]:
    """The labels runs of `state` may be stored under from before: its `aliases`, then, for
    an Enum state stored by value, the member's name (older versions stored Enum states by
    name). Where one is another state's label now, that state wins."""
    names = tuple(state.aliases)
    member = state.name
    if isinstance(member, Enum) and member.name != state_label(member):
        names += (member.name,)
    return names
