"""The orchestration machine of a user status update, with its explicit publish-failed state."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Protocol

from fsm.definition import Machine, State
from userstatus.outcomes import (
    ConcurrentUpdate,
    DeadLettered,
    IllegalStatusChange,
    Published,
    PublishFailed,
    PublishOutcome,
    Redriven,
    StorageError,
    UpdateOutcome,
    UserNotFound,
    UserStatusUpdated,
)


class FlowState(StrEnum):
    """Where a status update run stands."""

    RECEIVED = "received"
    STATUS_UPDATED = "status_updated"
    UPDATE_FAILED = "update_failed"
    PUBLISHED = "published"
    PUBLISH_FAILED = "publish_failed"
    DEAD_LETTERED = "dead_lettered"


class FlowSteps(Protocol):
    """The flow's collaborators: what its two actions call. A run gets an object that has
    them when it is started or loaded (UserStatusUpdateOrchestrator is one; the relay
    binds its own); `Machine.bind` checks it once."""

    def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Validate, change the user and add the event to the outbox in one transaction."""
        ...

    def publish_event(self, context: dict[str, Any], key: str) -> PublishOutcome:
        """After the commit, with no transaction open: publish the event with a short
        bounded retry. (`key` is the engine's idempotency key of the step; the event id,
        fixed when the update committed, is what consumers de-duplicate by.)"""
        ...


F = FlowState

machine: Machine[FlowState, FlowSteps] = Machine(
    "user_status_update",
    steps=FlowSteps,
    states=[
        State(
            F.RECEIVED,
            initial=True,
            action=FlowSteps.update_status,
            description="payload validated; update the user and add the event",
        ),
        State(
            F.STATUS_UPDATED,
            action=FlowSteps.publish_event,
            external=True,
            description="committed; publish the event now",
        ),
        State(F.UPDATE_FAILED, final=True, failure=True, description="nothing changed, no event"),
        State(F.PUBLISHED, final=True, description="the broker acknowledged the event"),
        State(
            F.PUBLISH_FAILED,
            failure=True,
            description="committed but not published; the outbox relay retries",
        ),
        State(
            F.DEAD_LETTERED,
            failure=True,
            description="the relay gave up; an operator re-drives the event (fsm outbox redrive)",
        ),
    ],
    # The delivery outcomes moved from userstatus.outcomes to fsm.outbox: runs stored before
    # hold them under their old type tags.
    aliases={
        "userstatus.outcomes.Published": Published,
        "userstatus.outcomes.PublishFailed": PublishFailed,
        "userstatus.outcomes.DeadLettered": DeadLettered,
    },
    # Each action's return annotation is a closed family: building the machine proves each
    # outcome has a row. The rows out of publish_failed are fired by the outbox relay with
    # the outcome of its own attempt (a RelayOutcome).
    transitions=[
        (F.RECEIVED, UserStatusUpdated, F.STATUS_UPDATED),
        (F.RECEIVED, UserNotFound, F.UPDATE_FAILED),
        (F.RECEIVED, IllegalStatusChange, F.UPDATE_FAILED),
        (F.RECEIVED, ConcurrentUpdate, F.UPDATE_FAILED),
        (F.RECEIVED, StorageError, F.UPDATE_FAILED),
        (F.STATUS_UPDATED, Published, F.PUBLISHED),
        (F.STATUS_UPDATED, PublishFailed, F.PUBLISH_FAILED),
        (F.PUBLISH_FAILED, Published, F.PUBLISHED),
        (F.PUBLISH_FAILED, PublishFailed, F.PUBLISH_FAILED),
        (F.PUBLISH_FAILED, DeadLettered, F.DEAD_LETTERED),
        # Not final: the event goes back to pending and the run back to the relay.
        (F.DEAD_LETTERED, Redriven, F.PUBLISH_FAILED),
    ],
)
"""The flow: `fsm check userstatus.flow:machine`, `fsm diagram userstatus.flow:machine`."""
