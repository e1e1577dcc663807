"""The sync drivers refuse what a computation hands them to await, and close coroutines."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import pytest

from fsm.drive import Steps, drain, run_sync
from fsm.errors import AsyncRequired


class Later:
    """An awaitable that is no coroutine: nothing to close."""

    def __await__(self) -> Generator[Any, None, None]:
        yield


async def later() -> None:
    """A coroutine function, the usual thing a sync run is handed by mistake."""


def waits_for(pending: Awaitable[None], caught: list[AsyncRequired]) -> Steps[str]:
    """A computation that waits for `pending` and records the error thrown in instead."""
    try:
        yield pending
    except AsyncRequired as error:
        caught.append(error)
    return "gave up"


DRIVERS: list[Callable[[Steps[str]], object]] = [run_sync, drain]


class TestRefused:
    """run_sync and drain throw AsyncRequired in where the computation waits."""

    @pytest.mark.parametrize("driver", DRIVERS, ids=["run_sync", "drain"])
    def test_a_coroutine_is_closed(self, driver: Callable[[Steps[str]], object]) -> None:
        """The coroutine is closed, so Python does not warn that it was never awaited."""
        coroutine = later()
        caught: list[AsyncRequired] = []
        driver(waits_for(coroutine, caught))
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        assert str(caught[0]) == (
            "a sync run was handed coroutine to await (a plain function that returns a "
            "coroutine?); use the async API (create_async, start_async, "
            "AsyncPersistentMachine), or make it return its value"
        )

    @pytest.mark.parametrize("driver", DRIVERS, ids=["run_sync", "drain"])
    def test_another_awaitable_is_named(self, driver: Callable[[Steps[str]], object]) -> None:
        """An awaitable without close() is refused too, named by its type."""
        caught: list[AsyncRequired] = []
        driver(waits_for(Later(), caught))
        assert str(caught[0]).startswith("a sync run was handed Later to await")

    def test_run_sync_returns_what_the_computation_does_after(self) -> None:
        """A computation that gives up after the refusal returns normally."""
        assert run_sync(waits_for(Later(), [])) == "gave up"
