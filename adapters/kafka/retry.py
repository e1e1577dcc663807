"""Bounded retries around a Publisher (tenacity) under an fsm.retry.RetryPolicy."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

import tenacity

from fsm.outbox import OutboxMessage, Publisher, PublishError
from fsm.retry import RetryPolicy as RetryPolicy  # re-exported: it lived here first

log = logging.getLogger(__name__)


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

        def gives_up(state: tenacity.RetryCallState) -> bool:
            elapsed = self.clock() - started
            return policy.gives_up(state.attempt_number, elapsed, state.upcoming_sleep)

        retrying = tenacity.Retrying(
            stop=gives_up,
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
