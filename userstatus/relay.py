"""The flow's relay: the generic outbox relay (fsm.relay) with the flow's settle hook, which
moves each event's run by the outcome of the relay's attempt; sync and asyncio, one set of
rules."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar

from fsm.defaults import utc_now
from fsm.drive import Steps, run_async, run_sync, settle
from fsm.errors import FSMError
from fsm.outbox import (
    AsyncPublisher,
    DeadLettered,
    Delivery,
    OutboxMessage,
    Published,
    Publisher,
    PublishFailed,
    redrivable,
)
from fsm.persistence import (
    AsyncEffect,
    AsyncPersistentMachine,
    AsyncPersistentRun,
    Effect,
    PersistentMachine,
    PersistentRun,
    StoredMachine,
    StoredRun,
)
from fsm.ports import AsyncUnitOfWork, RunNotFound, UnitOfWork
from fsm.relay import AsyncOutboxRelay as AsyncRelay
from fsm.relay import OutboxRelay as Relay
from fsm.relay import default_owner
from userstatus.domain import UserStatus
from userstatus.flow import FlowState, machine
from userstatus.outcomes import PublishOutcome, UpdateOutcome
from userstatus.ports import AsyncFlowUnitOfWork, FlowUnitOfWork

log = logging.getLogger(__name__)
H = TypeVar("H", bound=StoredRun[FlowState])


class _FlowSettling(Generic[H]):
    """The flow's settle hook's rules, once, as Steps: what FlowSettler and AsyncFlowSettler
    share. The per-kind code is how a run is loaded, advanced and sent an event."""

    machine = machine.name

    def __init__(self, runs: StoredMachine[FlowState, Any, H]) -> None:
        self.parked: Collection[str] = runs.labels(redrivable(machine))

    def _loaded(self, run_id: str) -> Steps[H]:
        raise NotImplementedError

    def _advanced(self, run: H) -> Steps[H]:
        raise NotImplementedError

    def _sent(self, run: H, outcome: Delivery, effect: Callable[[Any], object] | None) -> Steps[H]:
        raise NotImplementedError

    def _move(
        self,
        run_id: str,
        event_id: str,
        outcome: Delivery,
        effect: Callable[[Any], object] | None = None,
    ) -> Steps[bool]:
        try:
            run = yield from self._loaded(run_id)
        except RunNotFound:
            log.warning("relay: run %s of event %s is not stored", run_id, event_id)
            return False
        if run.finished or run.state == FlowState.DEAD_LETTERED:
            # Settled already (a duplicate send after an expired lease), or parked for an
            # operator: the relay never moves a dead-lettered run, a redrive does.
            return False
        if run.state == FlowState.STATUS_UPDATED:
            # The process that committed stopped before publishing: that publish failed.
            # Its step is recorded first; the relay's own outcome follows from publish_failed.
            run = yield from self._advanced(run)
        yield from self._sent(run, outcome, effect)
        return True


class FlowSettler(_FlowSettling[PersistentRun[FlowState]]):
    """The flow's settle hook: a relay's outcome moves the event's run (fsm.relay.RunSettler)."""

    def __init__(self, uow: FlowUnitOfWork, *, clock: Callable[[], datetime], worker: str) -> None:
        self.runs = flow_runs(uow, worker=worker, clock=clock)
        super().__init__(self.runs)

    def settle(self, message: OutboxMessage, outcome: Delivery, effect: Effect) -> bool:
        assert message.run_id is not None
        return run_sync(self._move(message.run_id, message.event_id, outcome, effect))

    def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        run_sync(self._move(run_id, outcome.event_id, outcome))

    def settle_many(self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: Effect) -> None:
        self.runs.send_all([(str(m.run_id), outcome) for m, outcome in pairs], effect=effect)

    def _loaded(self, run_id: str) -> Steps[PersistentRun[FlowState]]:
        return settle(self.runs.load(run_id))

    def _advanced(self, run: PersistentRun[FlowState]) -> Steps[PersistentRun[FlowState]]:
        return settle(run.advance())

    def _sent(
        self, run: PersistentRun[FlowState], outcome: Delivery, effect: Effect | None
    ) -> Steps[PersistentRun[FlowState]]:
        return settle(run.send(outcome, effect=effect))


