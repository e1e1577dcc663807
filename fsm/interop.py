"""Export a Machine as an equivalent python-statemachine class (needs python-statemachine 3)."""

from __future__ import annotations

import keyword
import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsm.defaults import new_id
from fsm.definition import Machine
from fsm.errors import FSMError, show
from fsm.runtime import Transition
from fsm.table import Guard, Row


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
    _rows: Mapping[Hashable, list[Hashable]] = field(repr=False, default_factory=dict)

    def create(
        self, context: Mapping[str, Any] | None = None, *, model: RunView | None = None
    ) -> Any:
        """A new instance in the initial state, its actions run if they are exported.

        Guards and actions see `context` (copied) as `run.context`; pass `model` to keep
        hold of the RunView (its `history`, `error`) even if the initial action fails.
        An action's exception is raised here, as `Machine.start` would.
        """
        view = model if model is not None else RunView(self.machine, dict(context or {}))
        instance = self.cls(model=view)
        _raise_action_error(view)
        return instance

    def event_for(self, state: Hashable, value: object) -> str:
        """The event to send in `state` for `value`, dispatched as the engine does.

        The value itself if it is a trigger from `state`, else the most specific class in
        its MRO that is one: python-statemachine events are names, so outcome instances
        are resolved to their class's event here, per state. A value no row from `state`
        takes falls back to any trigger of the machine (python-statemachine then refuses
        it with TransitionNotAllowed); one that matches no trigger at all is an ExportError.
        """
        return _event_for(self.machine, self._rows, self.event_ids, state, value)

    def send(self, instance: Any, value: object) -> Hashable:
        """Send `value` (an event or an outcome) to `instance`; return the state it ends in."""
        instance.model.following = False
        instance.send(self.event_for(self.state_of(instance), value), fsm_value=value)
        _raise_action_error(instance.model)
        return self.state_of(instance)

    def state_of(self, instance: Any) -> Hashable:
        """The instance's current state, as our state name."""
        (value,) = instance.configuration_values
        state: Hashable = value
        return state


class RunView:
    """The model of an exported instance: what guards and actions see instead of a Run.

    It has `context`, `machine`, `state` (python-statemachine keeps the current state's
    value there), `outcome` (the value that fired the latest row, as `Run.outcome`) and
    `history` (our `Transition` records), `id` and `step_key` (what an external action is
    given, as `Run.step_key`); not `send` or the other Run methods.
    """

    def __init__(self, machine: Machine[Any], context: dict[str, Any]) -> None:
        self.machine = machine
        self.id = new_id()
        self.context = context
        self.state: Any = None
        self.outcome: object = None
        self.history: list[Transition[Any]] = []
        self.error: Exception | None = None
        """An exported action's exception, kept until `Exported.send`/`create` raises it."""
        self.following = False
        """True while an exported action's outcome is on its way: only then may a row
        leaving a state with an action fire (in a Run, events cannot skip actions)."""

    @property
    def step_key(self) -> str:
        """The idempotency key of the step about to be taken (run id and step number)."""
        return f"{self.id}:{len(self.history) + 1}"


