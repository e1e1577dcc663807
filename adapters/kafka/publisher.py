"""KafkaPublisher: the Publisher port on kafka-python, with a producer that heals itself."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from adapters.kafka.config import KafkaConfig
from fsm.outbox import OutboxMessage, PublishError

log = logging.getLogger(__name__)


class NotStored(PublishError):
    """The broker answered without saying where it stored the record: not a publish."""


class KafkaPublisher:
    """Sends one message and waits until the broker reports where it stored it.

    A publish counts only with record metadata naming a stored offset (>= 0). kafka-python
    reports a send the broker answered with DUPLICATE_SEQUENCE_NUMBER as a success with
    offset -1: after a broker restart hands producer ids out again, an old producer can share
    its id with a new one and such a "success" stored nothing. Any failed or unstored send
    closes the producer and the next publish creates a new one: an idempotent producer
    whose broker forgot it (restart, expired producer state) cannot be trusted again.
    """

    def __init__(
        self, config: KafkaConfig, *, producer_factory: Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self._factory = producer_factory
        self._producer: Any = None
        self._lock = threading.Lock()
        self.producers_created = 0

    def _make(self) -> Any:
        factory = self._factory
        if factory is None:
            from kafka import KafkaProducer

            factory = KafkaProducer
        producer = factory(**self.config.producer_settings())
        self.producers_created += 1
        return producer

    def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged; PublishError otherwise (within the bounds)."""
        (error,) = self.publish_batch([message])
        if error is not None:
            raise error

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """Send every message, then wait for each acknowledgement (fsm.outbox.BatchPublisher):
        for each, None once stored, else its PublishError (NotStored for offset -1)."""
        with self._lock:
            waiting: list[Any] = []
            try:
                if self._producer is None:
                    self._producer = self._make()
                for message in messages:
                    waiting.append(
                        self._producer.send(
                            message.topic,
                            key=message.key.encode(),
                            value=message.value,
                            headers=list(message.headers),
                        )
                    )
            except Exception as error:  # the rest were not sent: they failed as this one
                waiting += [error] * (len(messages) - len(waiting))
            results = [self._outcome(m, f) for m, f in zip(messages, waiting, strict=True)]
            if any(result is not None for result in results):
                self._reset()
            return results

    def _outcome(self, message: OutboxMessage, sent: Any) -> Exception | None:
        try:
            if isinstance(sent, Exception):
                raise sent
            # delivery_timeout_ms bounds the wait in the producer; this is a safety net.
            metadata = sent.get(timeout=self.config.delivery_timeout_ms / 1000 + 5)
            offset = getattr(metadata, "offset", None)
            if not isinstance(offset, int) or offset < 0:
                raise NotStored(
                    f"the broker acknowledged without a stored offset (offset {offset!r}); "
                    "its producer state is gone (a restarted broker?)"
                )
        except Exception as error:
            kind = type(error) if isinstance(error, NotStored) else PublishError
            # Not chained: kafka-python's own message may repeat a secret setting.
            return kind(
                f"publishing event {message.event_id} to {message.topic} failed: "
                + self.config.scrub(_describe(error))
            )
        return None

    def _reset(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as error:  # closing a broken producer may fail too; it is gone
                log.debug("closing a failed producer raised %r", error)

    def close(self) -> None:
        """Close the producer (a later publish creates a new one).

        Nothing is left to flush: publish() returns only once a message is acknowledged.
        """
        with self._lock:
            self._reset()


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
