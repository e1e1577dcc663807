"""Small example machines bundled for the quick start, the CLI and the documentation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from fsm.definition import Machine
from fsm.runtime import Run
from fsm.table import State


def ok(run: Run[str]) -> bool:
    """The guard of ping's way out: the context's `ok` flag, true unless set otherwise."""
    return bool(run.context.get("ok", True))


ping: Machine[str] = Machine(
    "ping",
    states=[State("idle", initial=True), State("busy"), State("done", final=True)],
    transitions=[
        ("idle", "start", "busy"),
        ("busy", "pause", "idle"),
        ("busy", "finish", "done", ok),
    ],
)
"""The two-state ping-pong of the README, with a guarded way out."""


@dataclass(frozen=True)
class Updated:
    """The user's status was changed."""


@dataclass(frozen=True)
class UserNotFound:
    """No user has that id."""

    user_id: int


def update_status(context: dict[str, Any]) -> Updated | UserNotFound:
    """Change the status of a user held in the context (a stand-in for a real repository)."""
    users: dict[str, str] = context.setdefault("users", {"1": "active"})
    user_id = str(context.get("user_id", 1))
    if user_id not in users:
        return UserNotFound(int(user_id))
    users[user_id] = context.get("new_status", "suspended")
    return Updated()


update: Machine[str] = Machine(
    "update",
    states=[
        State("received", initial=True, action=update_status),
        State("updated", final=True),
        State("failed", final=True, failure=True),
    ],
    transitions=[
        ("received", Updated, "updated"),
        ("received", UserNotFound, "failed"),
    ],
)
"""An action whose closed family of outcomes picks the next state by itself."""


hold: Machine[str] = Machine(
    "hold",
    states=[
        State(
            "authorized",
            initial=True,
            after=(timedelta(days=7), "expire"),
            description="funds held; capture them within 7 days",
        ),
        State("captured", final=True),
        State("voided", final=True, failure=True, description="never captured: released"),
    ],
    transitions=[
        ("authorized", "capture", "captured"),
        ("authorized", "expire", "voided"),
        ("authorized", "void", "voided"),
    ],
    cancel="void",
)
"""A waiting state with a timeout: an authorization not captured within 7 days is voided
(`fsm worker` sends "expire" when it is due), or at once by an operator (`fsm runs cancel`
sends "void", the machine's cancel trigger)."""


@dataclass(frozen=True)
class Authorized:
    """The card issuer reserved the amount."""


@dataclass(frozen=True)
class Declined:
    """The card issuer refused."""


@dataclass(frozen=True)
class Captured:
    """The gateway took the money."""


@dataclass(frozen=True)
class CaptureFailed:
    """The gateway did not answer or refused for now; a retry may succeed."""


class PaymentSteps(Protocol):
    """What a payment's actions call: a card gateway, bound to each run (`steps=`)."""

    def authorize(self, context: dict[str, Any]) -> Authorized | Declined:
        """Reserve the amount on the card."""
        ...

    def capture(self, context: dict[str, Any], key: str) -> Captured | CaptureFailed:
        """Take the reserved amount; `key` makes a repeated call apply once."""
        ...


def attempts_left(run: Run[str]) -> bool:
    """The guard of the retry: fewer captures tried (`attempts`) than allowed (3)."""
    return int(run.context.get("attempts", 0)) < 3


payment: Machine[str, PaymentSteps] = Machine(
    "payment",
    steps=PaymentSteps,
    states=[
        State("created", initial=True, action=PaymentSteps.authorize),
        State("authorized", action=PaymentSteps.capture, external=True),
        State("capture_failed", description="waits for a retry"),
        State("captured", final=True),
        State("declined", final=True, failure=True),
        State("voided", final=True, failure=True),
    ],
    transitions=[
        ("created", Authorized, "authorized"),
        ("created", Declined, "declined"),
        ("authorized", Captured, "captured"),
        ("authorized", CaptureFailed, "capture_failed"),
        ("capture_failed", "retry", "authorized", attempts_left),
        ("capture_failed", "retry", "voided"),
    ],
)
"""A card payment: authorize, then capture through a gateway (an external call), retried
while attempts are left, else voided. The guarded retry is what generated paths must get
through both ways."""
