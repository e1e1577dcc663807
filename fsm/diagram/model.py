"""The graph model every renderer reads: a Machine (and optionally a run's path) as plain data."""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from fsm.definition import Machine
from fsm.errors import DiagramError, callable_name, show
from fsm.runtime import Run, Transition
from fsm.table import Row
from fsm.timers import is_timeout_row

TIMES = "\N{MULTIPLICATION SIGN}"
"""Written before a fired row's count; spelled by name so no one mistakes it for an x."""


class NodeKind(StrEnum):
    """The role a state plays in the picture; `failure` wins over `final` and `initial`."""

    INITIAL = "initial"
    NORMAL = "normal"
    FINAL = "final"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class DiagramNode:
    """A state as drawn: a safe id, a label and how the run (if any) touched it."""

    id: str
    """An identifier safe in DOT and Mermaid source, unique within the graph."""
    label: str
    kind: NodeKind
    final: bool
    """Drawn as a final state; a failure state may be final or may wait (retry later)."""
    action: str | None = None
    """The name of the action run on entry, if any."""
    external: bool = False
    """The action calls another system, outside the database transaction."""
    description: str = ""
    visits: int = 0
    """How many times the highlighted run entered this state (its start counts once)."""
    current: bool = False
    """The highlighted run's current state."""

    @property
    def doing(self) -> str | None:
        """The action as the node shows it: `do / update_status`, `do / publish [external]`."""
        if self.action is None:
            return None
        return f"do / {self.action}" + (" [external]" if self.external else "")

    @property
    def initial(self) -> bool:
        return self.kind is NodeKind.INITIAL

    @property
    def failure(self) -> bool:
        return self.kind is NodeKind.FAILURE


@dataclass(frozen=True, slots=True)
class DiagramEdge:
    """A row of the transitions table as drawn, with how many times the run fired it."""

    source: str
    target: str
    trigger: str
    """The trigger's name: the event, the Enum member's name or the outcome class's name."""
    guard: str | None = None
    """The guard's name, shown in brackets after the trigger."""
    fired: int = 0
    timeout: str | None = None
    """For a timeout's row, when it fires: `after 7 days` (see fsm.timers)."""

    @property
    def label(self) -> str:
        """The trigger, the guard in brackets, a timeout in parentheses: `finish [ok]`,
        `expire (after 7 days)`."""
        label = self.trigger if self.guard is None else f"{self.trigger} [{self.guard}]"
        return label if self.timeout is None else f"{label} ({self.timeout})"

    @property
    def counted_label(self) -> str:
        """The label, followed by how many times the run fired the row: `start \u00d72`."""
        return f"{self.label} {TIMES}{self.fired}" if self.fired else self.label


@dataclass(frozen=True, slots=True)
class DiagramGraph:
    """A whole machine as drawn: nodes in declaration order, edges in table order."""

    name: str
    nodes: tuple[DiagramNode, ...]
    edges: tuple[DiagramEdge, ...]
    highlighted: bool = False
    """True when a run's path is overlaid (even an empty one, which only marks the start)."""
    run_id: str | None = None

    @property
    def initial(self) -> DiagramNode:
        return next(node for node in self.nodes if node.initial)

    def node(self, node_id: str) -> DiagramNode:
        """The node whose id is `node_id`; KeyError if there is none."""
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)


Highlight = Run[Any] | Iterable[Transition[Any] | Sequence[Any]]
"""A run, or its history: Transition records or (source, trigger, target[, outcome]) tuples."""


