"""Exceptions of the engine: one base class, specific subclasses carrying their context."""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Sequence
from enum import Enum
from typing import Any


class FSMError(Exception):
    """Base class of every error the engine raises."""


class DefinitionError(FSMError):
    """A machine's definition has problems; `problems` lists every one of them."""

    def __init__(self, machine: str, problems: Sequence[str]) -> None:
        self.machine = machine
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"machine {machine!r} has {count} {noun}:\n{lines}")


class RunError(FSMError):
    """An error raised by a running instance; names the machine, run and state."""

    def __init__(self, message: str, *, machine: str, run_id: str, state: Hashable) -> None:
        self.machine = machine
        self.run_id = run_id
        self.state = state
        super().__init__(f"{message} (machine {machine!r}, run {run_id}, state {show(state)})")


class BindError(FSMError):
    """A run's collaborators (its steps object) lack actions its machine names, or it has none.

    `missing` lists the action names not found callable on the object.
    """

    def __init__(self, message: str, *, machine: str, missing: tuple[str, ...] = ()) -> None:
        self.machine = machine
        self.missing = missing
        super().__init__(f"machine {machine!r}: {message}")


class AsyncRequired(FSMError):
    """A sync run was given async callables (actions, guards, listeners) it cannot await;
    `callables` names them ("action fetch (state 'a')")."""

    def __init__(
        self, message: str, *, machine: str | None = None, callables: tuple[str, ...] = ()
    ) -> None:
        self.machine = machine
        self.callables = callables
        super().__init__(f"machine {machine!r}: {message}" if machine is not None else message)


class RestoreError(FSMError):
    """A stored run does not fit the machine's definition (unknown state, unknown row);
    `reason` is the message without the run and machine."""

    def __init__(self, message: str, *, machine: str, run_id: str) -> None:
        self.machine = machine
        self.run_id = run_id
        self.reason = message
        super().__init__(f"cannot restore run {run_id} of machine {machine!r}: {message}")


class InvalidEvent(RunError):
    """The event has no row from the run's current state; `allowed` lists what it accepts."""

    def __init__(
        self,
        event: object,
        allowed: Sequence[Hashable],
        *,
        machine: str,
        run_id: str,
        state: Hashable,
        why: str | None = None,
    ) -> None:
        self.event = event
        self.allowed = tuple(allowed)
        if why is None:
            names = ", ".join(show(a) for a in self.allowed) or "none"
            why = f"is not allowed here; allowed: {names}"
        else:
            why = f"is refused: {why}"
        super().__init__(f"event {show(event)} {why}", machine=machine, run_id=run_id, state=state)


class RunFinished(InvalidEvent):
    """The run has reached a final state and accepts no more events."""


class UnhandledOutcome(RunError):
    """A state's action returned an outcome that no row from that state handles."""

    def __init__(
        self,
        outcome: object,
        handled: Sequence[Hashable],
        action: str,
        *,
        machine: str,
        run_id: str,
        state: Hashable,
    ) -> None:
        self.outcome = outcome
        self.handled = tuple(handled)
        self.action = action
        names = ", ".join(show(h) for h in self.handled) or "none"
        super().__init__(
            f"action {action} returned {show(outcome)}, which no row from here handles; "
            f"handled: {names}",
            machine=machine,
            run_id=run_id,
            state=state,
        )


class GuardRejected(RunError):
    """Rows matched the trigger but every guard refused; `guards` names them in table order."""

    def __init__(
        self,
        trigger: object,
        guards: Sequence[str],
        targets: Sequence[Hashable],
        *,
        machine: str,
        run_id: str,
        state: Hashable,
    ) -> None:
        self.trigger = trigger
        self.guards = tuple(guards)
        self.targets = tuple(targets)
        tried = ", ".join(
            f"{g} -> {show(t)}" for g, t in zip(self.guards, self.targets, strict=True)
        )
        super().__init__(
            f"no row fired for {show(trigger)}: every guard refused ({tried})",
            machine=machine,
            run_id=run_id,
            state=state,
        )


class CallbackError(RunError):
    """An action, guard or listener raised; the run stays where it was. See `__cause__`."""

    def __init__(
        self, kind: str, name: str, error: BaseException, *, machine: str, run_id: str, state: Any
    ) -> None:
        self.kind = kind
        self.name = name
        self.error = error
        super().__init__(
            f"{kind} {name} raised {type(error).__name__}: {error}",
            machine=machine,
            run_id=run_id,
            state=state,
        )


class DiagramError(FSMError):
    """A diagram cannot be drawn: a bad highlight, a missing library or a renderer that failed."""


class RendererNotFound(DiagramError):
    """No program to turn DOT into SVG or PNG; the message says what to install."""


def show(value: object) -> str:
    """How states, triggers and events are named in messages."""
    if isinstance(value, type):
        return value.__qualname__
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, Enum):
        return f"{type(value).__name__}.{value.name}"
    return repr(value)


def callable_name(function: Callable[..., object]) -> str:
    """An action's, guard's or listener's name as shown in messages and diagrams."""
    if isinstance(function, functools.partial):
        return f"partial({callable_name(function.func)})"
    return getattr(function, "__name__", None) or type(function).__name__
