"""The runtime: the table compiled to a dispatch map, and the runs that walk it (sync or async)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from fsm.defaults import new_id
from fsm.drive import Steps, drain, run_async, run_sync, settle
from fsm.errors import (
    BindError,
    CallbackError,
    GuardRejected,
    InvalidEvent,
    RestoreError,
    RunError,
    RunFinished,
    UnhandledOutcome,
    callable_name,
    show,
)
from fsm.table import Guard, Row
from fsm.validation import unhashable

if TYPE_CHECKING:
    from fsm.definition import Machine

S = TypeVar("S", bound=Hashable)


class Transition(NamedTuple, Generic[S]):
    """One fired row in a run's history, with the value that fired it.

    A tuple too, so a stored history can be handed straight back to `Machine.restore`.
    """

    source: S
    trigger: Hashable
    target: S
    outcome: object
    """What fired the row: the action's outcome, or the event that was sent."""


Listener = Callable[["Run[S]", Transition[S]], None]
"""Called after each transition; if it raises, the transition is undone."""

AsyncListener = Callable[["Run[S]", Transition[S]], Awaitable[None] | None]
"""A listener of an AsyncRun: an `async def` one is awaited, a plain one called."""

Answer = Callable[["Row[S]"], bool]
"""Says whether a guarded row passes, in place of its guard (see `Run.fire`)."""

_observers: list[Listener[Any]] = []
"""Listeners given to every run created while they are registered (see `observe`)."""

RowObserver = Callable[["Machine[Any]", Row[Any]], None]
"""Told of a row fired where there is no Run to give a listener (see `observe`)."""

_row_observers: list[tuple[Listener[Any], RowObserver | None]] = []
"""Each registered observer with its row observer, if it has one."""


def observe(listener: Listener[Any], *, rows: RowObserver | None = None) -> Callable[[], None]:
    """Give `listener` to every run created from now on; returns the function that stops it.

    For tools that watch a whole process, such as transition coverage in a test session.
    Runs consult the observers once, when they are created: a transition costs nothing
    more while none is registered. Runs created before the call are not observed.

    `rows(machine, row)` is told of each row fired with no Run (a step a persistent runner
    writes from the run's stored state alone, see PersistentMachine.send_all); while an
    observer without it is registered, such runners restore every run instead, to give
    it to the listener.
    """
    entry = (listener, rows)
    _observers.append(listener)
    _row_observers.append(entry)

    def stop() -> None:
        if listener in _observers:
            _observers.remove(listener)
        if entry in _row_observers:
            _row_observers.remove(entry)

    return stop


def runs_observed() -> bool:
    """Whether a registered observer must be given a Run for every row fired (it has no
    row observer: see `observe`)."""
    return any(rows is None for _, rows in _row_observers)


def fired_without_run(machine: Machine[Any], row: Row[Any]) -> None:
    """Tell the row observers that `machine` fired `row` with no Run (see `observe`)."""
    for _, rows in _row_observers:
        if rows is not None:
            rows(machine, row)


class Rollback(Exception):
    """Raised by an action: undo what this step wrote, then take the row of `outcome`.

    A persistent run rolls the step's transaction back and commits the transition for the
    outcome in a fresh one (see `Run.rollback_hook`); an in-memory run takes the row.
    Nothing about the route is decided in an `except` block: the outcome's row is.
    """

    def __init__(self, outcome: object) -> None:
        super().__init__(f"roll this step back, then take the row of {outcome!r}")
        self.outcome = outcome


