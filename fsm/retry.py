"""One retry policy (attempts, capped exponential backoff, jitter, a deadline) and its loop."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from fsm.drive import Steps, run_sync, settle

T = TypeVar("T")


def backoff(
    failed_attempts: int,
    *,
    initial: float,
    maximum: float,
    multiplier: float = 2.0,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after the `failed_attempts`-th failure: `initial`, times `multiplier` per
    failure after the first, capped at `maximum`, then spread by up to ± `jitter` (a fraction
    of the wait, 0 to 1) so that waiters do not retry in lockstep. The one backoff of the
    engine: the immediate publish, database steps and the relay all wait by it."""
    base = min(maximum, initial * multiplier ** max(0, failed_attempts - 1))
    return base * (1 - jitter + 2 * jitter * rand())


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to try again: used for publishing and for database steps."""

    attempts: int = 3
    initial_backoff: float = 0.2
    """Seconds before the second attempt; doubles each time."""
    max_backoff: float = 2.0
    jitter: float = 0.2
    """Each wait is spread by up to ± this fraction of itself (0 to 1), see `backoff`."""
    deadline: float = 1.0
    """No new attempt starts once this many seconds have passed (plus its wait)."""

    def __post_init__(self) -> None:
        problems = []
        if self.attempts < 1:
            problems.append(f"attempts must be at least 1, got {self.attempts!r}")
        for name in ("initial_backoff", "max_backoff", "jitter", "deadline"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)!r}")
        if not self.jitter <= 1:
            problems.append(f"jitter must be a fraction from 0 to 1, got {self.jitter!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def wait(self, failed_attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after `failed_attempts` failures: exponential, capped, jittered."""
        return backoff(
            failed_attempts,
            initial=self.initial_backoff,
            maximum=self.max_backoff,
            jitter=self.jitter,
            rand=rand,
        )

    def gives_up(self, failed_attempts: int, elapsed: float, upcoming_wait: float) -> bool:
        """True when no attempt may follow `failed_attempts` failures after `elapsed` s."""
        return failed_attempts >= self.attempts or elapsed + upcoming_wait > self.deadline


STEP_RETRY = RetryPolicy(attempts=4, initial_backoff=0.05, max_backoff=1.0, jitter=0.5, deadline=10)
"""Database steps: a lost connection or acknowledgement is usually over within a second."""


def retry(
    call: Callable[[int], T],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[Exception], bool],
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> T:
    """`call(attempt)` until it returns, an error `retry_on` refuses, or the policy gives up.

    The last error is raised as it is. `on_retry(attempt, error, wait)` is told before
    each wait. (`retry_steps` is the same loop for sync and async callers.)
    """
    steps = retry_steps(
        lambda attempt: settle(call(attempt)),
        policy,
        retry_on=retry_on,
        sleep=sleep,
        clock=clock,
        rand=rand,
        on_retry=on_retry,
    )
    return run_sync(steps)


def retry_steps(
    call: Callable[[int], Steps[T]],
    policy: RetryPolicy,
    *,
    retry_on: Callable[[Exception], bool],
    sleep: Callable[[float], object] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
    on_retry: Callable[[int, Exception, float], None] | None = None,
) -> Steps[T]:
    """`retry` as Steps (fsm.drive): `call(attempt)` is a computation, and `sleep` may
    return an awaitable (`asyncio.sleep`), awaited by an async driver."""
    started = clock()
    attempt = 1
    while True:
        try:
            return (yield from call(attempt))
        except Exception as error:
            wait = policy.wait(attempt, rand)
            if not retry_on(error) or policy.gives_up(attempt, clock() - started, wait):
                raise
            if on_retry is not None:
                on_retry(attempt, error, wait)
        yield from settle(sleep(wait))
        attempt += 1
