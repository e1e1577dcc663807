"""LoopLag: a ticker task that measures how late the event loop runs it (the loop's lag)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    """Wakes every `interval` seconds and records how much later than asked it woke.

    A loop that some call blocks (a sync driver, a blocking send) wakes it late by as long
    as the call took: `max_ms` is the worst seen since `reset`.
    """

    def __init__(
        self, interval: float = 0.01, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self.max_ms = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start ticking in the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._tick(), name="loop-lag")

    async def stop(self) -> None:
        """Stop ticking."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def reset(self) -> dict[str, float]:
        """What was measured since the last reset (max_ms, ticks); then start over."""
        seen = {"max_ms": round(self.max_ms, 2), "ticks": self.ticks}
        self.max_ms, self.ticks = 0.0, 0
        return seen

    async def _tick(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.interval)
            late = (self.clock() - asked - self.interval) * 1000
            self.max_ms = max(self.max_ms, late)
            self.ticks += 1
