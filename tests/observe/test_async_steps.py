"""The async persistent runner's step hooks and logs, on SQLite and PostgreSQL: the same
rules as the sync runner's, `async def` hooks awaited."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import AsyncSqlUnitOfWork
from fsm import AsyncPersistentMachine, ConcurrencyError
from fsm.examples import ping
from fsm.hooks import StepCommitted
from tests.observe.support import Told, failing_commit


class AsyncTold(Told):
    """Told, whose after-commit hook is `async def`."""

    async def after_commit_async(self, step: StepCommitted) -> None:
        self.after_commit(step)


def pings(async_engine: AsyncEngine, told: AsyncTold) -> AsyncPersistentMachine[str]:
    return AsyncPersistentMachine(
        ping,
        AsyncSqlUnitOfWork(async_engine),
        after_commit=[told.after_commit_async],
        after_failure=[told.after_failure],
    )


class TestAsyncHooks:
    """AsyncPersistentMachine tells its hooks after each commit and each rollback."""

    async def test_async_hook_awaited_after_commit(self, async_engine: AsyncEngine) -> None:
        """An `async def` hook is awaited once per committed step."""
        told = AsyncTold()
        run = await pings(async_engine, told).start()
        await run.send("start")
        await run.send("finish")
        assert told.moves() == [("idle", "start", "busy"), ("busy", "finish", "done")]
        assert [s.seq for s in told.committed] == [1, 2]

    async def test_not_called_for_a_failed_commit(
        self, async_engine: AsyncEngine, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A commit that fails is told to the failure hook and logged as such, never as
        committed; the retry is told once."""
        caplog.set_level(logging.DEBUG, logger="fsm.steps")
        told = AsyncTold()
        run = await pings(async_engine, told).start()
        with failing_commit(async_engine.sync_engine):
            await run.send("start")
        assert (told.committed, run.state) == ([], "idle")
        (failure,) = told.failed
        assert (failure.source, failure.trigger, failure.target) == ("idle", "start", "busy")
        levels = [r.levelname for r in caplog.records if r.name == "fsm.steps"]
        assert levels == ["WARNING"]
        await run.send("start")
        assert told.moves() == [("idle", "start", "busy")]

    async def test_concurrency_conflict(self, async_engine: AsyncEngine) -> None:
        """A stale handle's step is a failure, told with the transition it tried."""
        told = AsyncTold()
        machine = pings(async_engine, told)
        stale = await machine.start()
        await (await machine.load(stale.id)).send("start")
        with pytest.raises(ConcurrencyError):
            await stale.send("start")
        assert told.moves() == [("idle", "start", "busy")]
        assert [(f.source, f.trigger) for f in told.failed] == [("idle", "start")]
