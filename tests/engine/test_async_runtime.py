"""AsyncRun: the same machine run with await; async actions, guards and listeners awaited,
plain ones called, by the sync run's own rules; a sync run refuses what it cannot await."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from fsm import (
    AsyncRequired,
    CallbackError,
    GuardRejected,
    InvalidEvent,
    Machine,
    RestoreError,
    Rollback,
    Run,
    RunError,
    State,
    Transition,
    UnhandledOutcome,
)


@dataclass(frozen=True)
class Fetched:
    """The record was fetched."""

    value: int


@dataclass(frozen=True)
class Missing:
    """There was nothing to fetch."""


async def fetch(context: dict[str, Any]) -> Fetched | Missing:
    await asyncio.sleep(0)
    if "value" not in context:
        return Missing()
    context["fetched"] = True
    return Fetched(context["value"])


async def big(run: Run[Any]) -> bool:
    await asyncio.sleep(0)
    return bool(run.context.get("value", 0) > 10)


def small(run: Run[Any]) -> bool:
    return bool(run.context.get("value", 0) <= 10)


lookup: Machine[str] = Machine(
    "lookup",
    states=[
        State("fetching", initial=True, action=fetch),
        State("fetched"),
        State("large", final=True),
        State("small", final=True),
        State("missing", final=True, failure=True),
    ],
    transitions=[
        ("fetching", Fetched, "fetched"),
        ("fetching", Missing, "missing"),
        ("fetched", "classify", "large", big),
        ("fetched", "classify", "small", small),
    ],
)


class TestAsyncRun:
    """Each test drives one run of `lookup` with await."""

    async def test_async_actions_guards_and_listeners_are_awaited(self) -> None:
        """The action's outcome picks the row; the async guard's answer picks the target;
        an async listener and a plain one both hear every transition."""
        heard: list[str] = []

        async def slow(run: Run[str], transition: Transition[str]) -> None:
            await asyncio.sleep(0)
            heard.append(f"async {transition.target}")

        def plain(run: Run[str], transition: Transition[str]) -> None:
            heard.append(f"plain {transition.target}")

        run = await lookup.start_async({"value": 12}, listeners=[slow, plain])
        assert run.state == "fetched" and run.context["fetched"] is True
        assert run.outcome == Fetched(12)
        await run.send("classify")
        assert run.state == "large" and run.finished
        assert heard == ["async fetched", "plain fetched", "async large", "plain large"]
        assert [t.target for t in run.history] == ["fetched", "large"]

    async def test_the_plain_guard_is_called_when_the_async_one_refuses(self) -> None:
        run = await lookup.start_async({"value": 3})
        await run.send("classify")
        assert run.state == "small"

    async def test_create_async_runs_nothing_until_advance(self) -> None:
        run = lookup.create_async({}, run_id="r1")
        assert run.state == "fetching" and run.history == [] and run.id == "r1"
        assert run.step_key == "r1:1"
        await run.advance()
        assert run.state == "missing"

    async def test_restore_async_continues_a_run(self) -> None:
        run = lookup.restore_async(
            "r2", "fetched", {"value": 50}, [("fetching", Fetched, "fetched", Fetched(50))]
        )
        assert (await run.send("classify")).state == "large"

    async def test_an_async_listener_that_raises_undoes_the_transition(self) -> None:
        async def refuse(run: Run[str], transition: Transition[str]) -> None:
            raise ValueError("no")

        run = lookup.create_async({"value": 1})
        run.add_listener(refuse)
        with pytest.raises(CallbackError, match="listener refuse raised ValueError: no"):
            await run.advance()
        assert run.state == "fetching" and run.history == []

    async def test_errors_of_async_callables_are_the_sync_runs(self) -> None:
        """An async guard that raises, guards that all refuse, an unhandled outcome."""

        async def broken(run: Run[Any]) -> bool:
            raise KeyError("value")

        async def odd(context: dict[str, Any]) -> object:
            return "odd"

        machine = Machine(
            "errors",
            states=[
                State("a", initial=True),
                State("b", action=odd, outcomes=("ok",)),
                State("c", final=True),
            ],
            transitions=[("a", "go", "b", broken), ("a", "try", "b", big), ("b", "ok", "c")],
        )
        run = machine.create_async()
        with pytest.raises(CallbackError, match="guard broken raised KeyError"):
            await run.send("go")
        with pytest.raises(GuardRejected, match=r"every guard refused \(big -> 'b'\)"):
            await run.send("try")
        run = machine.restore_async("r", "b")
        with pytest.raises(UnhandledOutcome, match="action odd returned 'odd'"):
            await run.advance()

    async def test_rollback_from_an_async_action_takes_its_row(self) -> None:
        async def refuse(context: dict[str, Any]) -> Fetched | Missing:
            raise Rollback(Missing())

        machine = Machine(
            "rollback",
            states=[State("a", initial=True, action=refuse), State("b", final=True)],
            transitions=[("a", Fetched, "b"), ("a", Missing, "b")],
        )
        run = await machine.start_async()
        assert run.state == "b" and run.outcome == Missing()

    async def test_max_steps_holds_for_async_loops(self) -> None:
        async def again(context: dict[str, Any]) -> Missing | Fetched:
            return Missing()

        loop = Machine(
            "loop",
            states=[
                State("a", initial=True, action=again),
                State("b", action=again),
                State("c", final=True),
            ],
            transitions=[
                ("a", Missing, "b"),
                ("a", Fetched, "c"),
                ("b", Missing, "a"),
                ("b", Fetched, "c"),
            ],
        )
        with pytest.raises(RunError, match="advance\\(\\) followed 5 actions"):
            await loop.create_async().advance(max_steps=5)

    async def test_a_cancelled_action_leaves_the_run_where_it_was(self) -> None:
        started = asyncio.Event()

        async def forever(context: dict[str, Any]) -> Missing:
            started.set()
            await asyncio.sleep(60)
            return Missing()

        machine = Machine(
            "slow",
            states=[State("a", initial=True, action=forever), State("b", final=True)],
            transitions=[("a", Missing, "b")],
        )
        run = machine.create_async()
        task = asyncio.create_task(run.advance())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert run.state == "a" and run.history == []


@dataclass(frozen=True)
class Order:
    """An event object: it fires the row of its class and is kept as the outcome."""

    value: int


orders: Machine[str] = Machine(
    "orders",
    states=[
        State("waiting", initial=True),
        State("fetching", action=fetch),
        State("fetched", final=True),
        State("missing", final=True, failure=True),
    ],
    transitions=[
        ("waiting", Order, "fetching"),
        ("fetching", Fetched, "fetched"),
        ("fetching", Missing, "missing"),
    ],
)


class TestAsyncRunApi:
    """What an AsyncRun is given and does is the sync run's: ids, steps, events, errors."""

    async def test_the_given_run_id_and_steps_are_kept(self) -> None:
        """start_async and restore_async keep the run id they are given; restore_async
        binds the steps object it is given."""
        assert (await lookup.start_async({}, run_id="r7")).id == "r7"
        run = checked.restore_async("r8", "a", steps=PlainSteps())
        assert run.id == "r8" and run.step_key == "r8:1"
        assert (await run.advance()).outcome == Fetched(1)

    async def test_restore_async_refuses_a_broken_history_like_restore(self) -> None:
        """A stored history that is not a path of the table is a RestoreError naming the
        machine and the run."""
        with pytest.raises(RestoreError) as caught:
            lookup.restore_async("r9", "large", history=[("fetching", Missing, "large", None)])
        assert (caught.value.machine, caught.value.run_id) == ("lookup", "r9")
        assert "the table has no row 'fetching' --Missing--> 'large'" in str(caught.value)

    async def test_an_event_into_an_action_state_runs_the_action(self) -> None:
        """The event's row fires with the event as its outcome, then the target's action
        runs and its outcome's row fires."""
        run = await orders.start_async({"value": 4})
        await run.send(Order(4))
        assert run.history == [
            Transition("waiting", Order, "fetching", Order(4)),
            Transition("fetching", Fetched, "fetched", Fetched(4)),
        ]

    async def test_refused_events_are_the_sync_runs(self) -> None:
        """An unknown or unhashable event is InvalidEvent naming it and the allowed ones;
        the run does not move."""
        run = lookup.restore_async("r1", "fetched", {"value": 1})
        with pytest.raises(InvalidEvent) as caught:
            await run.send("fetch")
        assert (caught.value.event, caught.value.allowed) == ("fetch", ("classify",))
        with pytest.raises(InvalidEvent) as caught:
            await run.send(["classify"])
        assert caught.value.event == ["classify"]
        assert run.state == "fetched" and run.history == []

    async def test_call_runs_the_action_and_fires_no_row(self) -> None:
        """call() awaits the action and returns its outcome; the run stays in its state."""
        run = lookup.create_async({"value": 2})
        assert await run.call() == Fetched(2)
        assert run.state == "fetching" and run.history == [] and run.context["fetched"]

    async def test_fire_follows_one_row_and_runs_no_action(self) -> None:
        """fire() takes an event, or with outcome=True an action's outcome, through the
        real table and guards (awaited), and runs no action."""
        run = orders.create_async({"value": 1})
        assert await run.fire(Order(1)) == Transition("waiting", Order, "fetching", Order(1))
        assert run.state == "fetching" and "fetched" not in run.context
        assert await run.fire(Missing(), outcome=True) == Transition(
            "fetching", Missing, "missing", Missing()
        )
        guarded = lookup.restore_async("r2", "fetched", {"value": 3})
        assert (await guarded.fire("classify")).target == "small"

    def test_repr_names_the_run_and_its_state(self) -> None:
        assert repr(lookup.create_async(run_id="r1")) == "<AsyncRun r1 of 'lookup' in 'fetching'>"

    async def test_the_held_run_moved_by_the_sync_api_refuses_an_async_guard(self) -> None:
        """`AsyncRun.run` is for reading: moving it with the sync API raises at the async
        guard instead of taking a row on an answer nobody awaited."""
        run = await lookup.start_async({"value": 3})
        with pytest.raises(CallbackError, match="guard big raised AsyncRequired") as caught:
            run.run.send("classify")
        assert isinstance(caught.value.error, AsyncRequired)
        assert run.state == "fetched" and len(run.history) == 1