class _Node:
    """A compiled state: its triggers mapped straight to the edges that leave it.

    A state with an action follows only its action's outcomes (`outcomes`); a state
    without one waits for events (`edges`). Keeping them apart costs `send` nothing
    and means an event can never skip an action.
    """

    __slots__ = ("action", "edges", "external", "final", "outcomes", "state", "step")

    def __init__(
        self,
        state: Hashable,
        final: bool,
        action: Callable[..., object] | None,
        step: str | None = None,
        external: bool = False,
    ) -> None:
        self.state = state
        self.final = final
        self.action = action
        self.step = step
        """The action's name when it is a method of the machine's steps protocol."""
        self.external = external
        """The action calls another system: it is given the step's idempotency key."""
        self.edges: dict[Hashable, tuple[_Edge, ...]] = {}
        self.outcomes: dict[Hashable, tuple[_Edge, ...]] = {}

    @property
    def table(self) -> dict[Hashable, tuple[_Edge, ...]]:
        """The rows leaving this state, whichever kind of trigger they take."""
        return self.outcomes if self.action is not None else self.edges


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
    nodes = {
        s.name: _Node(s.name, s.final, s.action, machine.step_name(s.action), s.external)
        for s in machine.states
    }
    for row in machine.transitions:
        source = nodes[row.source]
        edges = source.outcomes if source.action is not None else source.edges
        edges[row.trigger] = (*edges.get(row.trigger, ()), _Edge(row, source, nodes[row.target]))
    return nodes


def rebuild(
    machine: Machine[Any],
    nodes: Mapping[Any, _Node],
    run_id: str,
    state: Hashable,
    history: Iterable[Sequence[Any]],
) -> tuple[_Node, list[tuple[_Edge, object]]]:
    """The node and compiled log of a stored run, checked to be one path of the table
    ending in `state`; RestoreError naming the first thing that is not.

    The path may start anywhere (a store may keep only recent history) and may be empty
    (a run restored at a state, as a test tool does to start mid-flow).
    """

    def fail(message: str) -> RestoreError:
        return RestoreError(message, machine=machine.name, run_id=run_id)

    names = ", ".join(show(name) for name in nodes)
    if unhashable(state) or state not in nodes:
        raise fail(f"unknown state {show(state)}; states: {names}")
    log: list[tuple[_Edge, object]] = []
    at: Hashable = None
    for index, record in enumerate(history):
        try:
            source, trigger, target, outcome = record
            node = nodes.get(source)
            edges = node.table.get(trigger, ()) if node is not None else ()
        except (TypeError, ValueError):
            raise fail(
                f"history record {index} is {record!r}, not (source, trigger, target, outcome)"
            ) from None
        if index and source != at:
            raise fail(
                f"history record {index} leaves {show(source)}, but the run was in {show(at)}"
            )
        edge = next((e for e in edges if e.target.state == target), None)
        if edge is None:
            raise fail(
                f"history record {index}: the table has no row "
                f"{show(source)} --{show(trigger)}--> {show(target)}"
            )
        log.append((edge, outcome))
        at = target
    if log and at != state:
        raise fail(f"the history ends in {show(at)}, but the stored state is {show(state)}")
    return nodes[state], log


def fixed_row(nodes: Mapping[Any, _Node], state: Hashable, event: object) -> Row[Any] | None:
    """The row `event` fires from `state` whatever the run holds: the first row it matches is
    unguarded and leads to a state with no action. None when a Run must decide (a guard to
    ask, an action to run, no row at all: its error says why)."""
    node = nodes[state]
    if node.action is not None:
        return None
    edges = _lookup(node.edges, event)
    if not edges:
        return None
    edge = edges[0]
    if edge.guard is not None or edge.target.action is not None:
        return None
    return edge.row


MAX_STEPS = 10_000
"""How many actions one advance() follows before it calls the run a loop."""


