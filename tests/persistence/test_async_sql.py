"""The async persistent runner on SQLAlchemy's asyncio engine, on SQLite (aiosqlite) and
PostgreSQL (psycopg async): async actions, guards and listeners through the store, rollback
outcomes, concurrency, one external call between two tasks, and no transaction open during
it (a local action as the control)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.sqlalchemy import (
    TABLES,
    AsyncSqlUnitOfWork,
    SqlUnitOfWork,
    create_async_engine,
)
from fsm import (
    AsyncPersistentMachine,
    AsyncPersistentRun,
    AsyncRequired,
    CallbackError,
    ConcurrencyError,
    Machine,
    PersistentMachine,
    Run,
    Transition,
)
from fsm.ports import RunClaimed
from tests.persistence.async_support import (
    Gateway,
    Recorded,
    Recorder,
    Refused,
    approval,
    capture,
    local_capture,
)
from tests.persistence.external_support import (
    Captured,
    Stage,
    another_writer_commits,
    session_states,
)


def messages(engine: Engine) -> int:
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(TABLES.outbox)).scalar_one()


def approvals(
    async_engine: AsyncEngine, *, refuse: bool = False, listeners: Any = ()
) -> AsyncPersistentMachine[str]:
    uow = AsyncSqlUnitOfWork(async_engine)
    return AsyncPersistentMachine(
        approval, uow, steps=Recorder(uow, refuse=refuse), listeners=listeners
    )


class TestLocalSteps:
    """Async local actions, guards and listeners, one transaction per step."""

    async def test_async_callables_are_awaited_and_each_step_commits(
        self, async_engine: AsyncEngine, engine: Engine
    ) -> None:
        """The async guard picks the row, the async action writes in the step's
        transaction, the async listener hears both transitions; all of it is stored."""
        heard: list[str] = []

        async def listen(run: Run[str], transition: Transition[str]) -> None:
            await asyncio.sleep(0)
            heard.append(f"{transition.source}->{transition.target}")

        runs = approvals(async_engine, listeners=[listen])
        run = await runs.start({"amount": 20}, run_id="a-1")
        assert run.state == "waiting" and run.version == 1
        await run.send("approve")
        assert run.state == "done" and run.context["recorded"] is True
        assert heard == ["waiting->recording", "recording->done"]
        stored = await approvals(async_engine).load("a-1")
        assert stored.state == "done" and stored.version == 3
        assert [t.outcome for t in stored.history] == ["approve", Recorded()]
        assert messages(engine) == 1

    async def test_a_rollback_outcome_undoes_the_write_and_takes_its_row(
        self, async_engine: AsyncEngine, engine: Engine
    ) -> None:
        runs = approvals(async_engine, refuse=True)
        run = await runs.send((await runs.start({"amount": 20})).id, "approve")
        assert run.state == "refused" and run.outcome == Refused("over the limit")
        assert "recorded" not in run.context
        stored = await approvals(async_engine).load(run.id)
        assert stored.state == "refused" and "recorded" not in stored.context
        assert messages(engine) == 0

    async def test_two_handles_sending_at_once_one_wins(
        self, async_engine: AsyncEngine, engine: Engine
    ) -> None:
        """Both read version 1; the loser gets ConcurrencyError, its write rolled back, and
        its handle shows what the winner committed."""
        run_id = (await approvals(async_engine).start({"amount": 5})).id
        first = await approvals(async_engine).load(run_id)
        second = await approvals(async_engine).load(run_id)
        await first.send("approve")
        with pytest.raises(ConcurrencyError) as lost:
            await second.send("approve")
        assert (lost.value.run_id, lost.value.expected) == (run_id, 1)
        assert second.state == "done" and second.version == first.version == 3
        assert messages(engine) == 1


class TestSyncRunnerRefuses:
    def test_a_sync_runner_refuses_an_async_machine_when_the_run_is_created(
        self, engine: Engine
    ) -> None:
        uow = SqlUnitOfWork(engine)
        runs = PersistentMachine(capture, uow, steps=Gateway("w", []))
        with pytest.raises(AsyncRequired) as refused:
            runs.start({"payment": "p-1"})
        assert str(refused.value) == (
            "machine 'async_capture': a sync run cannot await action prepare (state "
            "<Stage.RECEIVED: 'received'>), action capture (state <Stage.CAPTURING: "
            "'capturing'>); run it with create_async, start_async or restore_async "
            "(AsyncPersistentMachine on a store), or make them plain def"
        )
        with SqlUnitOfWork(engine) as check:
            assert check.runs.find("async_capture") == []


async def stuck_capture(async_engine: AsyncEngine, calls: list[tuple[str, str]]) -> str:
    """A capture run waiting for its external step, unclaimed (the first call failed)."""
    gateway = Gateway("first", calls)
    gateway.error = ConnectionError("gateway down")
    runs = AsyncPersistentMachine(
        capture, AsyncSqlUnitOfWork(async_engine), steps=gateway, worker="first"
    )
    with pytest.raises(CallbackError, match="gateway down"):
        await runs.start({"payment": "p-1"}, run_id="pay-1")
    calls.clear()
    return "pay-1"


class TestExternalSteps:
    async def test_two_tasks_resuming_together_make_one_call(
        self, async_engine: AsyncEngine
    ) -> None:
        """Each task has its own unit of work and worker; one claims and calls, the other
        gets RunClaimed and calls nothing."""
        calls: list[tuple[str, str]] = []
        run_id = await stuck_capture(async_engine, calls)

        async def resume(worker: str) -> AsyncPersistentRun[Stage]:
            runs = AsyncPersistentMachine(
                capture,
                AsyncSqlUnitOfWork(async_engine),
                steps=Gateway(worker, calls, seconds=0.5),
                worker=worker,
            )
            return await runs.resume(run_id)

        results = await asyncio.gather(resume("a"), resume("b"), return_exceptions=True)
        done = [r for r in results if isinstance(r, AsyncPersistentRun)]
        claimed = [r for r in results if isinstance(r, RunClaimed)]
        assert len(done) == 1 and len(claimed) == 1, results
        winner = done[0].outcome
        assert isinstance(winner, Captured)
        assert calls == [("pay-1:2", winner.worker)]
        assert claimed[0].owner == winner.worker
        runs = AsyncPersistentMachine(capture, AsyncSqlUnitOfWork(async_engine))
        stored = await runs.load(run_id)
        assert stored.state is Stage.CAPTURED and stored.outcome == winner
        assert stored.context["gateway_ref"] == "ref-1"

    async def test_a_failed_call_gives_the_claim_back(self, async_engine: AsyncEngine) -> None:
        calls: list[tuple[str, str]] = []
        run_id = await stuck_capture(async_engine, calls)
        stored = await AsyncPersistentMachine(capture, AsyncSqlUnitOfWork(async_engine)).load(
            run_id
        )
        assert stored.state is Stage.CAPTURING and "gateway_ref" not in stored.context
        runs = AsyncPersistentMachine(
            capture, AsyncSqlUnitOfWork(async_engine), steps=Gateway("b", calls), worker="b"
        )
        run = await runs.resume(run_id)
        assert run.state is Stage.CAPTURED and calls == [("pay-1:2", "b")]


@pytest.fixture
def named(db_url: str) -> tuple[str, str]:
    """The URL with an application name its PostgreSQL sessions show (SQLite: as is)."""
    name = f"fsm-async-{uuid.uuid4().hex[:8]}"
    if db_url.startswith("sqlite"):
        return db_url, name
    url = make_url(db_url).update_query_dict({"application_name": name})
    return url.render_as_string(hide_password=False), name


class TestNoTransactionDuringTheCall:
    """While the external call is awaited the worker holds no transaction: PostgreSQL shows
    no idle-in-transaction session of it, and on SQLite another writer commits. The same
    call made as a local action shows both, so the checks can see what they look for."""

    @pytest.mark.parametrize("local", [False, True], ids=["external", "local-control"])
    async def test_while_the_call_runs(
        self, engine: Engine, named: tuple[str, str], local: bool
    ) -> None:
        url, application = named
        worker_engine = create_async_engine(url)
        try:
            uow = AsyncSqlUnitOfWork(worker_engine)
            gateway = Gateway("worker", [], seconds=2.0, uow=uow)
            chosen: Machine[Stage] = local_capture if local else capture
            runs = AsyncPersistentMachine(chosen, uow, steps=gateway, worker="worker")
            started = asyncio.create_task(runs.start({"payment": "p-1"}))
            await asyncio.wait_for(gateway.started.wait(), timeout=30)
            if engine.dialect.name == "postgresql":
                states = await asyncio.to_thread(session_states, engine, application)
                assert states, "the worker's session is not visible: the check sees nothing"
                assert ("idle in transaction" in states) is local, states
            else:
                assert await asyncio.to_thread(another_writer_commits, url) is not local
            run = await started
            assert run.state is Stage.CAPTURED
        finally:
            await worker_engine.dispose()
