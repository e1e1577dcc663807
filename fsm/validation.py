"""Definition-time checks: every problem of a table found and reported at once."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

from fsm.errors import callable_name, show
from fsm.labels import former_labels, state_label, trigger_label
from fsm.table import Guard, Row, RowSpec, State
from fsm.timers import check_timeouts

if TYPE_CHECKING:
    from fsm.definition import Machine


def normalize_rows(specs: Iterable[RowSpec[Any]]) -> tuple[list[Row[Any]], list[str]]:
    """Turn tuples into Rows; a malformed spec becomes a problem, not a crash."""
    rows: list[Row[Any]] = []
    problems: list[str] = []
    for number, spec in enumerate(specs, 1):
        if isinstance(spec, Row):
            rows.append(spec)
        elif isinstance(spec, tuple) and len(spec) in (3, 4):
            rows.append(Row(*spec))
        else:
            problems.append(
                f"row {number} is {spec!r}; a row is (source, trigger, target[, guard]) or a Row"
            )
    return rows, problems


def validate(machine: Machine[Any]) -> list[str]:
    """Every problem of the machine's definition: root causes first, then the graph problems
    (unreachable states, dead ends, loops) they may cause."""
    problems: list[str] = []
    if not machine.name or not isinstance(machine.name, str):
        problems.append(f"the machine's name is {machine.name!r}; give a non-empty string")
    if machine.steps is not None and not isinstance(machine.steps, type):
        problems.append(
            f"steps={machine.steps!r} is not a class; give the protocol whose methods the "
            "actions are (action=Steps.method)"
        )
    states = [s for s in machine.states if isinstance(s, State)]
    problems += [
        f"{s!r} is not a State; declare states as State(name, ...)"
        for s in machine.states
        if not isinstance(s, State)
    ]
    names: dict[Hashable, State[Any]] = {}
    for state in states:
        if state.name is None or unhashable(state.name):
            problems.append(
                f"state name {state.name!r} is not usable; name states with strings or Enum members"
            )
        elif state.name in names:
            problems.append(f"state {show(state.name)} is declared twice")
        else:
            names[state.name] = state
    states = list(names.values())
    problems += _check_state_types(states)
    problems += _check_initial(states)
    rows = _check_rows(machine.transitions, names, problems)
    problems += _check_states(states, rows, machine)
    problems += _check_shadowing(rows)
    problems += _check_outcomes(states, rows)
    problems += check_timeouts(states, rows)
    problems += _check_state_aliases(states)
    problems += _check_aliases(machine.aliases, rows)
    problems += _check_cancel(machine.cancel, rows)
    problems += _check_graph(states, rows)
    return problems


def _check_state_types(states: list[State[Any]]) -> list[str]:
    kinds: dict[type, list[str]] = {}
    for state in states:
        kinds.setdefault(type(state.name), []).append(show(state.name))
    if len(kinds) < 2:
        return []
    listed = "; ".join(f"{kind.__qualname__}: {', '.join(names)}" for kind, names in kinds.items())
    return [
        f"states are of {len(kinds)} types ({listed}); name every state with a member of "
        "one Enum, or every state with a string"
    ]


def _check_initial(states: list[State[Any]]) -> list[str]:
    initial = [s for s in states if s.initial]
    if not initial:
        return ["no initial state; mark exactly one State(..., initial=True)"]
    if len(initial) > 1:
        listed = ", ".join(show(s.name) for s in initial)
        return [f"several initial states ({listed}); mark exactly one"]
    return []


def _check_rows(
    rows: tuple[Row[Any], ...], names: dict[Hashable, State[Any]], problems: list[str]
) -> list[Row[Any]]:
    """Report rows naming unknown states or with bad parts; return the usable rows."""
    allowed = ", ".join(show(n) for n in names) or "none"
    usable = []
    for number, row in enumerate(rows, 1):
        bad = False
        for role, state in (("source", row.source), ("target", row.target)):
            if unhashable(state) or state not in names:
                problems.append(
                    f"row {number} {row.describe()}: unknown {role} state {show(state)}; "
                    f"states: {allowed}"
                )
                bad = True
        if unhashable(row.trigger) or row.trigger is None:
            problems.append(
                f"row {number} {row.describe()}: trigger {row.trigger!r} is not usable; "
                "a trigger is an event name, an Enum member or an outcome class"
            )
            bad = True
        if row.guard is not None and not callable(row.guard):
            problems.append(f"row {number} {row.describe()}: guard {row.guard!r} is not callable")
        elif row.guard is not None:
            problems += [f"row {number} {row.describe()}: {p}" for p in _check_guard(row.guard)]
        if not bad:
            usable.append(row)
    return usable


def _check_guard(guard: Guard) -> list[str]:
    problems: list[str] = []
    name = callable_name(guard)
    try:
        signature = inspect.signature(guard)
    except (TypeError, ValueError):  # some builtins have no readable signature: accept them
        return problems
    try:
        signature.bind(None)  # any one value stands for the run
    except TypeError:
        taken = ", ".join(signature.parameters)
        problems.append(
            f"guard {name} takes ({taken}); a guard is called with one argument, the run"
        )
    return problems


def _check_states(
    states: list[State[Any]], rows: list[Row[Any]], machine: Machine[Any]
) -> list[str]:
    problems: list[str] = []
    sources = {row.source for row in rows}
    for state in states:
        action = state.action
        if state.final and state.name in sources:
            problems.append(f"final state {show(state.name)} has outgoing rows; final means final")
        if action is None:
            if state.outcomes is not None:
                problems.append(
                    f"state {show(state.name)} lists outcomes= but has no action to return them"
                )
            if state.external:
                problems.append(
                    f"state {show(state.name)} is external=True but has no action to call"
                )
        elif not callable(action):
            problems.append(f"state {show(state.name)}: action {action!r} is not callable")
        elif state.final:
            problems.append(
                f"final state {show(state.name)} has action {callable_name(action)}; "
                "a final state cannot follow an outcome"
            )
        else:
            problems += _check_action(state, machine.step_name(action) is not None)
    return problems


def _check_action(state: State[Any], step: bool) -> list[str]:
    """The action can be called the way the runtime calls it: with the context, and for an
    external action the step's idempotency key too (after `self` for a steps method)."""
    action: Callable[..., object] = state.action  # type: ignore[assignment]
    try:
        signature = inspect.signature(action)
    except (TypeError, ValueError):  # some builtins have no readable signature: accept them
        return []
    given = (None,) * (int(step) + 1 + int(state.external))
    try:
        signature.bind(*given)
    except TypeError:
        taken = ", ".join(signature.parameters)
        called = "the context and the step's idempotency key" if state.external else "the context"
        kind = "an external action" if state.external else "an action"
        return [
            f"state {show(state.name)}: action {callable_name(action)} takes ({taken}); "
            f"{kind} is called with {called}"
        ]
    return []