class Run(Generic[S]):
    """One instance of a machine: its current state, context and history.

    `send`, `advance`, `call` and `fire` move it; each drives the Steps computation of the
    same name (`send_steps`, ...), which an AsyncRun (and a persistent runner) drives
    instead, so sync and async runs follow one set of rules (see fsm.drive).
    """

    __slots__ = (
        "_awaits",
        "_listeners",
        "_log",
        "_node",
        "_notifying",
        "_steps",
        "commit_hook",
        "context",
        "hold_external",
        "id",
        "machine",
        "outcome",
        "rollback_hook",
    )

    def __init__(
        self,
        machine: Machine[S],
        node: _Node,
        context: Mapping[str, Any] | None,
        run_id: str | None,
        log: Sequence[tuple[_Edge, object]],
        listeners: Sequence[AsyncListener[S]],
        steps: Mapping[str, Callable[..., object]] | None = None,
        *,
        awaits: bool = False,
    ) -> None:
        self.machine = machine
        self._steps = steps
        self._awaits = awaits
        """What actions, guards and listeners return may be awaitable (an AsyncRun's run)."""
        self.rollback_hook: Callable[[], Steps[None]] | None = None
        """Called when an action raises Rollback, before its outcome's row fires: a
        persistent runner rolls the step's writes back here."""
        self.commit_hook: Callable[[Run[S], Transition[S]], Steps[None]] | None = None
        """Called after each transition, after the listeners: a persistent runner stores
        the transition and commits its step here. If it raises, the transition is undone
        (and the error is a listener's CallbackError, as for any listener)."""
        self.hold_external = False
        """When true, advance() stops before an external action instead of calling it: a
        persistent runner calls it outside the database transaction (see `call`)."""
        self.id: str = run_id if run_id is not None else new_id()
        self.context: dict[str, Any] = dict(context) if context is not None else {}
        self.outcome: object = log[-1][1] if log else None
        self._node = node
        self._log = list(log)
        self._listeners: list[AsyncListener[S]] = [*_observers, *listeners]
        self._notifying = False

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
        """The triggers the current state has rows for: the events it waits for or, in a
        state with an action, the outcomes that action may return."""
        return tuple(self._node.table)

    @property
    def last_row(self) -> Row[S]:
        """The table row behind the latest transition (a Transition does not carry it);
        ValueError before the first one."""
        if not self._log:
            raise ValueError(f"{self!r} has no transition yet")
        row: Row[S] = self._log[-1][0].row
        return row

    @property
    def pending(self) -> bool:
        """True when the current state has an action still to run (`advance` runs it)."""
        return self._node.action is not None

    @property
    def external(self) -> bool:
        """True when the current state's action is external (it calls another system)."""
        return self._node.external

    @property
    def step_key(self) -> str:
        """The idempotency key of the step the run is about to take: run id and step number,
        the same on every retry of that step (in any process) until its transition is made."""
        return f"{self.id}:{len(self._log) + 1}"

    def add_listener(self, listener: Listener[S]) -> None:
        """Call `listener(run, transition)` after each transition of this run."""
        self._listeners.append(listener)

    # -- the sync API: each drives the Steps computation of the same name ------------------

    def send(self, event: object) -> Run[S]:
        """Fire the row for `event` from the current state, then follow any actions.

        If an action reached this way raises, the event's own transition stays made: the
        CallbackError names the state the run is in, and `advance()` tries the action again.
        """
        try:
            edges = self._node.edges.get(event)
        except TypeError:  # an unhashable event object: only its type can match
            edges = None
        if edges is None:
            edges = self._resolve(event)
        if self._listeners or self.commit_hook is not None or self._awaits:
            drain(self._send(edges, event))
            return self
        # The hot path: with no listener to tell and nothing to await, the event's own row
        # needs no driver (the rules are _send's: the first passing guard, then any action).
        edge = edges[0] if edges[0].guard is None else self._pick(edges)
        self._move(edge, event)
        if edge.target.action is not None:
            drain(self.advance_steps())
        return self

    def advance(self, *, max_steps: int = MAX_STEPS) -> Run[S]:
        """Run the current state's action and follow its outcomes until the run waits or ends
        (or, with `hold_external`, reaches an external action)."""
        drain(self.advance_steps(max_steps=max_steps))
        return self

    def call(self) -> object:
        """Run the current state's action once and return its outcome; follow no row.

        An external action is called with the context and `step_key`. An action that
        raises Rollback gives its outcome (a local one after `rollback_hook`: an external
        action wrote nothing to roll back); any other error is a CallbackError naming it.
        """
        return run_sync(self.call_steps())

    def fire(
        self, value: object, *, outcome: bool = False, answer: Answer[S] | None = None
    ) -> Transition[S]:
        """Follow exactly one row for `value` and run no action, not even the target's.

        `value` is an event, or with `outcome=True` the outcome of the current state's
        action. The table, guards and listeners are the real ones; this is how a test tool
        such as `fsm.testing.Stepper` walks a run one transition at a time. `answer`, when
        given, is asked about each guarded row the table tries, in its place of the row's
        guard (a test forcing a path's guards, or recording what they said); the table
        still decides which rows are tried, in which order.
        """
        return run_sync(self.fire_steps(value, outcome=outcome, answer=answer))

    def rows_for(self, value: object, *, outcome: bool = False) -> tuple[Row[S], ...]:
        """The rows `value` (an event, or with `outcome=True` an outcome of the current
        state's action) would try from the current state, in table order; () if none."""
        edges = _lookup(self._node.outcomes if outcome else self._node.edges, value)
        return tuple(edge.row for edge in edges or ())

    # -- the rules, once, as Steps (fsm.drive) ----------------------------------------------

    def send_steps(self, event: object) -> Steps[Run[S]]:
        """`send` as a Steps computation."""
        yield from self._send(self._edges(event), event)
        return self

    def advance_steps(self, *, max_steps: int = MAX_STEPS) -> Steps[Run[S]]:
        """`advance` as a Steps computation."""
        node = self._node
        for _ in range(max_steps):
            if node.action is None or (node.external and self.hold_external):
                return self
            outcome = yield from self.call_steps()
            yield from self._follow(outcome)
            node = self._node
        if node.action is None or (node.external and self.hold_external):
            return self
        raise RunError(
            f"advance() followed {max_steps} actions and the run neither waits nor ends; "
            "is an action looping?",
            **self._where(),
        )

    def call_steps(self) -> Steps[object]:
        """`call` as a Steps computation."""
        node = self._node
        action = node.action
        if action is None:
            raise RunError(f"state {show(self.state)} has no action to call", **self._where())
        if node.step is not None:
            action = self._bound(node.step)
        try:
            outcome = action(self.context, self.step_key) if node.external else action(self.context)
            if self._awaits:
                outcome = yield from settle(outcome)
        except Rollback as rollback:
            if self.rollback_hook is not None and not node.external:
                yield from self.rollback_hook()
            return rollback.outcome
        except Exception as error:
            raise self._callback_error("action", action, error) from error
        return outcome

    def fire_steps(
        self, value: object, *, outcome: bool = False, answer: Answer[S] | None = None
    ) -> Steps[Transition[S]]:
        """`fire` as a Steps computation."""
        if outcome:
            edge = yield from self._follow(value, answer)
        else:
            edge = yield from self._choose(self._resolve(value), answer)
            yield from self._fire(edge, value)
        return _record(edge, value)

    def _send(self, edges: tuple[_Edge, ...], event: object) -> Steps[None]:
        edge = edges[0]
        if edge.guard is not None:
            edge = yield from self._choose(edges)
        yield from self._fire(edge, event)
        if edge.target.action is not None:
            yield from self.advance_steps()

    def _bound(self, step: str) -> Callable[..., object]:
        """The collaborator's method for a step action; BindError if the run has none."""
        if self._steps is None:
            protocol = getattr(self.machine.steps, "__qualname__", "its steps")
            raise BindError(
                f"state {show(self.state)} runs {step} of {protocol}, and run {self.id} was "
                "given no steps: start or restore it with steps=an object that has them",
                machine=self.machine.name,
                missing=(step,),
            )
        return self._steps[step]

    def _follow(self, outcome: object, answer: Answer[S] | None = None) -> Steps[_Edge]:
        """Fire the row the current state's action's `outcome` selects."""
        node = self._node
        edges = _lookup(node.outcomes, outcome)
        if edges is None:
            action = callable_name(node.action) if node.action is not None else "(none)"
            raise UnhandledOutcome(outcome, tuple(node.outcomes), action, **self._where())
        edge = yield from self._choose(edges, answer)
        yield from self._fire(edge, outcome)
        return edge

    def _edges(self, event: object) -> tuple[_Edge, ...]:
        """The edges for `event` from the current state (the fast lookup first)."""
        try:
            edges = self._node.edges.get(event)
        except TypeError:  # an unhashable event object: only its type can match
            edges = None
        return edges if edges is not None else self._resolve(event)

    def _resolve(self, event: object) -> tuple[_Edge, ...]:
        """The slow path of send: match by class, or say why the event is refused."""
        node = self._node
        edges = _lookup(node.edges, event)
        if edges is not None:
            return edges
        if node.final:
            raise RunFinished(event, (), **self._where(), why="the run is finished")
        if node.action is not None:
            why = (
                f"this state runs action {callable_name(node.action)} and takes no events; "
                "call advance() to run it"
            )
            raise InvalidEvent(event, (), **self._where(), why=why)
        raise InvalidEvent(event, self.allowed, **self._where())

    def _choose(self, edges: tuple[_Edge, ...], answer: Answer[S] | None = None) -> Steps[_Edge]:
        """The first edge whose guard passes (or `answer` says yes to), in table order
        (awaited in an async run)."""
        if not self._awaits or answer is not None:
            return self._pick(edges, answer)
        for edge in edges:
            guard = edge.guard
            if guard is None:
                return edge
            try:
                if (yield from settle(guard(self))):
                    return edge
            except Exception as error:
                raise self._callback_error("guard", guard, error) from error
        raise self._rejected(edges)

    def _pick(self, edges: tuple[_Edge, ...], answer: Answer[S] | None = None) -> _Edge:
        """`_choose` where nothing is awaited (a sync run), without a driver."""
        for edge in edges:
            guard = edge.guard
            if guard is None:
                return edge
            try:
                if guard(self) if answer is None else answer(edge.row):
                    return edge
            except Exception as error:
                raise self._callback_error("guard", guard, error) from error
        raise self._rejected(edges)

    def _rejected(self, edges: tuple[_Edge, ...]) -> GuardRejected:
        return GuardRejected(
            edges[0].row.trigger,
            [_guard_label(e.guard) for e in edges],
            [e.target.state for e in edges],
            **self._where(),
        )

    def _fire(self, edge: _Edge, outcome: object) -> Steps[None]:
        previous = self.outcome
        self._move(edge, outcome)
        if self._listeners or self.commit_hook is not None:
            yield from self._notify(edge, previous)

    def _move(self, edge: _Edge, outcome: object) -> None:
        self._node = edge.target
        self._log.append((edge, outcome))
        self.outcome = outcome

    def _notify(self, edge: _Edge, previous: object) -> Steps[None]:
        """Tell every listener, then the commit hook; if one raises, undo the transition."""
        if self._notifying:  # a listener called send() or advance(): refuse and undo that
            self._undo(edge, previous)
            raise RunError(
                "a listener tried to move the run; listeners may only observe", **self._where()
            )
        self._notifying = True
        try:
            transition = _record(edge, self.outcome)
            for listener in tuple(self._listeners):
                try:
                    heard = listener(self, transition)
                    if self._awaits:
                        yield from settle(heard)
                except Exception as error:
                    self._undo(edge, previous)
                    raise self._callback_error("listener", listener, error) from error
            hook = self.commit_hook
            if hook is not None:  # the last listener, whose work is Steps of its own
                try:
                    yield from hook(self, transition)
                except Exception as error:
                    self._undo(edge, previous)
                    raise self._callback_error("listener", hook, error) from error
        finally:
            self._notifying = False

    def _undo(self, edge: _Edge, previous: object) -> None:
        self._node = edge.source
        self._log.pop()
        self.outcome = previous

    def _where(self) -> dict[str, Any]:
        return {"machine": self.machine.name, "run_id": self.id, "state": self.state}

    def _callback_error(
        self, kind: str, callback: Callable[..., object], error: Exception
    ) -> CallbackError:
        return CallbackError(kind, callable_name(callback), error, **self._where())


