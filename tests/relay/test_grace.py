"""How long relays leave a new event to its orchestrator: the immediate publish's worst case."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import create_engine

from adapters.kafka.config import KafkaConfig
from adapters.kafka.retry import RetriesExhausted, RetryingPublisher, RetryPolicy
from adapters.memory import FakePublisher
from fsm.outbox import OutboxMessage, PublishError
from fsm.retry import STEP_RETRY
from userstatus.app import GRACE_MARGIN, FlowApp, immediate_kafka, publish_grace

STEPS = STEP_RETRY.deadline
"""The time recording the publish step may take, tried again."""


def kafka(max_block_ms: int, delivery_timeout_ms: int) -> KafkaConfig:
    """Kafka settings with these two bounds."""
    return KafkaConfig(max_block_ms=max_block_ms, delivery_timeout_ms=delivery_timeout_ms)


class TestPublishGrace:
    def test_attempts_and_waits_when_the_deadline_is_far(self) -> None:
        """3 attempts of 2 s plus the longest waits (0.2 and 0.4 s, each 20% more at most),
        plus the margin."""
        policy = RetryPolicy(attempts=3, initial_backoff=0.2, jitter=0.2, deadline=60)
        grace = publish_grace(policy, kafka(500, 1_500))
        assert grace == timedelta(seconds=3 * 2.0 + 0.24 + 0.48 + STEPS + GRACE_MARGIN)

    def test_the_deadline_bounds_many_attempts(self) -> None:
        """No attempt starts past the deadline: deadline plus one attempt, plus the margin."""
        policy = RetryPolicy(attempts=10, deadline=15)
        assert publish_grace(policy, kafka(5_000, 10_000)) == timedelta(
            seconds=15 + 15 + STEPS + GRACE_MARGIN
        )

    def test_max_block_counts(self) -> None:
        """A longer max_block_ms lengthens the grace (the reviewer's case: it was ignored)."""
        policy = RetryPolicy(attempts=1)
        short = publish_grace(policy, kafka(1_000, 10_000))
        long = publish_grace(policy, kafka(30_000, 10_000))
        assert long - short == timedelta(seconds=29)

    @pytest.mark.parametrize(
        ("attempts", "deadline", "max_block_ms", "delivery_ms"),
        [(1, 15, 5_000, 10_000), (3, 15, 5_000, 10_000), (3, 60, 500, 1_000), (8, 4, 1_000, 500)],
    )
    def test_covers_the_slowest_immediate_publish(
        self, attempts: int, deadline: float, max_block_ms: int, delivery_ms: int
    ) -> None:
        """Every attempt at its bound, every wait at its longest: still within the grace."""
        policy = RetryPolicy(attempts=attempts, deadline=deadline)
        config = kafka(max_block_ms, delivery_ms)
        now = [0.0]

        class Slowest:
            def publish(self, message: OutboxMessage) -> None:
                now[0] += config.attempt_seconds
                raise PublishError("timed out")

        def sleep(seconds: float) -> None:
            now[0] += seconds

        retrying = RetryingPublisher(
            Slowest(), policy, sleep=sleep, clock=lambda: now[0], rand=lambda: 1.0
        )
        with pytest.raises(RetriesExhausted):
            retrying.publish(OutboxMessage("e1", "UserUpdateTopic", "1", b"{}"))
        grace = publish_grace(policy, config).total_seconds()
        assert now[0] <= grace - GRACE_MARGIN - STEPS + 1e-6  # a timedelta holds microseconds

    def test_the_app_uses_it(self) -> None:
        """FlowApp's orchestrators hold new events for publish_grace() of their Kafka bounds."""
        policy = RetryPolicy(attempts=2, deadline=5)
        config = kafka(4_000, 6_000)
        app = FlowApp(create_engine("sqlite://"), config, retry=policy)
        bounded = immediate_kafka(config, policy)
        assert app.orchestrator(FakePublisher()).publish_grace == publish_grace(policy, bounded)
        app.close()


class TestImmediatePublishBounds:
    def test_each_kafka_bound_is_cut_to_the_deadline(self) -> None:
        """At the default one-second deadline an attempt ends within two seconds."""
        bounded = immediate_kafka(kafka(5_000, 10_000), RetryPolicy())
        assert (bounded.max_block_ms, bounded.delivery_timeout_ms) == (1_000, 1_000)
        assert bounded.request_timeout_ms == 1_000
        assert bounded.attempt_seconds == 2.0

    def test_shorter_bounds_are_kept(self) -> None:
        """A bound already below the deadline stays as it was."""
        bounded = immediate_kafka(kafka(300, 700), RetryPolicy(deadline=5))
        assert (bounded.max_block_ms, bounded.delivery_timeout_ms) == (300, 700)

    def test_the_default_grace_is_seconds_not_minutes(self) -> None:
        """The default policy holds new events from relays for under twenty seconds."""
        policy = RetryPolicy()
        grace = publish_grace(policy, immediate_kafka(KafkaConfig(), policy))
        assert grace == timedelta(seconds=1 + 2 + STEPS + GRACE_MARGIN) < timedelta(seconds=20)
