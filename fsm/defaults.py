"""The defaults of what callers inject: the clock (`clock=`) and fresh ids (`ids=`, run ids)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def utc_now() -> datetime:
    """The default clock: the current time, timezone-aware UTC."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh id (a run's, an event's): 32 hex digits of a random UUID."""
    return uuid.uuid4().hex