def _check_state_aliases(states: list[State[Any]]) -> list[str]:
    """A state's former names (aliases=) are strings no state is stored under now, and no
    former name stands for two states."""
    problems: list[str] = []
    labels = {state_label(s.name): s for s in states}
    owners: dict[str, State[Any]] = {}
    for state in states:
        wrong = _wrong_aliases(state, labels)
        problems += wrong
        if wrong:
            continue
        for old in former_labels(state):
            if old in labels:
                continue  # an Enum state's older name that is a label now gives way to it
            other = owners.setdefault(old, state)
            given = [s for s in (other, state) if old in s.aliases]
            if other is state or not given:
                continue  # two Enum member names meet only in states of two types, see above
            why = " (an Enum state's member name counts: older versions stored it)"
            problems.append(
                f"former name {old!r} is given to states {show(other.name)} and "
                f"{show(state.name)}{why if len(given) < 2 else ''}; it can stand for one "
                "state only"
            )
    return problems


def _wrong_aliases(state: State[Any], labels: dict[str, State[Any]]) -> list[str]:
    """What is wrong with one state's aliases= on its own."""
    where = f"state {show(state.name)}"
    if not isinstance(state.aliases, tuple | list):
        return [
            f"{where}: aliases={state.aliases!r} is not a tuple; list the state's former "
            "names, e.g. aliases=('old_name',)"
        ]
    wrong: list[str] = []
    for alias in state.aliases:
        if not isinstance(alias, str) or not alias:
            wrong.append(
                f"{where}: alias {alias!r} is not a name; an alias is a former stored name "
                "of the state, a non-empty string"
            )
        elif alias in labels:
            wrong.append(
                f"{where}: alias {alias!r} is the stored name of state "
                f"{show(labels[alias].name)} now; an alias must be a name no state has"
            )
    return wrong


