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
    Machine,
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
