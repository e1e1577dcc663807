"""Small machines shared by the toolkit's tests: an orchestrator-like flow with outcomes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fsm import Machine, State


@dataclass(frozen=True)
class Saved:
    """The record was saved."""


@dataclass(frozen=True)
class Rejected:
    """The change was refused."""

    reason: str


@dataclass(frozen=True)
class Sent:
    """The event was published."""


class PublishDown(Exception):
    """The broker did not answer."""


calls: list[str] = []
"""What the real actions did; the stepper must never add to it."""


def save(context: dict[str, Any]) -> Saved | Rejected:
    """A stand-in for a repository call."""
    calls.append("save")
    return Saved()


def publish(context: dict[str, Any]) -> Sent | PublishFailed:
    """A stand-in for a publisher call."""
    calls.append("publish")
    return Sent()


@dataclass(frozen=True)
class PublishFailed:
    """The publish failed; the outbox keeps the event."""


def can_retry(run: Any) -> bool:
    """Retry while attempts are left."""
    return bool(run.context.get("attempts", 0) < 3)


flow: Machine[str] = Machine(
    "flow",
    states=[
        State("received", initial=True, action=save),
        State("saved", action=publish),
        State("publish_failed"),
        State("published", final=True),
        State("rejected", final=True, failure=True),
        State("dead", final=True, failure=True),
    ],
    transitions=[
        ("received", Saved, "saved"),
        ("received", Rejected, "rejected"),
        ("saved", Sent, "published"),
        ("saved", PublishFailed, "publish_failed"),
        ("publish_failed", "retry", "saved", can_retry),
        ("publish_failed", "retry", "dead"),
    ],
)
"""Save, then publish; a failed publish waits for retries until it gives up."""
