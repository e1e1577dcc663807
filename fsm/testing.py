"""The Stepper: drive a real machine one transition at a time, with scripted action outcomes."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from fsm.defaults import new_id
from fsm.definition import Machine
from fsm.errors import CallbackError, FSMError, RunError, callable_name, show
from fsm.runtime import Listener, Run, RunHandle, Transition
from fsm.table import State
from fsm.validation import state_outcomes

S = TypeVar("S", bound=Hashable)

_UNSET: Any = object()


class ScriptError(FSMError):
    """A test's script does not fit the machine: nothing scripted, or an impossible outcome."""


class Stepper(RunHandle[S]):
    """Walks a run of `machine` one row at a time; states' actions are replaced by a script.

    The run is a real run of the machine: the compiled table, the guards (called with the
    run) and the listeners are the engine's own. Only the calls into ports are replaced:
    `step()` takes the current state's next scripted outcome (or raises its scripted
    exception) instead of calling the action, then follows exactly one row. States
    listed in `real` (pure actions, no ports) run their real action when nothing is
    scripted for them.
    """

    def __init__(
        self,
        machine: Machine[S],
        context: Mapping[str, Any] | None = None,
        *,
        outcomes: Mapping[S, Iterable[object]] | None = None,
        real: Iterable[S] = (),
        at: S | None = None,
        run_id: str | None = None,
        listeners: Sequence[Listener[S]] = (),
    ) -> None:
        self.machine = machine
        if at is None:
            self._run: Run[S] = machine.create(context, run_id=run_id, listeners=listeners)
        else:  # start mid-flow, as a run restored from storage would
            self._run = machine.restore(
                run_id if run_id is not None else new_id(),
                at,
                context,
                listeners=listeners,
            )
        self._start = self.run.state
        self._script: dict[S, deque[object]] = {}
        self._real = frozenset(self._state_with_action(state).name for state in real)
        for state, values in (outcomes or {}).items():
            self.script(state, *values)

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

    def remaining(self) -> dict[S, list[object]]:
        """The scripted outcomes not consumed yet, per state."""
        return {state: list(queue) for state, queue in self._script.items() if queue}

    def assert_script_used(self) -> None:
        """Assert every scripted outcome was consumed (a leftover often means a wrong path)."""
        left = self.remaining()
        if left:
            listed = "; ".join(
                f"{show(state)}: {', '.join(repr(v) for v in values)}"
                for state, values in left.items()
            )
            raise AssertionError(f"scripted outcomes never used: {listed}\n{self.describe()}")

    # -- scripting ---------------------------------------------------------------------

    def script(self, state: S, *outcomes: object) -> Stepper[S]:
        """Queue what `state`'s action returns the next times it runs, in order.

        An exception instance or class is raised by the action instead. Outcomes the
        action's declared family cannot return are refused at once.
        """
        definition = self._state_with_action(state)
        for outcome in outcomes:
            if not _is_exception(outcome):
                _check_family(definition, outcome)
        self._script.setdefault(state, deque()).extend(outcomes)
        return self

    # -- moving --------------------------------------------------------------------------

    def send(self, event: object) -> Transition[S]:
        """Fire the row for `event` from the current state; no action runs, not the target's."""
        action = self._action()
        if action is not None:
            raise self._annotate(
                ScriptError(
                    f"state {show(self.state)} has action {callable_name(action)} still to run; "
                    "call step() before sending events"
                )
            )
        try:
            return self.run.fire(event)
        except RunError as error:
            self._annotate(error)
            raise  # as is: its type, attributes and __cause__ are the engine's

    def step(self, outcome: object = _UNSET) -> Transition[S]:
        """Run the current state's action once, as scripted, and follow exactly one row.

        Pass `outcome` to give the action's result inline instead of from the script.
        A scripted exception raises CallbackError as a failing action would; the run stays.
        """
        action = self._action()
        if action is None:
            what = "final" if self.finished else "waiting for an event"
            raise self._annotate(
                ScriptError(f"state {show(self.state)} has no action to step ({what}); use send()")
            )
        if outcome is _UNSET and not self._script.get(self.state) and self.state in self._real:
            # A pure action (no ports) the test chose to run for real, errors as the engine.
            try:
                outcome = self.run.call()  # an external one is given the step's key
            except CallbackError as failed:
                outcome = failed.error
        if outcome is _UNSET:
            queue = self._script.get(self.state)
            if not queue:
                raise self._annotate(
                    ScriptError(
                        f"nothing scripted for state {show(self.state)} "
                        f"(action {callable_name(action)}); "
                        f"use script({show(self.state)}, outcome) or step(outcome)"
                    )
                )
            outcome = queue.popleft()
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
        try:
            return self.run.fire(outcome, outcome=True)
        except RunError as error:
            self._annotate(error)
            raise  # as is: its type, attributes and __cause__ are the engine's

    def settle(self) -> list[Transition[S]]:
        """Step until the run waits for an event or finishes, as the engine would on its own."""
        done: list[Transition[S]] = []
        while self.pending:
            done.append(self.step())
        return done

    def follow(self, *values: object) -> Stepper[S]:
        """Apply each value in turn: stepped as an outcome where an action is pending, else sent."""
        for value in values:
            if self.pending:
                self.step(value)
            else:
                self.send(value)
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
        pending = f"; action {callable_name(action)} not stepped yet" if action else ""
        return (
            f"path so far: {' '.join(steps)}\nallowed from {show(self.state)}: {allowed}{pending}"
        )

    # -- helpers -------------------------------------------------------------------------

    def _action(self) -> Any:
        if self.run.finished:
            return None
        return self.machine.state(self.state).action

    def _state_with_action(self, state: S) -> Any:
        try:
            definition = self.machine.state(state)
        except (KeyError, TypeError):
            names = ", ".join(show(s.name) for s in self.machine.states)
            raise ScriptError(
                f"machine {self.machine.name!r} has no state {show(state)}; states: {names}"
            ) from None
        if definition.action is None:
            with_actions = [show(s.name) for s in self.machine.states if s.action is not None]
            raise ScriptError(
                f"state {show(state)} of {self.machine.name!r} has no action to script; "
                f"states with actions: {', '.join(with_actions) or 'none'}"
            )
        return definition

    def _annotate(self, error: Exception) -> Exception:
        error.add_note(f"machine {self.machine.name!r}, {self.describe()}")
        return error


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