class RunHandle(Generic[S]):
    """What holds a Run and shows it read-only, by the Run's own names (a PersistentRun, a
    Stepper): the subclass gives `run`, and moves it by its own methods."""

    __slots__ = ()

    @property
    def run(self) -> Run[S]:
        """The run held."""
        raise NotImplementedError

    @property
    def id(self) -> str:
        """The run's id."""
        return self.run.id

    @property
    def state(self) -> S:
        """The current state (see Run.state)."""
        return self.run.state

    @property
    def context(self) -> dict[str, Any]:
        """The run's context: the dict actions and guards see."""
        return self.run.context

    @property
    def finished(self) -> bool:
        """True once the run is in a final state."""
        return self.run.finished

    @property
    def outcome(self) -> object:
        """The value that fired the latest transition (see Run.outcome)."""
        return self.run.outcome

    @property
    def history(self) -> list[Transition[S]]:
        """Every transition so far, oldest first."""
        return self.run.history

    @property
    def allowed(self) -> tuple[Hashable, ...]:
        """The triggers the current state has rows for (see Run.allowed)."""
        return self.run.allowed


class AsyncRun(RunHandle[S]):
    """A run moved with `await`: its `async def` actions, guards and listeners are awaited,
    plain ones called (see `Machine.create_async`, `start_async`, `restore_async`).

    It holds a Run (`run`), the one its guards and listeners are given, and drives that
    run's Steps computations: the rules are the sync run's own. One task moves it at a time.
    """

    __slots__ = ("_run",)

    def __init__(self, run: Run[S]) -> None:
        self._run = run

    def __repr__(self) -> str:
        return f"<AsyncRun {self.id} of {self._run.machine.name!r} in {show(self.state)}>"

    @property
    def run(self) -> Run[S]:
        """The run held: read it; move it through this AsyncRun."""
        return self._run

    @property
    def step_key(self) -> str:
        """The idempotency key of the next step (see Run.step_key)."""
        return self._run.step_key

    def add_listener(self, listener: AsyncListener[S]) -> None:
        """Call (or await) `listener(run, transition)` after each transition of this run."""
        self._run._listeners.append(listener)

    async def send(self, event: object) -> AsyncRun[S]:
        """Fire the row for `event`, then follow any actions (see Run.send)."""
        await run_async(self._run.send_steps(event))
        return self

    async def advance(self, *, max_steps: int = MAX_STEPS) -> AsyncRun[S]:
        """Follow the current state's actions until the run waits or ends (see Run.advance)."""
        await run_async(self._run.advance_steps(max_steps=max_steps))
        return self

    async def call(self) -> object:
        """Run the current state's action once and return its outcome (see Run.call)."""
        return await run_async(self._run.call_steps())

    async def fire(self, value: object, *, outcome: bool = False) -> Transition[S]:
        """Follow exactly one row for `value`, running no action (see Run.fire)."""
        return await run_async(self._run.fire_steps(value, outcome=outcome))


def _lookup(table: dict[Hashable, tuple[_Edge, ...]], value: object) -> tuple[_Edge, ...] | None:
    """The edges for a value: itself, else the most specific class in its MRO."""
    try:
        found = table.get(value)
    except TypeError:
        found = None
    if found is None:
        for cls in type(value).__mro__:
            found = table.get(cls)
            if found is not None:
                break
    return found


def _record(edge: _Edge, outcome: object) -> Transition[Any]:
    return Transition(edge.source.state, edge.row.trigger, edge.target.state, outcome)


def _guard_label(guard: Guard | None) -> str:
    return callable_name(guard) if guard is not None else "no guard"
