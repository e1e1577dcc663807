"""Export a Machine as an equivalent python-statemachine class (needs python-statemachine 3)."""

from __future__ import annotations

import keyword
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsm.definition import Guard, Machine
from fsm.errors import FSMError, show


class ExportError(FSMError):
    """A machine cannot be exported, or a value has no event in the exported class."""


@dataclass(frozen=True)
class Exported:
    """The exported class and how the machine's states and triggers are named in it."""

    machine: Machine[Any]
    cls: type[Any]
    """A `statemachine.StateMachine` subclass; instantiate it with `exported.create(context)`."""
    state_ids: Mapping[Hashable, str]
    """Our state name -> the state's attribute name in the class (its `value` is our name)."""
    event_ids: Mapping[Hashable, str]
    """Our trigger (event, Enum member or outcome class) -> the event name in the class."""
    _rows: dict[Hashable, list[Hashable]] = field(repr=False, default_factory=dict)

    def create(self, context: Mapping[str, Any] | None = None) -> Any:
        """A new instance of the exported class, in the initial state, guards seeing `context`."""
        return self.cls(model=RunView(self.machine, dict(context or {})))

    def event_for(self, state: Hashable, value: object) -> str:
        """The event to send in `state` for `value`, dispatched as the engine does.

        The value itself if it is a trigger from `state`, else the most specific class in
        its MRO that is one: python-statemachine events are names, so outcome instances
        are resolved to their class's event here, per state. A value no row from `state`
        takes falls back to any trigger of the machine (python-statemachine then refuses
        it with TransitionNotAllowed); one that matches no trigger at all is an ExportError.
        """
        for triggers in (self._rows.get(state, []), list(self.event_ids)):
            try:
                if value in triggers:
                    return self.event_ids[value]
            except TypeError:  # unhashable values only match by class
                pass
            for cls in type(value).__mro__:
                if cls in triggers:
                    return self.event_ids[cls]
        raise ExportError(
            f"{show(value)} matches no trigger of machine {self.machine.name!r}; "
            f"triggers: {', '.join(show(t) for t in self.event_ids)}"
        )

    def send(self, instance: Any, value: object) -> Hashable:
        """Send `value` (an event or an outcome) to `instance`; return the state it ends in."""
        state = self.state_of(instance)
        instance.send(self.event_for(state, value))
        # Like Run.outcome: guards see the value that fired the previous row.
        model: RunView = instance.model
        model.outcome = value
        return self.state_of(instance)

    def state_of(self, instance: Any) -> Hashable:
        """The instance's current state, as our state name."""
        (value,) = instance.configuration_values
        state: Hashable = value
        return state


class RunView:
    """What a guard sees under python-statemachine: the model holds the context.

    Guards are called with this view instead of a Run: it has `context`, `machine`,
    `state` (the source state) and `outcome` (the value that fired the previous row);
    not `history` nor `id`.
    """

    def __init__(self, machine: Machine[Any], context: dict[str, Any]) -> None:
        self.machine = machine
        self.context = context
        self.state: Any = None  # python-statemachine keeps the current state value here
        self.outcome: object = None
        """The value that fired the latest row, as `Run.outcome`."""


def to_statemachine(machine: Machine[Any], *, class_name: str | None = None) -> Exported:
    """Build a python-statemachine `StateMachine` class with the same states, rows and guards.

    Limits: actions are not exported (an action's outcome becomes an event the caller
    sends, see `Exported.event_for`); guards get a `RunView`, not a Run; states keep
    their names as python-statemachine state values, so names must be hashable values
    python-statemachine accepts (strings, Enum members, numbers).
    """
    from statemachine import State as SMState
    from statemachine import StateMachine

    reserved = set(dir(StateMachine)) | _instance_attributes()
    taken: set[str] = set()

    def unique(base: str) -> str:
        name = re.sub(r"\W", "_", base) or "_"
        if name[0].isdigit() or name.startswith("_") or keyword.iskeyword(name):
            name = f"x{name}"
        while name in reserved or name in taken:
            name += "_"
        taken.add(name)
        return name

    state_ids: dict[Hashable, str] = {}
    states: dict[Hashable, Any] = {}
    for state in machine.states:
        state_ids[state.name] = unique(_text(state.name))
        states[state.name] = SMState(
            name=_text(state.name),
            value=state.name,
            initial=state.initial,
            final=state.final,
        )
    event_ids: dict[Hashable, str] = {}
    rows: dict[Hashable, list[Hashable]] = {}
    for row in machine.transitions:
        if row.trigger not in event_ids:
            event_ids[row.trigger] = unique(_text(row.trigger))
        rows.setdefault(row.source, [])
        if row.trigger not in rows[row.source]:
            rows[row.source].append(row.trigger)
        options: dict[str, Any] = {"event": event_ids[row.trigger]}
        if row.guard is not None:
            options["cond"] = _condition(row.guard)
        # Rows keep table order: python-statemachine tries a state's transitions in order.
        states[row.source].to(states[row.target], **options)
    attrs = {state_ids[name]: sm_state for name, sm_state in states.items()}
    name = class_name or unique(f"{_text(machine.name).title().replace('_', '')}Machine")
    try:
        cls = type(name, (StateMachine,), attrs)
    except Exception as error:
        raise ExportError(
            f"python-statemachine refused machine {machine.name!r}: {error}"
        ) from error
    return Exported(machine, cls, state_ids, event_ids, rows)


def _instance_attributes() -> set[str]:
    """Attributes python-statemachine sets on instances (`model`, ...): no id may shadow them."""
    from statemachine import State as SMState
    from statemachine import StateMachine

    one, two = SMState(initial=True), SMState(final=True)
    one.to(two, event="go")
    probe = type("Probe", (StateMachine,), {"one": one, "two": two})()
    return set(vars(probe))


def _condition(guard: Guard) -> Any:
    def cond(model: RunView) -> bool:
        # python-statemachine injects callback arguments by name; `model` is our RunView.
        return bool(guard(model))  # type: ignore[arg-type]

    cond.__name__ = getattr(guard, "__name__", "guard")
    return cond


def _text(value: object) -> str:
    return show(value).strip("'\"")
