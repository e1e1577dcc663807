"""A machine the size of the reference flow (user status update), for layout and text tests."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from fsm import Machine, Run, State


class Step(Enum):
    """The flow's states, as Enum members, the way a service would declare them."""

    RECEIVED = "received"
    COMMITTED = "committed"
    PUBLISHED = "published"
    PUBLISH_FAILED = "publish_failed"
    RETRYING = "retrying"
    DEAD_LETTERED = "dead_lettered"
    NOT_FOUND = "not_found"
    ILLEGAL_CHANGE = "illegal_change"


@dataclass(frozen=True)
class StatusUpdated:
    """The change committed together with its outbox event."""


@dataclass(frozen=True)
class UserNotFound:
    """No such user."""


@dataclass(frozen=True)
class IllegalStatusChange:
    """The user lifecycle forbids the change."""


@dataclass(frozen=True)
class Published:
    """The broker acknowledged the event."""


@dataclass(frozen=True)
class PublishError:
    """The broker did not acknowledge in time."""


def update_user(context: dict[str, Any]) -> StatusUpdated | UserNotFound | IllegalStatusChange:
    """Stand-in for the status manager: the context says what happens."""
    case = context.get("case")
    if case == "missing":
        return UserNotFound()
    if case == "illegal":
        return IllegalStatusChange()
    return StatusUpdated()


def publish(context: dict[str, Any]) -> Published | PublishError:
    """Stand-in for the publisher: fails as many times as the context asks."""
    failures = context.get("failures", 0)
    context["failures"] = failures - 1
    return PublishError() if failures > 0 else Published()


def attempts_left(run: Run[Step]) -> bool:
    """The relay may try again."""
    return int(run.context.get("attempts", 3)) > 0


S = Step
flow: Machine[Step] = Machine(
    "user_status_update",
    states=[
        State(S.RECEIVED, initial=True, action=update_user, description="a status change asked"),
        State(S.COMMITTED, action=publish),
        State(S.PUBLISHED, final=True),
        State(S.PUBLISH_FAILED, failure=True, description="committed, event not yet published"),
        State(S.RETRYING, action=publish),
        State(S.DEAD_LETTERED, final=True, failure=True),
        State(S.NOT_FOUND, final=True, failure=True),
        State(S.ILLEGAL_CHANGE, final=True, failure=True),
    ],
    transitions=[
        (S.RECEIVED, StatusUpdated, S.COMMITTED),
        (S.RECEIVED, UserNotFound, S.NOT_FOUND),
        (S.RECEIVED, IllegalStatusChange, S.ILLEGAL_CHANGE),
        (S.COMMITTED, Published, S.PUBLISHED),
        (S.COMMITTED, PublishError, S.PUBLISH_FAILED),
        (S.PUBLISH_FAILED, "relay", S.RETRYING, attempts_left),
        (S.PUBLISH_FAILED, "relay", S.DEAD_LETTERED),
        (S.RETRYING, Published, S.PUBLISHED),
        (S.RETRYING, PublishError, S.PUBLISH_FAILED),
    ],
)
"""Eight states, nine rows, a guarded pair, a retry loop and four failure states."""
