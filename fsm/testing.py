"""The Stepper: drive a real machine one transition at a time, with scripted action outcomes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fsm.defaults import new_id
from fsm.definition import Machine
from fsm.errors import CallbackError, FSMError, callable_name, show
from fsm.runtime import Listener, Run, RunHandle, Transition
from fsm.table import Row, State
from fsm.validation import state_outcomes, unhashable

S = TypeVar("S", bound=Hashable)
T = TypeVar("T")

_UNSET: Any = object()


class ScriptError(FSMError):
    """A test's script does not fit the machine: nothing scripted, an impossible outcome, a
    state or action the machine lacks. The engine's own rules raise the engine's errors."""


class Stepper(RunHandle[S]):
    """Walks a run of `machine` one row at a time; states' actions are replaced by a script.

    The run is a real run of the machine: the compiled table, the guards (called with the
    run) and the listeners are the engine's own, and so are its errors. Only the calls
    into ports are replaced: `step()` takes the next scripted outcome of the current
    state, or of its action (or raises the scripted exception) instead of calling the
    action, then follows exactly one row. States and actions listed in `real` run their
    real action when nothing is scripted for them: a pure function, or a method of the
    collaborator object given as `steps` (the machine's steps protocol, bound to the run
    as `machine.start(steps=...)` would; an external action gets the step's key).
    """

    def __init__(
        self,
        machine: Machine[S, Any],
        context: Mapping[str, Any] | None = None,
        *,
        outcomes: Mapping[Any, Iterable[object]] | None = None,
        steps: object | None = None,
        real: Iterable[Any] = (),
        at: S | None = None,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
    ) -> None:
        self.machine = machine
        if at is None:
            self._run: Run[S] = machine.create(
                context, run_id=run_id, listeners=listeners, steps=steps
            )
        else:  # start mid-flow, as a run restored from storage would
            self._run = machine.restore(
                run_id if run_id is not None else new_id(),
                at,
                context,
                listeners=listeners,
                steps=steps,
            )
        self._start = self.run.state
        self._script: dict[object, deque[object]] = {}
        self._real = frozenset(self._target(key)[0] for key in real)
        self._asked: list[tuple[Row[S], bool]] = []
        for key, values in (outcomes or {}).items():
            self.script(key, *values)

    def __repr__(self) -> str:
        return f"<Stepper of {self.machine.name!r} in {show(self.state)}>"

    # -- what the run looks like -------------------------------------------------------

    @property
    def run(self) -> Run[S]:
        """The real run being stepped (read it; move it through the stepper)."""
        return self._run

    @property
    def path(self) -> list[S]:
        """The states visited so far, starting with the one the stepper started in."""
        return [self._start, *(t.target for t in self.run.history)]

    @property
    def triggers(self) -> list[Hashable]:
        """The triggers of the rows fired so far."""
        return [t.trigger for t in self.run.history]

    @property
    def pending(self) -> bool:
        """True when the current state has an action the stepper has not stepped yet."""
        return self._action() is not None

    @property
    def asked(self) -> list[tuple[Row[S], bool]]:
        """The guarded rows the latest move tried, in table order, each with its guard's
        answer (or the forced one, see `take=`)."""
        return list(self._asked)

    def remaining(self) -> dict[Any, list[object]]:
        """The scripted outcomes not consumed yet, per state or action as they were given."""
        return {key: list(queue) for key, queue in self._script.items() if queue}

    def assert_script_used(self) -> None:
        """Assert every scripted outcome was consumed (a leftover often means a wrong path)."""
        left = self.remaining()
        if left:
            listed = "; ".join(
                f"{_name(key)}: {', '.join(repr(v) for v in values)}"
                for key, values in left.items()
            )
            raise AssertionError(f"scripted outcomes never used: {listed}\n{self.describe()}")

    # -- scripting ---------------------------------------------------------------------

    def script(self, key: Any, *outcomes: object) -> Stepper[S]:
        """Queue what an action returns the next times it runs, in order.

        `key` is a state (its action's outcomes there) or an action: the callable given as
        `action=` (`Steps.method` for the steps protocol) or its name, shared by every
        state that runs it; a state's own script is used before its action's. An exception
        instance or class is raised by the action instead. Outcomes the action's declared
        family cannot return are refused at once.
        """
        slot, states = self._target(key)
        for outcome in outcomes:
            if not _is_exception(outcome):
                for state in states:
                    _check_family(state, outcome)
        self._script.setdefault(slot, deque()).extend(outcomes)
        return self

    # -- moving --------------------------------------------------------------------------

    def send(self, event: object, *, take: Row[S] | None = None) -> Transition[S]:
        """Fire the row for `event` from the current state; no action runs, not the target's.

        `take=row` forces the guards: the rows tried before `row` refuse and `row` passes,
        none of their guards is called. A state whose action has not been stepped refuses
        events, as the engine does (InvalidEvent).
        """
        return self._fire(event, False, take)

    def step(self, outcome: object = _UNSET, *, take: Row[S] | None = None) -> Transition[S]:
        """Run the current state's action once, as scripted, and follow exactly one row.

        Pass `outcome` to give the action's result inline instead of from the script, and
        `take=row` to force the guards as `send` does. A scripted exception raises
        CallbackError as a failing action would; the run stays.
        """
        action = self._action()
        if action is None:  # nothing to step: the engine's own refusal says so
            self._engine(self.run.call)
            raise AssertionError("unreachable: a state without action has nothing to call")
        slots = (self.state, action)
        if outcome is _UNSET and not any(self._script.get(slot) for slot in slots):
            if not self._real.intersection(slots):
                raise self._annotate(
                    ScriptError(
                        f"nothing scripted for state {show(self.state)} "
                        f"(action {callable_name(action)}); "
                        f"use script({show(self.state)}, outcome) or step(outcome)"
                    )
                )
            # A real action the test chose to run (a pure function, or the collaborator's
            # method), called by the engine: an external one gets the step's key, and an
            # action that raises fails the step with the engine's CallbackError.
            outcome = self._engine(self.run.call)
        if outcome is _UNSET:
            outcome = next(self._script[s] for s in slots if self._script.get(s)).popleft()
        if _is_exception(outcome):
            error = outcome() if isinstance(outcome, type) else outcome
            assert isinstance(error, BaseException)
            failure = CallbackError(
                "action",
                callable_name(action),
                error,
                machine=self.machine.name,
                run_id=self.run.id,
                state=self.state,
            )
            failure.__cause__ = error
            raise self._annotate(failure)
        _check_family(self.machine.state(self.state), outcome)
        return self._fire(outcome, True, take)

    def move(self, value: object, *, take: Row[S] | None = None) -> Transition[S]:
        """`step(value)` where an action is pending, else `send(value)`."""
        if self.pending:
            return self.step(value, take=take)
        return self.send(value, take=take)

    def settle(self) -> list[Transition[S]]:
        """Step until the run waits for an event or finishes, as the engine would on its own."""
        done: list[Transition[S]] = []
        while self.pending:
            done.append(self.step())
        return done

    def follow(self, *values: object) -> Stepper[S]:
        """Apply each value in turn: stepped as an outcome where an action is pending, else sent."""
        for value in values:
            self.move(value)
        return self

    # -- asserting -----------------------------------------------------------------------

    def expect(self, state: S) -> Stepper[S]:
        """Assert the run is in `state`."""
        if self.state != state:
            raise AssertionError(
                f"expected the run of {self.machine.name!r} in {show(state)}, "
                f"it is in {show(self.state)}\n{self.describe()}"
            )
        return self

    def assert_path(self, states: Sequence[S]) -> None:
        """Assert the states visited so far, starting state included, are exactly `states`."""
        if list(states) != self.path:
            expected = " -> ".join(show(s) for s in states)
            raise AssertionError(
                f"expected the path {expected}\n"
                f"     got the path {' -> '.join(show(s) for s in self.path)}\n{self.describe()}"
            )

    def assert_finished(self) -> None:
        """Assert the run reached a final state."""
        if not self.finished:
            raise AssertionError(
                f"expected the run of {self.machine.name!r} to be finished, it is in "
                f"{show(self.state)}\n{self.describe()}"
            )

    def describe(self) -> str:
        """The path so far and what the current state allows, as failure messages show them."""
        steps = [show(self._start)]
        steps += [f"--{show(t.trigger)}--> {show(t.target)}" for t in self.run.history]
        allowed = ", ".join(show(a) for a in self.allowed) or "nothing (final)"
        action = self._action()
        pending = f"; action {callable_name(action)} not stepped yet (step() runs it)"
        return (
            f"path so far: {' '.join(steps)}\nallowed from {show(self.state)}: {allowed}"
            f"{pending if action else ''}"
        )

    # -- helpers -------------------------------------------------------------------------

    def _fire(self, value: object, outcome: bool, take: Row[S] | None) -> Transition[S]:
        """Fire one row through the engine, asking the guards through `answer`, which
        records what each said (forced when `take` names the row to fire)."""
        tried = self.run.rows_for(value, outcome=outcome)
        if take is not None and tried and not any(row is take for row in tried):
            listed = ", ".join(row.describe() for row in tried)
            raise self._annotate(
                ScriptError(
                    f"take={take.describe()} is not a row {show(value)} tries from "
                    f"{show(self.state)}; it tries: {listed}"
                )
            )
        self._asked = []

        def answer(row: Row[S]) -> bool:
            said = row is take if take is not None else bool(row.guard and row.guard(self.run))
            self._asked.append((row, said))
            return said

        return self._engine(lambda: self.run.fire(value, outcome=outcome, answer=answer))

    def _engine(self, call: Callable[[], T]) -> T:
        """Make an engine call; its errors keep their type and attributes, plus a note."""
        try:
            return call()
        except FSMError as error:
            self._annotate(error)
            raise

    def _action(self) -> Any:
        if self.run.finished:
            return None
        return self.machine.state(self.state).action

    def _target(self, key: object) -> tuple[object, tuple[State[S], ...]]:
        """What a script or real= key names: a state (by name), or an action (the callable,
        or its name) and the states that run it; ScriptError listing them if neither."""
        acting = [(s, s.action) for s in self.machine.states if s.action is not None]
        listed = ", ".join(f"{show(s.name)} ({callable_name(a)})" for s, a in acting) or "none"
        named = [s for s in self.machine.states if not unhashable(key) and s.name == key]
        if named and named[0].action is None:
            raise ScriptError(
                f"state {show(key)} of {self.machine.name!r} has no action to script; "
                f"states with actions: {listed}"
            )
        if named:
            return named[0].name, (named[0],)
        running = [(s, a) for s, a in acting if key is a or key == callable_name(a)]
        if len({id(a) for _, a in running}) == 1:
            return running[0][1], tuple(s for s, _ in running)
        if running:
            raise ScriptError(
                f"{key!r} names several actions of {self.machine.name!r}; script each by its "
                "state or by the callable itself"
            )
        states = ", ".join(show(s.name) for s in self.machine.states)
        raise ScriptError(
            f"machine {self.machine.name!r} has no state or action {_name(key)}; "
            f"states: {states}; states with actions: {listed}"
        )

    def _annotate(self, error: Exception) -> Exception:
        error.add_note(f"machine {self.machine.name!r}, {self.describe()}")
        return error


def _name(key: object) -> str:
    """A script key as messages show it: a state, or an action by its name."""
    return callable_name(key) if callable(key) and not isinstance(key, type) else show(key)


def _is_exception(value: object) -> bool:
    return isinstance(value, BaseException) or (
        isinstance(value, type) and issubclass(value, BaseException)
    )


def _check_family(state: State[Any], outcome: object) -> None:
    """Refuse an outcome outside the closed family the state declares (outcomes= or annotation)."""
    family = state_outcomes(state)
    if family is None or state.action is None:
        return
    for member in family:
        if isinstance(member, type):
            if isinstance(outcome, member):
                return
        elif type(member) is type(outcome) and member == outcome:
            return
    listed = ", ".join(show(m) for m in family)
    raise ScriptError(
        f"state {show(state.name)}: action {callable_name(state.action)} cannot return "
        f"{outcome!r}; it returns one of {listed}"
    )