def _check_aliases(aliases: Mapping[str, Hashable], rows: list[Row[Any]]) -> list[str]:
    """The machine's aliases= map former names (not stored names of today) to a trigger of
    the table or to a dataclass or Enum."""
    problems: list[str] = []
    triggers = {trigger_label(row.trigger): row.trigger for row in rows}
    for old, new in aliases.items():
        if not isinstance(old, str) or not old:
            problems.append(
                f"aliases: key {old!r} is not a name; a key is a former stored name, a trigger "
                "label ('Failed') or a type tag ('payments.flow.Failed')"
            )
        elif old in triggers:
            problems.append(
                f"aliases: {old!r} is the stored name of trigger {show(triggers[old])} now; "
                "an alias must be a name nothing is stored under today"
            )
        trigger = new in triggers.values()  # compared by ==: an unhashable value is no trigger
        storable = isinstance(new, type) and (
            dataclasses.is_dataclass(new) or issubclass(new, Enum)
        )
        if not trigger and not storable:
            problems.append(
                f"aliases: {old!r} maps to {new!r}, which is neither a trigger of the table "
                "nor a dataclass or Enum; map a former name to what it became"
            )
    return problems


def _check_cancel(cancel: Hashable | None, rows: list[Row[Any]]) -> list[str]:
    """cancel= must name the trigger of a row: cancelling goes through the table."""
    if cancel is None or any(_same(row.trigger, cancel) for row in rows):
        return []
    triggers = ", ".join(dict.fromkeys(show(row.trigger) for row in rows)) or "none"
    return [
        f"cancel={show(cancel)} is the trigger of no row; add a row for it from each state a "
        f"run may be cancelled in, or name one of the triggers: {triggers}"
    ]


def _same(trigger: Hashable, value: object) -> bool:
    return not unhashable(value) and trigger == value


def _check_graph(states: list[State[Any]], rows: list[Row[Any]]) -> list[str]:
    forward: dict[Hashable, set[Hashable]] = {s.name: set() for s in states}
    backward: dict[Hashable, set[Hashable]] = {s.name: set() for s in states}
    for row in rows:
        forward[row.source].add(row.target)
        backward[row.target].add(row.source)
    problems = [
        f"state {show(s.name)} is not final and has no outgoing row; "
        "add a row from it or mark it final=True"
        for s in states
        if not s.final and not forward[s.name]
    ]
    initial = [s.name for s in states if s.initial]
    if len(initial) == 1:
        reached = _reach(initial, forward)
        problems += [
            f"state {show(s.name)} is unreachable from the initial state {show(initial[0])}"
            for s in states
            if s.name not in reached
        ]
    finals = [s.name for s in states if s.final]
    if not finals:
        problems.append("no final state; mark at least one State(..., final=True)")
    else:
        can_finish = _reach(finals, backward)
        problems += [
            f"state {show(s.name)} can never reach a final state (a loop with no way out)"
            for s in states
            if s.name not in can_finish and forward[s.name]
        ]
    return problems


