"""The flow's relay: the generic outbox relay (fsm.relay) with the flow's settle hook, which
moves each event's run by the outcome of the relay's attempt."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from fsm.defaults import utc_now
from fsm.errors import FSMError
from fsm.outbox import DeadLettered, Delivery, OutboxMessage, Published, Publisher, PublishFailed
from fsm.persistence import Effect, PersistentMachine
from fsm.ports import RunNotFound
from fsm.relay import OutboxRelay as Relay
from fsm.relay import default_owner
from userstatus.domain import UserStatus
from userstatus.flow import FlowState, machine
from userstatus.outcomes import PublishOutcome, UpdateOutcome
from userstatus.ports import FlowUnitOfWork

log = logging.getLogger(__name__)


class FlowSettler:
    """The flow's settle hook: a relay's outcome moves the event's run (fsm.relay.RunSettler)."""

    machine = machine.name

    def __init__(self, uow: FlowUnitOfWork, *, clock: Callable[[], datetime], worker: str) -> None:
        self.runs: PersistentMachine[FlowState] = PersistentMachine(
            machine, uow, types=[UserStatus], clock=clock, steps=_RelaySteps(), worker=worker
        )

    def settle(self, message: OutboxMessage, outcome: Delivery, effect: Effect) -> bool:
        assert message.run_id is not None
        return self._move(message.run_id, message.event_id, outcome, effect)

    def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        self._move(run_id, outcome.event_id, outcome)

    def settle_many(self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: Effect) -> None:
        self.runs.send_many([(str(m.run_id), outcome) for m, outcome in pairs], effect=effect)

    def _move(
        self, run_id: str, event_id: str, outcome: Delivery, effect: Effect | None = None
    ) -> bool:
        try:
            run = self.runs.load(run_id)
        except RunNotFound:
            log.warning("relay: run %s of event %s is not stored", run_id, event_id)
            return False
        if run.finished:
            return False  # settled already (a duplicate send after an expired lease)
        if run.state == FlowState.STATUS_UPDATED:
            # The process that committed stopped before publishing: that publish failed.
            # Its step is recorded first; the relay's own outcome follows from publish_failed.
            run.advance()
        run.send(outcome, effect=effect)
        return True


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
