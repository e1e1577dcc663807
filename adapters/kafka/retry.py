"""Bounded retries around a Publisher (tenacity): attempts, backoff with jitter, a deadline."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import tenacity

from fsm.ports import OutboxMessage, Publisher, PublishError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the immediate publish after commit retries before giving up to the relay."""

    attempts: int = 3
    initial_backoff: float = 0.2
    """Seconds before the second attempt; doubles each time."""
    max_backoff: float = 2.0
    jitter: float = 0.2
    """Up to this many seconds added at random to each wait."""
    deadline: float = 15.0
    """No new attempt starts once this many seconds have passed (plus its wait)."""

    def __post_init__(self) -> None:
        problems = []
        if self.attempts < 1:
            problems.append(f"attempts must be at least 1, got {self.attempts!r}")
        for name in ("initial_backoff", "max_backoff", "jitter", "deadline"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must not be negative, got {getattr(self, name)!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def wait(self, failed_attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after `failed_attempts` failures: exponential, capped, jittered."""
        growth = 2.0 ** max(0, failed_attempts - 1)
        return min(self.max_backoff, self.initial_backoff * growth) + self.jitter * rand()


class RetriesExhausted(PublishError):
    """Every attempt allowed by the policy failed; `attempts` says how many were made."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class RetryingPublisher:
    """A Publisher that retries another one under a RetryPolicy.

    `sleep` and `clock` are injectable so tests never wait; the deadline is measured on
    `clock` and counts the waits, so one publish takes at most about
    `deadline` + one attempt's own bound (the producer's delivery timeout).
    """

    def __init__(
        self,
        publisher: Publisher,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.publisher = publisher
        self.policy = policy or RetryPolicy()
        self.sleep = sleep
        self.clock = clock
        self.rand = rand

    def publish(self, message: OutboxMessage) -> None:
        """Publish, retrying PublishError; RetriesExhausted when the policy gives up."""
        policy = self.policy
        started = self.clock()

        def before_sleep(state: tenacity.RetryCallState) -> None:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None else None
            log.warning(
                "event %s: attempt %d failed (%s); retrying in %.2f s",
                message.event_id,
                state.attempt_number,
                error,
                state.upcoming_sleep,
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(policy.attempts)
            | _PastDeadline(self.clock, started, policy.deadline),
            wait=lambda state: policy.wait(state.attempt_number, self.rand),
            retry=tenacity.retry_if_exception_type(PublishError),
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        attempts = 0
        try:
            for attempt in retrying:
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    self.publisher.publish(message)
        except PublishError as error:
            raise RetriesExhausted(
                f"{error} (gave up after {attempts} attempt(s))", attempts
            ) from error


class _PastDeadline(tenacity.stop.stop_base):
    """Stop when the next wait would end past the deadline (measured on an injected clock)."""

    def __init__(self, clock: Callable[[], float], started: float, deadline: float) -> None:
        self.clock = clock
        self.started = started
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self.clock() - self.started + retry_state.upcoming_sleep > self.deadline
