"""Stopping a long-lived loop (the outbox relay, the worker) cleanly: by a call or a signal."""

from __future__ import annotations

import logging
import signal
import threading

log = logging.getLogger(__name__)


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
            log.info(
                "%s %s: signal %s, stopping after the %s in hand",
                self.KIND,
                self.name,
                signum,
                self.ITEM,
            )
            self.stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