class AsyncFlowSettler(_FlowSettling[AsyncPersistentRun[FlowState]]):
    """FlowSettler for asyncio (fsm.relay.AsyncRunSettler): the same rules, on an
    AsyncPersistentMachine."""

    def __init__(
        self, uow: AsyncFlowUnitOfWork, *, clock: Callable[[], datetime], worker: str
    ) -> None:
        self.runs = async_flow_runs(uow, worker=worker, clock=clock)
        super().__init__(self.runs)

    async def settle(self, message: OutboxMessage, outcome: Delivery, effect: AsyncEffect) -> bool:
        assert message.run_id is not None
        return await run_async(self._move(message.run_id, message.event_id, outcome, effect))

    async def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        await run_async(self._move(run_id, outcome.event_id, outcome))

    async def settle_many(
        self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: AsyncEffect
    ) -> None:
        await self.runs.send_all([(str(m.run_id), outcome) for m, outcome in pairs], effect=effect)

    def _loaded(self, run_id: str) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(self.runs.load(run_id))

    def _advanced(self, run: AsyncPersistentRun[FlowState]) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(run.advance())

    def _sent(
        self, run: AsyncPersistentRun[FlowState], outcome: Delivery, effect: AsyncEffect | None
    ) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(run.send(outcome, effect=effect))


def _runs_options(worker: str, lease: timedelta, clock: Callable[[], datetime]) -> dict[str, Any]:
    """How the relay's runner reads and moves the flow's runs, sync or async."""
    return {
        "types": [UserStatus],
        "clock": clock,
        "steps": _RelaySteps(),
        "worker": worker,
        "lease": lease,
    }


def flow_runs(
    uow: UnitOfWork,
    *,
    worker: str,
    lease: timedelta = timedelta(seconds=30),
    clock: Callable[[], datetime] = utc_now,
) -> PersistentMachine[FlowState]:
    """The flow's stored runs as the relay moves them (its context's types, the relay's
    steps): what `fsm worker`, `fsm runs` and `fsm outbox redrive` take as
    userstatus.relay:flow_runs (an fsm.worker.RunsFactory)."""
    return PersistentMachine(machine, uow, **_runs_options(worker, lease, clock))


def async_flow_runs(
    uow: AsyncUnitOfWork,
    *,
    worker: str,
    lease: timedelta = timedelta(seconds=30),
    clock: Callable[[], datetime] = utc_now,
) -> AsyncPersistentMachine[FlowState]:
    """flow_runs for asyncio: the same runner, on an async unit of work."""
    return AsyncPersistentMachine(machine, uow, **_runs_options(worker, lease, clock))


class OutboxRelay(Relay):
    """The generic relay, settling the flow's runs (FlowSettler); `options` are the generic
    relay's (settings, clock, sleep, rand)."""

    def __init__(
        self,
        uow: FlowUnitOfWork,
        publisher: Publisher,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        **options: Any,
    ) -> None:
        owner = owner or default_owner()
        settler = FlowSettler(uow, clock=clock, worker=owner)
        super().__init__(uow, publisher, settler=settler, owner=owner, clock=clock, **options)


class AsyncOutboxRelay(AsyncRelay):
    """OutboxRelay for asyncio: the generic async relay, settling the flow's runs
    (AsyncFlowSettler); `options` are the generic relay's (settings, clock, sleep, rand)."""

    def __init__(
        self,
        uow: AsyncFlowUnitOfWork,
        publisher: AsyncPublisher,
        *,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        **options: Any,
    ) -> None:
        owner = owner or default_owner()
        settler = AsyncFlowSettler(uow, clock=clock, worker=owner)
        super().__init__(uow, publisher, settler=settler, owner=owner, clock=clock, **options)


class _RelaySteps:
    """The flow's actions as the relay finishes a run whose process stopped after its commit.

    The relay never updates users; and a run it finds in `status_updated` did not get its
    immediate publish, which is what `publish_event` reports.
    """

    def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        raise FSMError("the relay never runs the update step")

    def publish_event(self, context: dict[str, Any], key: str) -> PublishOutcome:
        return PublishFailed(
            str(context["event"]["event_id"]),
            "the process that committed it stopped before publishing; the relay took over",
            attempts=0,
        )
