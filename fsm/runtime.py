"""The runtime: the table compiled to a dispatch map, and the runs that walk it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fsm.errors import (
    CallbackError,
    GuardRejected,
    InvalidEvent,
    RestoreError,
    RunFinished,
    UnhandledOutcome,
    callable_name,
    show,
)

if TYPE_CHECKING:
    from fsm.definition import Action, Guard, Machine, Row

S = TypeVar("S", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Transition(Generic[S]):
    """One fired row in a run's history, with the value that fired it."""

    source: S
    trigger: Hashable
    target: S
    outcome: object
    """What fired the row: the action's outcome, or the event that was sent."""


Listener = Callable[["Run[S]", Transition[S]], None]
"""Called after each transition; if it raises, the transition is undone."""

_observers: list[Listener[Any]] = []
"""Listeners given to every run created while they are registered (see `observe`)."""


def observe(listener: Listener[Any]) -> Callable[[], None]:
    """Give `listener` to every run created from now on; returns the function that stops it.

    For tools that watch a whole process, such as transition coverage in a test session.
    Runs consult the observers once, when they are created: a transition costs nothing
    more while none is registered. Runs created before the call are not observed.
    """
    _observers.append(listener)

    def stop() -> None:
        if listener in _observers:
            _observers.remove(listener)

    return stop


class _Node:
    """A compiled state: its triggers mapped straight to the edges that leave it."""

    __slots__ = ("action", "edges", "final", "state")

    def __init__(self, state: Hashable, final: bool, action: Action | None) -> None:
        self.state = state
        self.final = final
        self.action = action
        self.edges: dict[Hashable, tuple[_Edge, ...]] = {}


class _Edge:
    """A compiled row."""

    __slots__ = ("guard", "row", "source", "target")

    def __init__(self, row: Row[Any], source: _Node, target: _Node) -> None:
        self.row = row
        self.source = source
        self.target = target
        self.guard: Guard | None = row.guard


def compile_machine(machine: Machine[S]) -> dict[S, _Node]:
    """Compile a validated machine's table into nodes keyed by state name."""
    nodes = {s.name: _Node(s.name, s.final, s.action) for s in machine.states}
    for row in machine.transitions:
        source = nodes[row.source]
        edge = _Edge(row, source, nodes[row.target])
        source.edges[row.trigger] = (*source.edges.get(row.trigger, ()), edge)
    return nodes


def lookup_edge(
    machine: Machine[Any],
    nodes: Mapping[Any, _Node],
    run_id: str,
    source: Hashable,
    trigger: Hashable,
    target: Hashable,
    outcome: object,
) -> tuple[_Edge, object]:
    """The compiled edge for a recorded transition, or RestoreError if the table has none."""
    node = nodes.get(source)
    for edge in node.edges.get(trigger, ()) if node is not None else ():
        if edge.target.state == target:
            return edge, outcome
    raise RestoreError(
        f"history has a transition {show(source)} --{show(trigger)}--> {show(target)} "
        "that the table does not have",
        machine=machine.name,
        run_id=run_id,
    )


