"""A payment machine as an earlier release defined it; payments_new is what it became."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fsm import Machine, State


@dataclass(frozen=True)
class Captured:
    """The gateway took the money (moved to payments_new in the next release)."""

    amount: Decimal


@dataclass(frozen=True)
class Failed:
    """The gateway refused (renamed CaptureFailed, in payments_new, in the next release)."""

    reason: str


def capture(context: dict[str, Any]) -> Captured | Failed:
    """Declines when the context says so."""
    if context.get("decline"):
        return Failed(context["decline"])
    return Captured(Decimal(context["amount"]))


machine: Machine[str] = Machine(
    "payment",
    states=[
        State("capturing", initial=True, action=capture),
        State("captured"),
        State("on_hold"),  # gone in the next release
        State("capture_failed"),  # renamed payment_failed in the next release
        State("settled", final=True),
        State("abandoned", final=True, failure=True),
    ],
    transitions=[
        ("capturing", Captured, "captured"),
        ("capturing", Failed, "capture_failed"),
        ("captured", "settle", "settled"),
        ("captured", "hold", "on_hold"),
        ("on_hold", "release", "captured"),
        ("capture_failed", "retry", "capturing"),
        ("capture_failed", "give_up", "abandoned"),
    ],
)
