"""The declarative definition: states, the transitions table, and the Machine built from them."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from fsm.errors import AsyncRequired, BindError, DefinitionError, callable_name, show
from fsm.runtime import (
    AsyncListener,
    AsyncRun,
    Listener,
    Run,
    compile_machine,
    fixed_row,
    rebuild,
)
from fsm.table import Action, ExternalAction, Guard, Row, RowSpec, State, StepAction
from fsm.validation import awaited, is_async, normalize_rows, validate

__all__ = [
    "Action",
    "AsyncRun",
    "Binding",
    "ExternalAction",
    "Guard",
    "Machine",
    "Row",
    "RowSpec",
    "State",
    "StepAction",
]

S = TypeVar("S", bound=Hashable)

if TYPE_CHECKING:  # a default (PEP 696) for type checkers; at run time see __class_getitem__
    from typing_extensions import TypeVar as DefaultedTypeVar

    P = DefaultedTypeVar("P", default=Any)
else:
    P = TypeVar("P")
"""The steps protocol: `Machine[FlowState, FlowSteps]` has mypy check every object given as
`steps=` against FlowSteps; `Machine[FlowState]` leaves it unchecked (Any)."""


@dataclass(frozen=True, slots=True)
class Binding:
    """A machine's step actions resolved on one collaborator object (see `Machine.bind`)."""

    machine: Machine[Any]
    actions: Mapping[str, Callable[..., object]]
    awaited: tuple[str, ...] = ()
    """The bound actions that are `async def`, named for a message (a sync run refuses them)."""