def name_of(value: object) -> str:
    """How a state or trigger is labelled: Enum members by name, classes by qualified name."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, type):
        return value.__qualname__
    return str(value)


def build_graph(
    machine: Machine[Any],
    *,
    highlight: Highlight | None = None,
    current: Hashable | None = None,
) -> DiagramGraph:
    """The machine as a graph; with `highlight`, the run's states, fired rows and current state.

    `highlight` is a Run or a sequence of transitions (Transition records, or tuples as stored
    by a persistence layer). The run's current state is `current` if given, else the run's
    state, else the last transition's target (the initial state for an empty history).
    A transition whose row is not in the table raises DiagramError.
    """
    ids = _node_ids(machine)
    visits: dict[Hashable, int] = {}
    fired: dict[int, int] = {}
    run_id: str | None = None
    here: Hashable | None = None
    if highlight is not None:
        if isinstance(highlight, Run):
            run_id = highlight.id
            here = highlight.state
            steps: list[tuple[Hashable, Hashable, Hashable]] = [
                (t.source, t.trigger, t.target) for t in highlight.history
            ]
        else:
            steps = [_step(record) for record in highlight]
        visits[machine.initial.name] = 1
        for source, trigger, target in steps:
            index = _row_index(machine, source, trigger, target)
            fired[index] = fired.get(index, 0) + 1
            visits[target] = visits.get(target, 0) + 1
        if here is None:
            here = steps[-1][2] if steps else machine.initial.name
    if current is not None:
        if current not in ids:
            names = ", ".join(show(s.name) for s in machine.states)
            raise DiagramError(
                f"current state {show(current)} is not a state of {machine.name!r}; states: {names}"
            )
        here = current
    nodes = tuple(
        DiagramNode(
            id=ids[state.name],
            label=name_of(state.name),
            kind=_kind(state.initial, state.final, state.failure),
            final=state.final,
            action=callable_name(state.action) if state.action is not None else None,
            external=state.external,
            description=state.description,
            visits=visits.get(state.name, 0),
            current=here is not None and state.name == here,
        )
        for state in machine.states
    )
    edges = tuple(
        DiagramEdge(
            source=ids[row.source],
            target=ids[row.target],
            trigger=name_of(row.trigger),
            guard=callable_name(row.guard) if row.guard is not None else None,
            fired=fired.get(index, 0),
            timeout=timeout.describe() if (timeout := is_timeout_row(machine, row)) else None,
        )
        for index, row in enumerate(machine.transitions)
    )
    return DiagramGraph(machine.name, nodes, edges, highlight is not None, run_id)


def _kind(initial: bool, final: bool, failure: bool) -> NodeKind:
    if failure:
        return NodeKind.FAILURE
    if final:
        return NodeKind.FINAL
    if initial:
        return NodeKind.INITIAL
    return NodeKind.NORMAL


def _step(record: object) -> tuple[Hashable, Hashable, Hashable]:
    if isinstance(record, Transition):
        return record.source, record.trigger, record.target
    if isinstance(record, Sequence) and not isinstance(record, str) and len(record) in (3, 4):
        return record[0], record[1], record[2]
    raise DiagramError(
        f"cannot highlight {record!r}: give a Run, Transition records "
        "or (source, trigger, target[, outcome]) tuples"
    )


def _row_index(machine: Machine[Any], source: Hashable, trigger: Hashable, target: Hashable) -> int:
    # A history record does not say which guard passed: the first matching row takes the count.
    for index, row in enumerate(machine.transitions):
        if _same(row, source, trigger, target):
            return index
    raise DiagramError(
        f"cannot highlight {show(source)} --{show(trigger)}--> {show(target)}: "
        f"machine {machine.name!r} has no such row"
    )


def _same(row: Row[Any], source: Hashable, trigger: Hashable, target: Hashable) -> bool:
    return row.source == source and row.trigger == trigger and row.target == target


_RESERVED = frozenset({"state", "note", "direction", "class", "classDef", "end", "as", "graph"})


def _node_ids(machine: Machine[Any]) -> dict[Hashable, str]:
    """Readable ids safe in DOT and Mermaid, made unique with a numeric suffix."""
    ids: dict[Hashable, str] = {}
    taken: set[str] = set()
    for state in machine.states:
        base = re.sub(r"\W", "_", name_of(state.name), flags=re.ASCII).strip("_") or "state"
        if base[0].isdigit() or base in _RESERVED:
            base = f"s_{base}"
        candidate, number = base, 2
        while candidate in taken:
            candidate, number = f"{base}_{number}", number + 1
        taken.add(candidate)
        ids[state.name] = candidate
    return ids
