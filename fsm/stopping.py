"""Stopping a long-lived loop (the outbox relay, the worker) cleanly: by a call or a signal."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Generic, Protocol, Self, TypeVar

log = logging.getLogger(__name__)


class Report(Protocol):
    """What a loop did in some rounds, counted (a relay's, a worker's)."""

    def add(self, other: Self) -> None:
        """Add another report's counts to this one."""
        ...

    def summary(self) -> str:
        """The counts in one line."""
        ...


R = TypeVar("R", bound=Report)


class Stoppable:
    """`stop()`, or SIGTERM and SIGINT once `install_signal_handlers()` ran, lets the item in
    hand finish; the loop checks `stopping` between items and sleeps through `wait`, which
    a stop cuts short. A subclass calls `Stoppable.__init__` and says for the log what it
    is (`KIND`), its `name`, and what it works on (`ITEM`)."""

    KIND = "loop"
    ITEM = "item"
    """What the loop works on, one at a time: an event, a run."""

    @property
    def name(self) -> str:
        """This loop's name in the log lines."""
        raise NotImplementedError

    def __init__(self) -> None:
        self._stop = threading.Event()

    def wait(self, seconds: float) -> None:
        """Sleep `seconds`, or less if stop() is called meanwhile."""
        self._stop.wait(seconds)

    @property
    def stopping(self) -> bool:
        """True once stop() was called."""
        return self._stop.is_set()

    def stop(self) -> None:
        """Finish the item in hand, then return from run()."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT (call from the main thread)."""

        def handler(signum: int, frame: object) -> None:
            self._signalled(signum)

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _signalled(self, signum: int) -> None:
        """A stop signal arrived: say so, and stop."""
        log.info(
            "%s %s: signal %s, stopping after the %s in hand",
            self.KIND,
            self.name,
            signum,
            self.ITEM,
        )
        self.stop()


class Tally(Generic[R]):
    """A loop's reports added up, in `total`; every `interval` seconds (on the loop's clock)
    the reports since the last such line are logged at INFO in one line, through `log`."""

    def __init__(
        self,
        loop: Stoppable,
        new: Callable[[], R],
        interval: float,
        now: datetime,
        log: logging.Logger = log,
    ) -> None:
        self.total = new()
        self._log = log
        self._loop = loop
        self._new = new
        self._interval = interval
        self._recent = new()
        self._since = now

    def add(self, report: R, now: datetime) -> None:
        """Count `report`; log the summary line if `interval` has passed since the last."""
        self.total.add(report)
        self._recent.add(report)
        seconds = (now - self._since).total_seconds()
        if seconds >= self._interval:
            loop, recent = self._loop, self._recent.summary()
            self._log.info("%s %s: %s (last %.0f s)", loop.KIND, loop.name, recent, seconds)
            self._recent, self._since = self._new(), now
