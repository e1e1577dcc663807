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
    PersistentMachine,
    Rollback,
)
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
