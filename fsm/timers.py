"""Timeouts on waiting states: `State(..., after=(timedelta, trigger))`, checked, persisted, drawn.

A waiting state (one without an action) may declare a timeout: once the run has been in it
that long, a worker (fsm.worker) sends the run the timeout's trigger, which takes a row of
the table like any other event. The due time is stored with the step that enters the
state (`RunRecord.due_at`); leaving the state clears it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from fsm.errors import show
from fsm.table import Row, State

if TYPE_CHECKING:
    from fsm.definition import Machine

DEFAULT_TRIGGER = "timeout"
"""The trigger of `after=timedelta(...)` given without one."""


@dataclass(frozen=True, slots=True)
class Timeout:
    """A waiting state's timeout: after `after` in the state, `trigger` is sent to the run."""

    after: timedelta
    trigger: Hashable

    def describe(self) -> str:
        """The timeout as a diagram labels its row's trigger: `after 7 days`."""
        return f"after {duration(self.after)}"


def timeout_of(state: State[Any]) -> Timeout | None:
    """The state's timeout, read from its `after=`; None if it has none (or a malformed one,
    which `check_timeouts` reports)."""
    after = state.after
    if isinstance(after, timedelta):
        return Timeout(after, DEFAULT_TRIGGER)
    if isinstance(after, tuple) and len(after) == 2 and isinstance(after[0], timedelta):
        return Timeout(after[0], after[1])
    return None


def due_at(machine: Machine[Any], state: Hashable, entered: datetime) -> datetime | None:
    """When a run that entered `state` at `entered` is due to time out; None: never."""
    timeout = timeout_of(machine.state(state))
    return entered + timeout.after if timeout is not None else None


def is_timeout_row(machine: Machine[Any], row: Row[Any]) -> Timeout | None:
    """The timeout whose trigger `row` takes, if the row is one (from its source state)."""
    timeout = timeout_of(machine.state(row.source))
    return timeout if timeout is not None and timeout.trigger == row.trigger else None


def duration(span: timedelta) -> str:
    """A span as people say it: `7 days`, `48 hours`, `90 minutes`, `1.5 seconds`."""
    seconds = span.total_seconds()
    for unit, size in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def check_timeouts(states: Iterable[State[Any]], rows: Iterable[Row[Any]]) -> list[str]:
    """What is wrong with the states' `after=`: only waiting states time out, after a
    positive span, through a trigger a row from the state takes."""
    problems: list[str] = []
    triggers: dict[Hashable, set[Hashable]] = {}
    for row in rows:
        triggers.setdefault(row.source, set()).add(row.trigger)
    for state in states:
        if state.after is None:
            continue
        where = f"state {show(state.name)}"
        timeout = timeout_of(state)
        if timeout is None:
            problems.append(
                f"{where}: after={state.after!r} is not a timeout; give after=timedelta(...) "
                "or after=(timedelta(...), 'trigger')"
            )
            continue
        if state.final or state.action is not None:
            kind = "is final" if state.final else "runs an action"
            problems.append(
                f"{where} {kind}; only a waiting state (no action, not final) can time out"
            )
            continue
        if timeout.after <= timedelta(0):
            problems.append(f"{where}: after={timeout.after} is not a positive span of time")
        try:
            handled = timeout.trigger in triggers.get(state.name, set())
        except TypeError:
            problems.append(f"{where}: timeout trigger {timeout.trigger!r} is not hashable")
            continue
        if not handled:
            problems.append(
                f"{where} times out through {show(timeout.trigger)}, but no row from "
                f"{show(state.name)} takes it; add ({show(state.name)}, "
                f"{show(timeout.trigger)}, target)"
            )
    return problems
