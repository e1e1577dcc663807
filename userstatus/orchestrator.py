"""UserStatusUpdateOrchestrator: runs the flow machine, one committed transaction per step."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from fsm.errors import FSMError
from fsm.persistence import PersistentMachine, PersistentRun
from fsm.ports import RunNotFound
from fsm.runtime import Run, Transition
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.flow import FlowState, bound, machine
from userstatus.outcomes import (
    Published,
    PublishFailed,
    PublishOutcome,
    StorageError,
    UpdateOutcome,
    UserStatusUpdated,
)
from userstatus.ports import EventPublisher, FlowUnitOfWork, StatusManager

log = logging.getLogger(__name__)

STORAGE_ERROR = "storage_error"
"""Context key: a first attempt whose transaction failed; the run records it as update_failed."""


def new_id() -> str:
    """A fresh run or event id."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    """The current time, timezone-aware (the default clock)."""
    return datetime.now(UTC)


class UpdateAborted(FSMError):
    """The update step failed in the database: its transaction is rolled back as a whole."""

    def __init__(self, outcome: StorageError) -> None:
        self.outcome = outcome
        super().__init__(outcome.error)


class UserStatusUpdateOrchestrator:
    """Calls the status manager, then the publisher, and records every step of the run.

    Step 1 (one transaction): the manager changes the user, the event goes into the outbox,
    the run is stored with its new state and history row; all of it commits or none.
    Step 2 (after that commit): the event is published. `published` commits with the
    outbox row marked published; `publish_failed` commits with the row still pending (the
    failed attempt counted), for the relay. Until step 2 ends, or `publish_grace` passes
    if this process dies first, relays leave the new event alone. The table, not this
    class, decides where each outcome leads. One orchestrator (and its unit of work)
    serves one thread at a time.
    """

    def __init__(
        self,
        manager: StatusManager,
        publisher: EventPublisher,
        uow: FlowUnitOfWork,
        *,
        topic: str = TOPIC,
        owner: str = "orchestrator",
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[], str] = new_id,
        publish_grace: timedelta = timedelta(seconds=30),
    ) -> None:
        self.manager = manager
        self.publisher = publisher
        self.uow = uow
        self.topic = topic
        self.owner = owner
        self.clock = clock
        self.ids = ids
        self.publish_grace = publish_grace
        self.machine = machine
        self.runs: PersistentMachine[FlowState] = PersistentMachine(
            machine, uow, types=[UserStatus], clock=clock, listeners=[self._settle_outbox]
        )

    def perform(self, payload: UpdateUserStatusPayload) -> PersistentRun[FlowState]:
        """Run one status update to `published`, `publish_failed` or `update_failed`.

        Returns the stored run. If the process dies between the two steps, the run waits
        in `status_updated` with its event pending, and the relay finishes it.
        """
        if not isinstance(payload, UpdateUserStatusPayload):
            raise TypeError(f"payload must be an UpdateUserStatusPayload, got {payload!r}")
        run_id = self.ids()
        context: dict[str, Any] = {
            "run_id": run_id,
            "user_id": payload.user_id,
            "new_status": payload.new_status.value,
        }
        try:
            with bound(self):
                handle = self.runs.start(context, run_id=run_id)
        except Exception as error:
            if self._stored(run_id):
                # Step 1 committed, step 2 broke (not a publish failure: that is an outcome).
                # The event is pending in the outbox; the relay publishes it and ends the run.
                log.error(
                    "run %s stopped after its commit: %r; the relay will finish it", run_id, error
                )
                return self.runs.load(run_id)
            # Step 1 rolled back: nothing of it is stored. Record the failure as the run.
            original = getattr(error, "error", error)  # a CallbackError carries the original
            if isinstance(original, UpdateAborted):
                cause = original.outcome.error
            else:
                cause = _describe(error)
            log.error("run %s: the update of user %s failed: %s", run_id, payload.user_id, cause)
            with bound(self):
                handle = self.runs.start(context | {STORAGE_ERROR: cause}, run_id=run_id)
        self._log(handle)
        return handle

    def _stored(self, run_id: str) -> bool:
        try:
            with self.uow:
                self.uow.runs.load(run_id)
        except RunNotFound:
            return False
        return True

    # -- the actions (their return annotations are the closed families the table handles)

    def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Change the user and add the event to the outbox, in the step's transaction."""
        if STORAGE_ERROR in context:
            return StorageError(int(context["user_id"]), str(context[STORAGE_ERROR]))
        payload = UpdateUserStatusPayload.parse(context["user_id"], context["new_status"])
        outcome = self.manager.update_user_status(payload)
        if isinstance(outcome, StorageError):
            raise UpdateAborted(outcome)  # roll the whole step back; perform() records it
        if not isinstance(outcome, UserStatusUpdated):
            return outcome  # nothing was written: the run records why
        event = UserStatusChanged(
            event_id=self.ids(),
            user_id=outcome.user_id,
            old_status=outcome.old_status,
            new_status=outcome.new_status,
            occurred_at=self.clock(),
            run_id=context["run_id"],
        )
        message = event.to_message(self.topic)
        outbox = self.uow.outbox
        earlier = outbox.pending_for_key(message.key)
        outbox.add(message)
        if not earlier:
            # This process publishes it in a moment: keep relays off it meanwhile, so they
            # do not send it a second time. If the process dies, they take over after this.
            outbox.hold(message.event_id, until=event.occurred_at + self.publish_grace)
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

    def _settle_outbox(self, run: Run[Any], transition: Transition[Any]) -> None:
        """Listener: the outbox row follows the publish outcome, in the same transaction.

        Published: it leaves the pending set. A failed attempt: it is counted, its error
        kept, and it is due for the relay at once (the hold is released).
        """
        outcome = transition.outcome
        now = self.clock()
        if isinstance(outcome, Published):
            self.uow.outbox.mark_published(outcome.event_id, owner=self.owner, now=now)
        elif isinstance(outcome, PublishFailed) and outcome.attempts > 0:
            self.uow.outbox.mark_failed(
                outcome.event_id, owner=self.owner, error=outcome.error, retry_at=now
            )

    def _log(self, run: PersistentRun[FlowState]) -> None:
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


def _describe(error: BaseException) -> str:
    cause = getattr(error, "error", None)  # a CallbackError carries the original
    if isinstance(cause, BaseException):
        error = cause
    return f"{type(error).__name__}: {error}"