class Steps(Protocol):
    """A steps protocol whose implementation decides sync or async."""

    def check(self, context: dict[str, Any]) -> Fetched | Missing: ...


class AsyncSteps:
    async def check(self, context: dict[str, Any]) -> Fetched | Missing:
        return Missing()


class PlainSteps:
    def check(self, context: dict[str, Any]) -> Fetched | Missing:
        return Fetched(1)


checked: Machine[str] = Machine(  # unchecked steps: AsyncSteps is not a Steps to mypy
    "checked",
    steps=Steps,
    states=[State("a", initial=True, action=Steps.check), State("b", final=True)],
    transitions=[("a", Fetched, "b"), ("a", Missing, "b")],
)


class Awaiting(Protocol):
    """A steps protocol that declares its method async."""

    async def check(self, context: dict[str, Any]) -> Fetched | Missing: ...


class TestSyncRunRefusesAsync:
    """A sync run is refused at creation, in one line naming what it cannot await."""

    def test_a_sync_run_of_an_async_machine(self) -> None:
        with pytest.raises(AsyncRequired) as refused:
            lookup.start({"value": 1})
        assert str(refused.value) == (
            "machine 'lookup': a sync run cannot await action fetch (state 'fetching'), guard "
            "big (row ('fetched', 'classify', 'large', big)); run it with create_async, "
            "start_async or restore_async (AsyncPersistentMachine on a store), or make them "
            "plain def"
        )
        assert refused.value.machine == "lookup"

    def test_async_steps_methods_and_listeners_are_named(self) -> None:
        async def listen(run: Run[str], transition: Transition[str]) -> None: ...

        with pytest.raises(AsyncRequired) as refused:
            checked.create(steps=AsyncSteps(), listeners=[listen])  # type: ignore[list-item]
        assert refused.value.callables == ("action check (state 'a')", "listener listen")

    def test_plain_steps_run_sync_and_async(self) -> None:
        assert checked.start(steps=PlainSteps()).outcome == Fetched(1)
        run = asyncio.run(checked.start_async(steps=AsyncSteps()))
        assert run.outcome == Missing()

    def test_the_bound_object_decides_not_the_protocol(self) -> None:
        """A protocol declaring `async def` does not make the run async: a plain object
        bound to it runs in a sync run, since its method is the one called."""
        declared = Machine(
            "declared",
            steps=Awaiting,
            states=[State("a", initial=True, action=Awaiting.check), State("b", final=True)],
            transitions=[("a", Fetched, "b"), ("a", Missing, "b")],
        )
        assert declared.start(steps=PlainSteps()).outcome == Fetched(1)