class Machine(Generic[S, P]):
    """An immutable, validated state machine; build it once, start as many runs as you like.

    Annotate it with its steps protocol, `machine: Machine[State, Steps] = Machine(...,
    steps=Steps)`, and mypy checks each collaborator object a run is given against Steps.
    """

    def __class_getitem__(cls, params: Any) -> Any:
        # `Machine[S]` stands for `Machine[S, Any]`, as P's default says to type checkers.
        if not isinstance(params, tuple):
            params = (params, Any)
        return super().__class_getitem__(params)  # type: ignore[misc]

    def __init__(
        self,
        name: str,
        *,
        states: Iterable[State[S]],
        transitions: Iterable[RowSpec[S]],
        steps: type | None = None,
        aliases: Mapping[str, Hashable] | None = None,
        cancel: Hashable | None = None,
    ) -> None:
        self.name = name
        self.steps = steps
        """The collaborator protocol whose methods are the actions (`action=Steps.method`):
        each run is given an object that has them (`steps=`), checked when it is bound."""
        self.states: tuple[State[S], ...] = tuple(states)
        rows, problems = normalize_rows(transitions)
        if aliases is not None and not isinstance(aliases, Mapping):
            problems.append(
                f"aliases={aliases!r} is not a mapping; map each former name to what it is "
                "now, e.g. aliases={'Failed': CaptureFailed}"
            )
        given = aliases if isinstance(aliases, Mapping) else {}
        self.aliases: Mapping[str, Hashable] = MappingProxyType(dict(given))
        """Former stored names of triggers and types (renamed or moved), mapped to what they
        are now: a trigger label in the history ('Failed') to the trigger, a type tag in
        contexts and outcomes ('payments.flow.Failed') to the dataclass or Enum. Stored runs
        that hold them load; what is written uses the current names."""
        self.transitions: tuple[Row[S], ...] = tuple(rows)
        self.cancel = cancel
        """The trigger that cancels a run (`fsm runs cancel`), if the machine has one: it
        fires a row of the table like any event, so only from the states that have one."""
        problems += validate(self)
        if problems:
            raise DefinitionError(name, problems)
        self._by_name: dict[S, State[S]] = {state.name: state for state in self.states}
        self.initial: State[S] = next(state for state in self.states if state.initial)
        names = [self.step_name(state.action) for state in self.states]
        self.step_names: tuple[str, ...] = tuple(dict.fromkeys(n for n in names if n is not None))
        """The actions that are methods of `steps`, by name: what a steps object must have."""
        self._awaited = awaited(self)
        self._nodes = compile_machine(self)
        self._frozen = True

    def __setattr__(self, name: str, value: object) -> None:
        # Every reader (runtime, diagrams, stores, tests) must see the table that was validated.
        if getattr(self, "_frozen", False):
            raise AttributeError(f"machine {self.name!r} is immutable; build a new Machine")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Machine {self.name!r}: {len(self.states)} states, {len(self.transitions)} rows>"

    def state(self, name: S) -> State[S]:
        """The state called `name`; KeyError naming the states if there is none."""
        try:
            return self._by_name[name]
        except KeyError:
            states = ", ".join(show(s.name) for s in self.states)
            raise KeyError(
                f"machine {self.name!r} has no state {show(name)}; states: {states}"
            ) from None

    def step_name(self, action: object) -> str | None:
        """The method's name when `action` is a method of the `steps` protocol (bound per
        run; a plain function of the same name is not), else None."""
        steps = self.steps
        name = getattr(action, "__name__", None)
        if not isinstance(steps, type) or name is None:
            return None
        found = any(vars(klass).get(name) is action for klass in steps.__mro__)
        return name if found else None

    def bind(self, steps: P | Binding) -> Binding:
        """Check `steps` has every action this machine names, callable; BindError listing
        what is missing. The binding is given to `start`/`create`/`restore` as `steps=`."""
        if isinstance(steps, Binding):
            if steps.machine is not self:
                raise BindError("that binding is another machine's", machine=self.name)
            return steps
        if steps is None:
            raise BindError(
                f"its states run {', '.join(self.step_names)}: give steps=an object that has them",
                machine=self.name,
                missing=self.step_names,
            )
        actions = {name: getattr(steps, name, None) for name in self.step_names}
        missing = tuple(name for name, action in actions.items() if not callable(action))
        if missing:
            raise BindError(
                f"{type(steps).__name__} lacks {', '.join(missing)} (the {show(self.steps)} "
                "methods its states run); give an object that has them",
                machine=self.name,
                missing=missing,
            )
        states = {self.step_name(s.action): s.name for s in self.states if s.action is not None}
        asynchronous = tuple(
            f"action {name} (state {show(states[name])})"
            for name, action in actions.items()
            if is_async(action)
        )
        return Binding(self, actions, asynchronous)  # type: ignore[arg-type]

    def rows_from(self, source: S) -> tuple[Row[S], ...]:
        """The rows whose source is `source`, in table order."""
        return tuple(row for row in self.transitions if row.source == source)

    def fixed_row(self, state: S, event: object) -> Row[S] | None:
        """The row `event` fires from `state` whatever a run's context holds (no guard to
        ask, no action to run in its target), or None when only a Run can tell; KeyError
        naming the states for a state the machine does not have."""
        return fixed_row(self._nodes, self.state(state).name, event)

    def start(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
        steps: P | Binding | None = None,
    ) -> Run[S]:
        """Start a run in the initial state and follow actions until it waits or finishes.

        `steps` is the object whose methods the `steps` protocol's actions call (or its
        `bind()`ing), required when the machine names any. A machine, steps object or
        listener with `async def` callables is refused (AsyncRequired): see `start_async`."""
        run = self.create(context, run_id=run_id, listeners=listeners, steps=steps)
        run.advance()
        return run

    def create(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
        steps: P | Binding | None = None,
    ) -> Run[S]:
        """A run in the initial state whose actions have not run yet; call `advance()`."""
        return self._new(self._nodes[self.initial.name], (), context, run_id, listeners, steps)

    def restore(
        self,
        run_id: str,
        state: S,
        context: Mapping[str, Any] | None = None,
        history: Iterable[Sequence[Any]] = (),
        *,
        listeners: Sequence[Listener[S]] = (),
        steps: P | Binding | None = None,
    ) -> Run[S]:
        """Rebuild a run (from storage, say) at `state`; its actions are not run again.

        The history must be one path of the table from the initial state to `state`;
        anything else is a RestoreError naming the run and the first record that is wrong.
        """
        node, log = rebuild(self, self._nodes, run_id, state, history)
        return self._new(node, log, context, run_id, listeners, steps)

    async def start_async(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[AsyncListener[S]] = (),
        steps: P | Binding | None = None,
    ) -> AsyncRun[S]:
        """`start`, for an async run: `async def` actions, guards and listeners are awaited."""
        run = self.create_async(context, run_id=run_id, listeners=listeners, steps=steps)
        return await run.advance()

    def create_async(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        listeners: Sequence[AsyncListener[S]] = (),
        steps: P | Binding | None = None,
    ) -> AsyncRun[S]:
        """`create`, for an async run; `await run.advance()` follows its actions."""
        node = self._nodes[self.initial.name]
        return AsyncRun(self._new(node, (), context, run_id, listeners, steps, sync=False))

    def restore_async(
        self,
        run_id: str,
        state: S,
        context: Mapping[str, Any] | None = None,
        history: Iterable[Sequence[Any]] = (),
        *,
        listeners: Sequence[AsyncListener[S]] = (),
        steps: P | Binding | None = None,
    ) -> AsyncRun[S]:
        """`restore`, for an async run."""
        node, log = rebuild(self, self._nodes, run_id, state, history)
        return AsyncRun(self._new(node, log, context, run_id, listeners, steps, sync=False))

    def refuse_async(
        self, binding: Binding | None = None, listeners: Sequence[AsyncListener[S]] = ()
    ) -> None:
        """AsyncRequired, naming them, if a sync run of this machine with `binding` and
        `listeners` would have `async def` callables to call; else nothing."""
        found = (
            *self._awaited,
            *(binding.awaited if binding is not None else ()),
            *(f"listener {callable_name(f)}" for f in listeners if is_async(f)),
        )
        if found:
            raise AsyncRequired(
                f"a sync run cannot await {', '.join(found)}; run it with create_async, "
                "start_async or restore_async (AsyncPersistentMachine on a store), or make "
                "them plain def",
                machine=self.name,
                callables=found,
            )

    def _new(
        self,
        node: Any,
        log: Sequence[Any],
        context: Mapping[str, Any] | None,
        run_id: str | None,
        listeners: Sequence[AsyncListener[S]],
        steps: P | Binding | None,
        *,
        sync: bool = True,
    ) -> Run[S]:
        """A run at compiled `node` with `log`; a sync one refuses what it cannot await."""
        binding = None if steps is None else self.bind(steps)
        if sync:
            self.refuse_async(binding, listeners)
        bound = None if binding is None else binding.actions
        return Run(self, node, context, run_id, log, listeners, bound, awaits=not sync)