def to_statemachine(
    machine: Machine[Any],
    *,
    actions: bool = False,
    class_name: str | None = None,
    steps: object | None = None,
) -> Exported:
    """Build a python-statemachine `StateMachine` class with the same states, rows and guards.

    With `actions=True` each state's action runs on entry (as an `enter` callback, with
    the context) and its outcome is sent as the event `Exported.event_for` names, so an
    instance runs by itself as a Run does. An action that raises (or returns a value no
    trigger takes: an ExportError) leaves the instance in the entered state, as a Run;
    `Exported.send`/`create` raise its exception (the instance's own `send` does not:
    drive exported instances through `Exported`).
    Without it (the default) actions are left out and the caller sends outcomes as events.
    A machine whose actions are methods of its steps protocol needs `steps=` (the object
    whose methods they call) to export them.
    Guards get a `RunView`, not a Run. States keep their names as python-statemachine
    state values: strings, Enum members and numbers work.
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

    binding = machine.bind(steps) if actions and machine.step_names else None

    def bound(action: Callable[..., object]) -> Callable[..., object]:
        name = machine.step_name(action)
        if binding is not None and name is not None:
            return binding.actions[name]
        return action

    state_ids = {state.name: unique(_text(state.name)) for state in machine.states}
    event_ids: dict[Hashable, str] = {}
    rows: dict[Hashable, list[Hashable]] = {}
    for row in machine.transitions:
        if row.trigger not in event_ids:
            event_ids[row.trigger] = unique(_text(row.trigger))
        triggers = rows.setdefault(row.source, [])
        if row.trigger not in triggers:
            triggers.append(row.trigger)
    states = {
        state.name: SMState(
            name=_text(state.name),
            value=state.name,
            initial=state.initial,
            final=state.final,
            enter=_on_entry(
                machine, rows, event_ids, state.name, bound(state.action), state.external
            )
            if actions and state.action is not None
            else None,
        )
        for state in machine.states
    }
    for row in machine.transitions:
        # Recorded as transition content (`on`), before the target's entry runs its action,
        # so a failing action leaves the transition recorded, as in a Run's history.
        options: dict[str, Any] = {"event": event_ids[row.trigger], "on": _recorder(row)}
        conditions = []
        if actions and machine.state(row.source).action is not None:
            conditions.append(_following)
        if row.guard is not None:
            conditions.append(_condition(row.guard))
        if conditions:
            options["cond"] = conditions
        # Rows keep table order: python-statemachine tries a state's transitions in order.
        states[row.source].to(states[row.target], **options)
    attrs: dict[str, Any] = {state_ids[name]: sm_state for name, sm_state in states.items()}
    # A Run re-enters a state on a self-transition: its action runs again.
    attrs["enable_self_transition_entries"] = True
    name = class_name or unique(f"{_text(machine.name).title().replace('_', '')}Machine")
    try:
        cls = type(name, (StateMachine,), attrs)
    except Exception as error:
        raise ExportError(
            f"python-statemachine refused machine {machine.name!r}: {error}"
        ) from error
    return Exported(machine, cls, state_ids, event_ids, rows)


def _event_for(
    machine: Machine[Any],
    rows: Mapping[Hashable, list[Hashable]],
    event_ids: Mapping[Hashable, str],
    state: Hashable,
    value: object,
) -> str:
    for triggers in (rows.get(state, []), list(event_ids)):
        try:
            if value in triggers:
                return event_ids[value]
        except TypeError:  # unhashable values only match by class
            pass
        for cls in type(value).__mro__:
            if cls in triggers:
                return event_ids[cls]
    raise ExportError(
        f"{show(value)} matches no trigger of machine {machine.name!r}; "
        f"triggers: {', '.join(show(t) for t in event_ids)}"
    )


def _instance_attributes() -> set[str]:
    """Attributes python-statemachine sets on instances (`model`, ...): no id may shadow them."""
    from statemachine import State as SMState
    from statemachine import StateMachine

    one, two = SMState(initial=True), SMState(final=True)
    one.to(two, event="go")
    probe = type("Probe", (StateMachine,), {"one": one, "two": two})()
    return set(vars(probe))


# python-statemachine calls callbacks with the arguments their parameters name:
# `model` is our RunView, `machine` the instance, `fsm_value` what our send passed.


def _condition(guard: Guard) -> Any:
    def cond(model: RunView) -> bool:
        return bool(guard(model))  # type: ignore[arg-type]

    cond.__name__ = getattr(guard, "__name__", "guard")
    return cond


def _following(model: RunView) -> bool:
    return model.following


def _recorder(row: Row[Any]) -> Any:
    def record(model: RunView, fsm_value: object = None) -> None:
        model.following = False
        model.outcome = fsm_value
        model.history.append(Transition(row.source, row.trigger, row.target, fsm_value))

    return record


def _on_entry(
    definition: Machine[Any],
    rows: Mapping[Hashable, list[Hashable]],
    event_ids: Mapping[Hashable, str],
    state: Hashable,
    action: Callable[..., object],
    external: bool,
) -> Any:
    def enter(machine: Any) -> None:
        model: RunView = machine.model
        try:
            outcome = action(model.context, model.step_key) if external else action(model.context)
            event = _event_for(definition, rows, event_ids, state, outcome)
        except Exception as error:
            # Raising here would make python-statemachine undo the transition; a Run
            # stays in the entered state with the action to retry (an outcome matching no
            # trigger included). Keep it for send().
            model.error = error
            return
        model.following = True
        machine.send(event, fsm_value=outcome)

    enter.__name__ = f"enter_{getattr(action, '__name__', 'action')}"
    return enter


def _raise_action_error(model: RunView) -> None:
    error, model.error = model.error, None
    if error is not None:
        raise error


def _text(value: object) -> str:
    return show(value).strip("'\"")