class Run(Generic[S]):
    """One instance of a machine: its current state, context and history."""

    __slots__ = ("_listeners", "_log", "_node", "context", "id", "machine", "outcome")

    def __init__(
        self,
        machine: Machine[S],
        node: _Node,
        context: Mapping[str, Any] | None,
        run_id: str | None,
        log: Sequence[tuple[_Edge, object]],
        listeners: Sequence[Listener[S]],
    ) -> None:
        self.machine = machine
        self.id: str = run_id if run_id is not None else uuid.uuid4().hex
        self.context: dict[str, Any] = dict(context) if context is not None else {}
        self.outcome: object = log[-1][1] if log else None
        self._node = node
        self._log = list(log)
        self._listeners = [*_observers, *listeners]

    def __repr__(self) -> str:
        return f"<Run {self.id} of {self.machine.name!r} in {show(self.state)}>"

    @property
    def state(self) -> S:
        """The current state, in the form the definition gave it (a string or Enum member)."""
        state: S = self._node.state  # type: ignore[assignment]
        return state

    @property
    def finished(self) -> bool:
        """True once the run is in a final state."""
        return self._node.final

    @property
    def history(self) -> list[Transition[S]]:
        """Every transition so far, oldest first."""
        return [_record(edge, outcome) for edge, outcome in self._log]

    @property
    def allowed(self) -> tuple[Hashable, ...]:
        """The triggers the current state has rows for."""
        return tuple(self._node.edges)

    def add_listener(self, listener: Listener[S]) -> None:
        """Call `listener(run, transition)` after each transition of this run."""
        self._listeners.append(listener)

    def send(self, event: object) -> Run[S]:
        """Fire the row for `event` from the current state, then follow any actions."""
        try:
            edges = self._node.edges.get(event)
        except TypeError:  # an unhashable event object: only its type can match
            edges = None
        if edges is None:
            edges = self._edges_for(event, InvalidEvent)
        self._fire(self._choose(edges, event), event)
        if self._node.action is not None:
            self.advance()
        return self

    def fire(self, value: object, *, outcome: bool = False) -> Transition[S]:
        """Follow exactly one row for `value` and run no action, not even the target's.

        `value` is an event, or with `outcome=True` the outcome of the current state's
        action (an unknown one then raises UnhandledOutcome instead of InvalidEvent). The
        table, guards and listeners are the real ones; this is how a test tool such as
        `fsm.testing.Stepper` walks a run one transition at a time.
        """
        edges = self._edges_for(value, UnhandledOutcome if outcome else InvalidEvent)
        edge = self._choose(edges, value)
        self._fire(edge, value)
        return _record(edge, value)

    def advance(self) -> Run[S]:
        """Run the current state's action and follow its outcomes until the run waits or ends."""
        node = self._node
        while node.action is not None and not node.final:
            action = node.action
            try:
                outcome = action(self.context)
            except Exception as error:
                raise self._callback_error("action", action, error) from error
            self._fire(self._choose(self._edges_for(outcome, UnhandledOutcome), outcome), outcome)
            node = self._node
        return self

    def _edges_for(self, value: object, error: type[InvalidEvent]) -> tuple[_Edge, ...]:
        """The edges for an event or outcome: itself, else the most specific class in its MRO."""
        edges = self._node.edges
        try:
            found = edges.get(value)
        except TypeError:
            found = None
        if found is None:
            for cls in type(value).__mro__:
                found = edges.get(cls)
                if found is not None:
                    return found
            if self._node.final:
                error = RunFinished
            raise error(
                value, self.allowed, machine=self.machine.name, run_id=self.id, state=self.state
            )
        return found

    def _choose(self, edges: tuple[_Edge, ...], event: object) -> _Edge:
        """The first edge whose guard passes, in table order."""
        for edge in edges:
            guard = edge.guard
            if guard is None:
                return edge
            try:
                if guard(self):
                    return edge
            except Exception as error:
                raise self._callback_error("guard", guard, error) from error
        raise GuardRejected(
            event,
            [_guard_label(e.guard) for e in edges],
            machine=self.machine.name,
            run_id=self.id,
            state=self.state,
        )

    def _fire(self, edge: _Edge, outcome: object) -> None:
        previous = self.outcome
        self._node = edge.target
        self._log.append((edge, outcome))
        self.outcome = outcome
        if self._listeners:
            transition = _record(edge, outcome)
            for listener in self._listeners:
                try:
                    listener(self, transition)
                except Exception as error:
                    self._node = edge.source
                    self._log.pop()
                    self.outcome = previous
                    raise self._callback_error("listener", listener, error) from error

    def _callback_error(
        self, kind: str, callback: Callable[..., object], error: Exception
    ) -> CallbackError:
        return CallbackError(
            kind,
            callable_name(callback),
            error,
            machine=self.machine.name,
            run_id=self.id,
            state=self.state,
        )


def last_row(run: Run[S]) -> Row[S]:
    """The table row behind the run's latest transition (a Transition does not carry it)."""
    if not run._log:
        raise ValueError(f"{run!r} has no transition yet")
    row: Row[S] = run._log[-1][0].row
    return row


def _record(edge: _Edge, outcome: object) -> Transition[Any]:
    return Transition(edge.source.state, edge.row.trigger, edge.target.state, outcome)


def _guard_label(guard: Guard | None) -> str:
    return callable_name(guard) if guard is not None else "no guard"
