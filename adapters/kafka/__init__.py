"""Kafka adapters: the publishers (sync, asyncio), retries, an audit consumer, a local broker."""

from adapters.kafka.config import KafkaConfig, KafkaConfigError
from adapters.kafka.publisher import AsyncKafkaPublisher, KafkaPublisher
from adapters.kafka.retry import (
    AsyncRetryingPublisher,
    RetriesExhausted,
    RetryingPublisher,
    RetryPolicy,
)

__all__ = [
    "AsyncKafkaPublisher",
    "AsyncRetryingPublisher",
    "KafkaConfig",
    "KafkaConfigError",
    "KafkaPublisher",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryingPublisher",
]
