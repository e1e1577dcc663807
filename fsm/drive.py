"""One implementation of the rules for sync and async runs: Steps, and the two drivers.

The engine's rules (which row fires, what a listener's failure undoes, what commits when,
what a claim refuses, how an error is explained) are written once, as generator functions
returning `Steps`. A Steps computation calls what it needs itself (actions, guards,
listeners, a unit of work) and, where a call handed back an awaitable, yields it through
`settle`: the driver awaits it and sends the result back in, or throws its error in at the
same place, so the rule code reads as straight-line code with its own `try`/`except`.

- `run_sync` and `drain` drive a sync run. Nothing is awaitable there (a sync run refuses
  async callables when it is created, and its runtime settles nothing), so they never
  resume anything; an awaitable that reaches them anyway (an `async def` effect given to a
  sync PersistentMachine, say) is closed, and AsyncRequired is thrown in where it was.
- `run_async` drives an async run: it awaits each awaitable in the running task.

Nothing here knows runs or stores; fsm.runtime, fsm.persistence and the SQL adapters' run
store all write their logic as Steps, so the sync and async APIs are thin wrappers.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from fsm.errors import AsyncRequired

T = TypeVar("T")
R = TypeVar("R")

Steps = Generator[Awaitable[Any], Any, R]
"""A computation that yields the awaitables it must wait for and returns an R."""


def settle(value: Awaitable[T] | T) -> Steps[T]:
    """`value`, awaited by the driver first when it is awaitable (use with `yield from`)."""
    if inspect.isawaitable(value):
        return (yield value)  # type: ignore[no-any-return]
    return value


def call(function: Callable[..., object], *args: object) -> Steps[Any]:
    """`function(*args)`, settled: for calls whose value, if any, the caller does not type."""
    return (yield from settle(function(*args)))


def run_sync(steps: Steps[R]) -> R:
    """Run `steps` to its end in a sync run and return its result."""
    try:
        pending = next(steps)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    return _refuse(steps, pending)


def drain(steps: Steps[object]) -> None:
    """`run_sync` for a result nobody reads: no StopIteration is raised on the hot path."""
    for pending in steps:
        _refuse(steps, pending)
        return


def _refuse(steps: Steps[R], pending: Awaitable[Any]) -> R:
    """Throw AsyncRequired in wherever the computation waits, until it gives up."""
    try:
        while True:
            pending = steps.throw(_refused(pending))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


def _refused(pending: Awaitable[Any]) -> AsyncRequired:
    close = getattr(pending, "close", None)
    if callable(close):  # a coroutine: closed, so Python does not warn it was never awaited
        close()
    return AsyncRequired(
        f"a sync run was handed {type(pending).__name__} to await (a plain function that "
        "returns a coroutine?); use the async API (create_async, start_async, "
        "AsyncPersistentMachine), or make it return its value"
    )


async def run_async(steps: Steps[R]) -> R:
    """Run `steps` to its end in the running task, awaiting what it yields; an error (a
    cancellation too) goes back into the computation where it was waiting."""
    try:
        pending = next(steps)
        while True:
            try:
                value = await pending
            except BaseException as error:
                pending = steps.throw(error)
            else:
                pending = steps.send(value)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
