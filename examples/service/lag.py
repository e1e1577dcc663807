"""LoopLag: a ticker task that measures how late the event loop runs it (the loop's lag)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLag:
    """Wakes every `interval` seconds and records how much later than asked it woke.

    A loop that some call blocks (a sync driver, a blocking send) wakes it late by as long
    as the call took; so does a loop kept busy by many ready tasks, or a process the
    operating system did not run (an oversubscribed machine). `reset` reports the worst
    lateness since the last reset, the 99th percentile and how many ticks were 50 ms late.
    """

    def __init__(
        self, interval: float = 0.01, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._late: list[float] = []
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
        """What was measured since the last reset (max_ms, p99_ms, over_50ms, ticks); then
        start over."""
        late, self._late = sorted(self._late), []
        if not late:
            return {"max_ms": 0.0, "p99_ms": 0.0, "over_50ms": 0, "ticks": 0}
        return {
            "max_ms": round(late[-1], 2),
            "p99_ms": round(late[int(len(late) * 0.99)], 2),
            "over_50ms": sum(1 for ms in late if ms >= 50),
            "ticks": len(late),
        }

    async def _tick(self) -> None:
        while True:
            asked = self.clock()
            await asyncio.sleep(self.interval)
            self._late.append((self.clock() - asked - self.interval) * 1000)
