"""Bounded retries around a Publisher, sync or async (tenacity), under an fsm.retry.RetryPolicy."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tenacity

from fsm.outbox import AsyncPublisher, OutboxMessage, Publisher, PublishError
from fsm.retry import RetryPolicy as RetryPolicy  # re-exported: it lived here first

log = logging.getLogger(__name__)


class RetriesExhausted(PublishError):
    """Every attempt allowed by the policy failed; `attempts` says how many were made."""

    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class _Retries:
    """The policy, clock and randomness of a retrying publisher, as tenacity's settings."""

    def __init__(
        self,
        policy: RetryPolicy | None,
        clock: Callable[[], float],
        rand: Callable[[], float],
    ) -> None:
        self.policy = policy or RetryPolicy()
        self.clock = clock
        self.rand = rand

    def _rules(self, message: OutboxMessage, sleep: object) -> dict[str, Any]:
        """tenacity's settings for one publish: the policy's stop and wait, the log, `sleep`;
        the deadline counts from now."""
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

        def gives_up(state: tenacity.RetryCallState) -> bool:
            elapsed = self.clock() - started
            return policy.gives_up(state.attempt_number, elapsed, state.upcoming_sleep)

        return {
            "stop": gives_up,
            "wait": lambda state: policy.wait(state.attempt_number, self.rand),
            "retry": tenacity.retry_if_exception_type(PublishError),
            "sleep": sleep,
            "before_sleep": before_sleep,
            "reraise": True,
        }


class RetryingPublisher(_Retries):
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
        super().__init__(policy, clock, rand)
        self.publisher = publisher
        self.sleep = sleep

    def publish(self, message: OutboxMessage) -> None:
        """Publish, retrying PublishError; RetriesExhausted when the policy gives up."""
        attempts = 0
        try:
            for attempt in tenacity.Retrying(**self._rules(message, self.sleep)):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    self.publisher.publish(message)
        except PublishError as error:
            raise _exhausted(error, attempts) from error


class AsyncRetryingPublisher(_Retries):
    """RetryingPublisher for asyncio (an fsm.outbox.AsyncPublisher around another): the same
    policy and log; it waits with `sleep` (asyncio.sleep), so the loop runs meanwhile."""

    def __init__(
        self,
        publisher: AsyncPublisher,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(policy, clock, rand)
        self.publisher = publisher
        self.sleep = sleep

    async def publish(self, message: OutboxMessage) -> None:
        """Publish, retrying PublishError; RetriesExhausted when the policy gives up."""
        attempts = 0
        try:
            async for attempt in tenacity.AsyncRetrying(**self._rules(message, self.sleep)):
                with attempt:
                    attempts = attempt.retry_state.attempt_number
                    await self.publisher.publish(message)
        except PublishError as error:
            raise _exhausted(error, attempts) from error


def _exhausted(error: PublishError, attempts: int) -> RetriesExhausted:
    return RetriesExhausted(f"{error} (gave up after {attempts} attempt(s))", attempts)
