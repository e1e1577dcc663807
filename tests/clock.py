"""A clock the tests move by hand, for every test that injects `clock=` or `sleep=`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += timedelta(seconds=seconds)

    def sleep(self, seconds: float) -> None:
        """A sleep that only moves the clock."""
        self.advance(seconds)
