"""The async persistent runner on the in-memory unit of work: the sync runner's rules for
claims, leases, failed calls, rollback and effects, awaited."""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.memory import AsyncInMemoryUnitOfWork, InMemoryRunStore, InMemoryUnitOfWork
from fsm import (
    AsyncPersistentMachine,
    AsyncRequired,
    CallbackError,
    ConcurrencyError,
    InvalidEvent,
    Machine,
    PersistentMachine,
    Rollback,
    State,
)
from fsm.outbox import OutboxMessage
from fsm.ports import RunClaimed
from tests.clock import T0, Clock
from tests.persistence.async_support import Gateway, capture
from tests.persistence.external_support import Captured, Declined, Stage, machine


class Workers:
    """Two async workers on one store, with one clock and a 30 s lease."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = InMemoryRunStore()
        self.calls: list[tuple[str, str]] = []
        self.a, self.uow_a, self.runs_a = self.worker("a")
        self.b, self.uow_b, self.runs_b = self.worker("b")

    def worker(
        self, name: str
    ) -> tuple[Gateway, AsyncInMemoryUnitOfWork, AsyncPersistentMachine[Stage]]:
        uow = AsyncInMemoryUnitOfWork(InMemoryUnitOfWork(runs=self.store))
        gateway = Gateway(name, self.calls)
        runs = AsyncPersistentMachine(
            capture, uow, steps=gateway, worker=name, clock=self.clock, lease=timedelta(seconds=30)
        )
        return gateway, uow, runs

    async def stuck(self) -> str:
        """A run waiting to capture, unclaimed (worker a's first call failed)."""
        self.a.error = RuntimeError("gateway down")
        with pytest.raises(CallbackError):
            await self.runs_a.start({"payment": "p-1"}, run_id="pay-1")
        self.a.error = None
        self.a.started.clear()
        self.calls.clear()
        return "pay-1"


async def test_the_external_call_sees_no_transaction_and_gets_the_step_key() -> None:
    workers = Workers()
    seen: list[bool] = []
    workers.a.started = _Probe(lambda: seen.append(workers.uow_a.in_transaction))
    run = await workers.runs_a.start({"payment": "p-1"}, run_id="pay-1")
    assert run.state is Stage.CAPTURED and workers.calls == [("pay-1:2", "a")]
    assert seen == [False]
    stored = workers.store.load("pay-1")
    assert (stored.claimed_by, stored.attempt, stored.version) == (None, 0, 3)
    assert stored.context["gateway_ref"] == "ref-1"


async def test_a_claimed_run_is_refused_without_calling_anything() -> None:
    """While a's call is awaited, b's resume raises RunClaimed and writes nothing."""
    workers = Workers()
    run_id = await workers.stuck()
    workers.a.seconds = 0.05
    first = asyncio.create_task(workers.runs_a.resume(run_id))
    await workers.a.started.wait()
    version = workers.store.load(run_id).version
    with pytest.raises(RunClaimed) as refused:
        await workers.runs_b.resume(run_id)
    assert workers.store.load(run_id).version == version
    assert (refused.value.owner, refused.value.until) == ("a", T0 + timedelta(seconds=30))
    assert (await first).state is Stage.CAPTURED
    assert workers.calls == [("pay-1:2", "a")]


async def test_after_the_lease_the_late_outcome_is_refused() -> None:
    """a's call outlasts its lease; b takes the step with the same key and records it."""
    workers = Workers()
    run_id = await workers.stuck()
    workers.a.seconds = 0.05
    first = asyncio.create_task(workers.runs_a.resume(run_id))
    await workers.a.started.wait()
    workers.clock.advance(31)
    assert (await workers.runs_b.resume(run_id)).state is Stage.CAPTURED
    with pytest.raises(ConcurrencyError):
        await first
    assert workers.calls == [("pay-1:2", "a"), ("pay-1:2", "b")]
    assert (await workers.runs_a.load(run_id)).outcome == Captured("pay-1:2", "b")


async def test_a_lost_record_keeps_the_claim_for_its_worker() -> None:
    workers = Workers()
    run_id = await workers.stuck()
    workers.a.started = _Probe(
        lambda: setattr(workers.uow_a.sync, "fail_commit", ConnectionError("lost"))
    )
    with pytest.raises(ConnectionError):
        await workers.runs_a.resume(run_id)
    stored = workers.store.load(run_id)
    assert (stored.state, stored.claimed_by, stored.attempt) == ("capturing", "a", 1)
    with pytest.raises(RunClaimed):
        await workers.runs_b.resume(run_id)
    workers.a.started = asyncio.Event()
    assert (await workers.runs_a.resume(run_id)).state is Stage.CAPTURED


async def test_rollback_from_an_async_external_action_is_its_outcome() -> None:
    workers = Workers()
    workers.a.answer = Rollback(Declined("card refused"))
    run = await workers.runs_a.start({"payment": "p-1"})
    assert run.state is Stage.DECLINED and run.outcome == Declined("card refused")


hops = Machine(
    "hops",
    states=[State("a", initial=True), State("b"), State("c"), State("z", final=True)],
    transitions=[("a", "go", "b"), ("b", "go", "c"), ("c", "go", "z")],
)


async def test_effects_get_the_unit_of_work_and_listeners_hear_loaded_runs() -> None:
    """start, send (by id and on a loaded run) each await their effect with the unit of
    work; a run loaded from the store keeps the machine's listeners."""
    uow = AsyncInMemoryUnitOfWork()
    heard: list[str] = []
    runs = AsyncPersistentMachine(
        hops, uow, listeners=[lambda run, move: heard.append(str(move.target))]
    )
    seen: list[object] = []

    async def effect(unit: object) -> None:
        seen.append(unit)

    await runs.start(run_id="r1", effect=effect)
    await runs.send("r1", "go", effect=effect)
    await (await runs.load("r1")).send("go", effect=effect)
    assert seen == [uow, uow, uow] and heard == ["b", "c"]


async def test_reload_reads_the_store_again_and_survey_counts_the_runs() -> None:
    """A handle left behind catches up with reload (its own run, or the one named); survey
    counts the stored runs by state, awaited."""
    uow = AsyncInMemoryUnitOfWork()
    runs = AsyncPersistentMachine(hops, uow)
    behind = await runs.start(run_id="r1")
    await runs.start(run_id="r2")
    await runs.send("r1", "go")
    assert (await behind.reload()).state == "b"
    assert (await behind.reload("r2")).id == "r2"
    survey = await runs.survey([("r1", "b"), ("r2", "a")])
    assert (survey.by_state, survey.unloadable) == ({"b": 1, "a": 1}, ())


async def test_a_failed_step_rolls_back_its_effect() -> None:
    """An event refused after the effect wrote: the transaction rolls back, not commits."""
    uow = AsyncInMemoryUnitOfWork()
    runs = AsyncPersistentMachine(hops, uow)
    await runs.start(run_id="r1")

    async def effect(unit: object) -> None:
        assert isinstance(unit, AsyncInMemoryUnitOfWork)
        unit.sync.outbox.add(OutboxMessage("e1", "topic", "r1", b"{}"))

    before = (uow.sync.commits, uow.sync.rollbacks)
    with pytest.raises(InvalidEvent):
        await runs.send("r1", "back", effect=effect)
    # Committed: the reads before and after (load, then reload after the failure).
    assert (uow.sync.commits, uow.sync.rollbacks) == (before[0] + 2, before[1] + 1)
    assert uow.sync.outbox.counts()["pending"] == 0


def test_a_sync_runner_refuses_an_async_effect_and_stores_nothing() -> None:
    """The effect's coroutine reaches the sync driver: closed, AsyncRequired, rolled back."""
    from tests.persistence.external_support import Gateway as SyncGateway

    store = InMemoryRunStore()
    runs = PersistentMachine(
        machine, InMemoryUnitOfWork(runs=store), steps=SyncGateway(Path(os.devnull), worker="w")
    )

    async def effect(uow: Any) -> None: ...

    with pytest.raises(AsyncRequired, match="a sync run was handed coroutine to await"):
        runs.start({"payment": "p-1"}, effect=effect)
    assert store.runs == {}


class _Probe(asyncio.Event):
    """An Event that runs `probe` when the gateway sets it (mid-call)."""

    def __init__(self, probe: Any) -> None:
        super().__init__()
        self.probe = probe

    def set(self) -> None:
        self.probe()
        super().set()
