"""The payment machine of payments_old one release later: a state renamed, one removed, an
outcome class moved here and another moved and renamed; aliases keep the stored runs."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fsm import Machine, State

OLD = "tests.persistence.payments_old"
"""Where the outcome classes were defined before."""


@dataclass(frozen=True)
class Captured:
    """The gateway took the money (was payments_old.Captured)."""

    amount: Decimal


@dataclass(frozen=True)
class CaptureFailed:
    """The gateway refused (was payments_old.Failed)."""

    reason: str


def capture(context: dict[str, Any]) -> Captured | CaptureFailed:
    """Declines when the context says so."""
    if context.get("decline"):
        return CaptureFailed(context["decline"])
    return Captured(Decimal(context["amount"]))


STATE_ALIASES = ("capture_failed",)
"""The former name of payment_failed."""

ALIASES: Mapping[str, Hashable] = {
    f"{OLD}.Captured": Captured,  # moved: only the type tag changed
    f"{OLD}.Failed": CaptureFailed,  # moved and renamed: the type tag ...
    "Failed": CaptureFailed,  # ... and the trigger label in the history
}


def build(
    state_aliases: tuple[str, ...] = STATE_ALIASES, aliases: Mapping[str, Hashable] = ALIASES
) -> Machine[str]:
    """The new definition, with the given former names (all of them by default)."""
    return Machine(
        "payment",
        states=[
            State("capturing", initial=True, action=capture),
            State("captured"),
            State("payment_failed", aliases=state_aliases),
            State("settled", final=True),
            State("abandoned", final=True, failure=True),
        ],
        transitions=[
            ("capturing", Captured, "captured"),
            ("capturing", CaptureFailed, "payment_failed"),
            ("captured", "settle", "settled"),
            ("payment_failed", "retry", "capturing"),
            ("payment_failed", "give_up", "abandoned"),
        ],
        aliases=aliases,
    )


machine = build()
unaliased = build((), {})
"""The same renames made without aliases: runs stored before cannot load."""
