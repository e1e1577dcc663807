"""Kafka adapters: the publisher, its retry policy, an audit consumer and a local broker."""

from adapters.kafka.config import KafkaConfig, KafkaConfigError
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.retry import RetriesExhausted, RetryingPublisher, RetryPolicy

__all__ = [
    "KafkaConfig",
    "KafkaConfigError",
    "KafkaPublisher",
    "RetriesExhausted",
    "RetryPolicy",
    "RetryingPublisher",
]
