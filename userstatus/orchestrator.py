"""UserStatusUpdateOrchestrator: runs the flow machine, one committed transaction per step."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from fsm.errors import CallbackError
from fsm.runtime import Run, Transition
from userstatus.domain import UpdateUserStatusPayload
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.flow import FlowState, build_flow
from userstatus.manager import utcnow
from userstatus.outcomes import (
    Published,
    PublishFailed,
    PublishOutcome,
    StorageError,
    UpdateOutcome,
    UserStatusUpdated,
)
from userstatus.ports import EventPublisher, StatusManager, UnitOfWork

log = logging.getLogger(__name__)


def new_id() -> str:
    """A fresh run or event id."""
    return uuid.uuid4().hex


class UserStatusUpdateOrchestrator:
    """Calls the status manager, then the publisher, and records every step of the run.

    Step 1 (one transaction): the manager changes the user, the event goes into the outbox,
    the run's new state and history row are recorded; all commit together or not at all.
    Step 2 (after the commit): the event is published; the run moves to `published`
    (and the outbox row is marked) or to `publish_failed` (the row stays pending for the
    relay). The table, not this class, decides where each outcome leads.
    """

    def __init__(
        self,
        manager: StatusManager,
        publisher: EventPublisher,
        uow: UnitOfWork,
        *,
        topic: str = TOPIC,
        owner: str = "orchestrator",
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
    ) -> None:
        self.manager = manager
        self.publisher = publisher
        self.uow = uow
        self.topic = topic
        self.owner = owner
        self.clock = clock
        self.ids = ids
        self.machine = build_flow(self)

    def perform(self, payload: UpdateUserStatusPayload) -> Run[FlowState]:
        """Run one status update to `published`, `publish_failed` or `update_failed`."""
        if not isinstance(payload, UpdateUserStatusPayload):
            raise TypeError(f"payload must be an UpdateUserStatusPayload, got {payload!r}")
        run_id = self.ids()
        context = {
            "run_id": run_id,
            "user_id": payload.user_id,
            "new_status": payload.new_status.value,
        }
        run = self.machine.create(context, run_id=run_id, listeners=[self._record])
        self.uow.rollback()  # start from a clean transaction, whatever the caller left open
        try:
            run.advance()
        except CallbackError as error:
            self.uow.rollback()
            if run.state != FlowState.RECEIVED:
                # Committed already; the outbox row is pending and the relay finishes the run.
                log.error("run %s stopped in %s: %s", run.id, run.state, error)
                return run
            # Committing the update failed: nothing of it is visible, so record the failure.
            run.send(StorageError(payload.user_id, f"{type(error.error).__name__}: {error.error}"))
        self._log(run)
        return run

    # -- the actions (their return annotations are the closed families the table handles)

    def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Change the user and add the event to the outbox, in the current transaction."""
        payload = UpdateUserStatusPayload.parse(context["user_id"], context["new_status"])
        outcome = self.manager.update_user_status(payload)
        if not isinstance(outcome, UserStatusUpdated):
            self.uow.rollback()  # nothing of a failed update may commit
            return outcome
        event = UserStatusChanged(
            event_id=self.ids(),
            user_id=outcome.user_id,
            old_status=outcome.old_status,
            new_status=outcome.new_status,
            occurred_at=self.clock(),
            run_id=context["run_id"],
        )
        message = event.to_message(self.topic)
        try:
            self.uow.outbox.add(message)
            earlier = self.uow.outbox.pending_for_key(message.key) - 1
        except Exception as error:
            self.uow.rollback()
            log.error("adding event %s to the outbox failed: %r", event.event_id, error)
            return StorageError(payload.user_id, f"{type(error).__name__}: {error}")
        context["event"] = event.to_json()
        context["queued_behind"] = earlier
        return outcome

    def publish_event(self, context: dict[str, Any]) -> PublishOutcome:
        """Publish the committed event now, unless an earlier one of the user is pending."""
        event = UserStatusChanged.from_json(context["event"])
        earlier = int(context.get("queued_behind", 0))
        if earlier > 0:
            # Publishing now would overtake the user's earlier event: per-user order wins,
            # the relay publishes both in order.
            return PublishFailed(
                event.event_id,
                f"{earlier} earlier event(s) of user {event.user_id} still pending; "
                "left to the relay to keep per-user order",
                attempts=0,
            )
        return self.publisher.publish(event)

    # -- recording

    def _record(self, run: Run[Any], transition: Transition[Any]) -> None:
        """Listener: record the step and commit it with whatever the action wrote."""
        try:
            if isinstance(transition.outcome, Published):
                self.uow.outbox.mark_published(
                    transition.outcome.event_id, owner=self.owner, now=self.clock()
                )
            self.uow.runs.save(run, transition)
            self.uow.commit()
        except Exception:
            self.uow.rollback()
            raise

    def _log(self, run: Run[Any]) -> None:
        outcome = run.outcome
        if run.state == FlowState.PUBLISHED:
            log.info("run %s: user %s updated and published", run.id, run.context["user_id"])
        elif run.state == FlowState.PUBLISH_FAILED:
            log.warning(
                "run %s: committed, publish failed (%s); the relay will retry",
                run.id,
                getattr(outcome, "error", outcome),
            )
        else:
            log.info("run %s: %s (%r)", run.id, run.state, outcome)