def _reach(starts: list[Hashable], edges: dict[Hashable, set[Hashable]]) -> set[Hashable]:
    seen = set(starts)
    queue = deque(starts)
    while queue:
        for nxt in edges[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _check_shadowing(rows: list[Row[Any]]) -> list[str]:
    problems = []
    unguarded: dict[tuple[Hashable, Hashable], Row[Any]] = {}
    for row in rows:
        key = (row.source, row.trigger)
        earlier = unguarded.get(key)
        if earlier is not None:
            problems.append(
                f"row {row.describe()} can never fire: the earlier row {earlier.describe()} "
                "has no guard and always wins"
            )
        elif row.guard is None:
            unguarded[key] = row
    return problems


def _check_outcomes(states: list[State[Any]], rows: list[Row[Any]]) -> list[str]:
    """The sealed-class check: each member of an action's closed return family has a row."""
    problems: list[str] = []
    for state in states:
        if state.action is None or state.final or not callable(state.action):
            continue
        own = [row for row in rows if row.source == state.name]
        triggers = {row.trigger for row in own}
        where = f"state {show(state.name)}: action {callable_name(state.action)}"
        family = _family(state, where, triggers, problems)
        if family is None:
            continue
        missing = [m for m in family if not _handled(m, triggers)]
        if missing:
            problems.append(
                f"{where} can return {_listed(missing)} but no row from {show(state.name)} "
                "handles it"
            )
        problems += [
            f"row {row.describe()} can never fire: {callable_name(state.action)} "
            f"returns only {_listed(family)}"
            for row in own
            if not any(_matches(member, row.trigger) for member in family)
        ]
    return problems


def _family(
    state: State[Any], where: str, triggers: set[Hashable], problems: list[str]
) -> tuple[object, ...] | None:
    """The family to check the state's rows against (outcomes=, else the annotation), or
    None when there is nothing to prove; what is wrong with either goes to `problems`."""
    try:
        declared = _declared(state.outcomes)
    except ValueError as error:
        problems.append(f"{where}: {error}")
        return None
    try:
        annotation = _return_annotation(state.action, known=triggers)
    except Exception as error:  # an unreadable annotation would silently skip the proof
        if declared is not None:
            return declared  # outcomes= stands in for an annotation that cannot be read
        if isinstance(error, NameError):  # a locally defined outcome class that no row names
            problems.append(
                f"{where} names {error.name} in its return annotation, but no row from "
                f"{show(state.name)} handles it (and it cannot be resolved from the action)"
            )
        else:
            problems.append(
                f"{where}: its return annotation cannot be read ({type(error).__name__}: "
                f"{error}); define the outcome types where the action's module can see them"
            )
        return None
    if annotation is inspect.Signature.empty:
        if declared is None:
            problems.append(
                f"{where} has no return annotation, so its outcomes cannot be checked; "
                "annotate its return with a closed family (A | B, an Enum, a Literal) or "
                f"list them with State({show(state.name)}, ..., outcomes=(A, B))"
            )
        return declared
    annotated = _members(annotation)  # None: open (Any, object, str), nothing to prove
    if declared is None:
        return annotated
    if annotated is not None and set(annotated) != set(declared):
        problems.append(
            f"{where}: its return annotation names {_listed(annotated)} but outcomes= "
            f"lists {_listed(declared)}; make them agree or drop one"
        )
    return declared


def _declared(outcomes: object) -> tuple[object, ...] | None:
    """A state's outcomes= as a family (an Enum class stands for its members, None for
    NoneType), None if not given; ValueError saying what is wrong with it."""
    if outcomes is None:
        return None
    if not isinstance(outcomes, tuple | list) or not outcomes:
        raise ValueError(
            f"outcomes={outcomes!r} is not a non-empty tuple; list them as outcomes=(A, B)"
        )
    members: list[object] = []
    for value in outcomes:
        if isinstance(value, type) and issubclass(value, Enum):
            members += value
        elif value is None:
            members.append(type(None))  # as in an annotation: a row on NoneType handles it
        elif unhashable(value):
            raise ValueError(f"outcomes= lists {value!r}, which cannot be a trigger")
        else:
            members.append(value)
    return tuple(members)


def _listed(members: Iterable[object]) -> str:
    return ", ".join(show(m) for m in members)


def state_outcomes(state: State[Any], known: Iterable[Hashable] = ()) -> tuple[object, ...] | None:
    """The closed family a state's action returns: its outcomes= if given, else what the
    action's return annotation names (see `outcome_family`); None if neither names one."""
    declared = _declared(state.outcomes)
    if declared is not None or state.action is None:
        return declared
    return outcome_family(state.action, known)


def outcome_family(action: object, known: Iterable[Hashable] = ()) -> tuple[object, ...] | None:
    """The closed family an action's return annotation names, or None if it names none.

    String annotations resolve in the action's module and, for outcome types defined
    locally, among the `known` triggers (classes and Enum members of the table).
    """
    annotation = _return_annotation(action, known)
    return None if annotation is inspect.Signature.empty else _members(annotation)


def _return_annotation(action: object, known: Iterable[Hashable]) -> Any:
    """The action's resolved return annotation, or inspect.Signature.empty if it has none."""
    local: dict[str, Any] = {}
    for trigger in known:  # builtins among them map to themselves: harmless
        kind = trigger if isinstance(trigger, type) else type(trigger)
        local[kind.__name__] = kind
    hints = typing.get_type_hints(_function_of(action), localns=local)
    return hints.get("return", inspect.Signature.empty)


def _function_of(action: object) -> Any:
    """What declares how `action` is called: through partials, a callable object's __call__."""
    while isinstance(action, functools.partial):
        action = action.func
    if not isinstance(action, types.FunctionType | types.MethodType | type):
        action = type(action).__call__
    return action


def is_async(function: object) -> bool:
    """True for an `async def` callable (through partials, a callable object's __call__)."""
    return inspect.iscoroutinefunction(_function_of(function))


def awaited(machine: Machine[Any]) -> tuple[str, ...]:
    """The machine's own async callables, named for a message: actions that are not steps
    methods (those are the bound object's, see Machine.bind) and guards."""
    found = [
        f"action {callable_name(state.action)} (state {show(state.name)})"
        for state in machine.states
        if state.action is not None
        and machine.step_name(state.action) is None
        and is_async(state.action)
    ]
    found += [
        f"guard {callable_name(row.guard)} (row {row.describe()})"
        for row in machine.transitions
        if row.guard is not None and is_async(row.guard)
    ]
    return tuple(found)


def _members(annotation: Any) -> tuple[object, ...] | None:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members: list[object] = []
        for arg in typing.get_args(annotation):
            members += _members(arg) or ()
        return tuple(members) or None
    if origin is typing.Literal:
        return typing.get_args(annotation)
    if annotation is None or annotation is type(None):
        return (type(None),)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(annotation)
    if isinstance(annotation, type) and annotation.__module__ not in ("builtins", "typing"):
        return (annotation,)
    return None  # Any, object, str, generics: open, nothing to prove


def _handled(member: object, triggers: set[Hashable]) -> bool:
    """True when some row catches `member`: itself, a base class, or all its subclasses."""
    if isinstance(member, type):
        if any(cls in triggers for cls in member.__mro__):
            return True
        subclasses: list[type] = member.__subclasses__()
        return bool(subclasses) and all(_handled(sub, triggers) for sub in subclasses)
    if not unhashable(member) and member in triggers:
        return True
    return any(cls in triggers for cls in type(member).__mro__)


def _matches(member: object, trigger: Hashable) -> bool:
    """True when a row on `trigger` can fire for some outcome in `member`."""
    if isinstance(member, type):
        return trigger in member.__mro__ or (
            isinstance(trigger, type) and issubclass(trigger, member)
        )
    return member == trigger or trigger in type(member).__mro__


def unhashable(value: object) -> bool:
    """True for values that cannot be dict keys (and so cannot name a state or trigger)."""
    try:
        hash(value)
    except TypeError:
        return True
    return False
