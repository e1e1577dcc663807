"""KafkaPublisher and AsyncKafkaPublisher: the Publisher ports on kafka-python, with a producer
that heals itself."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from adapters.kafka.config import KafkaConfig
from fsm.outbox import OutboxMessage, PublishError

log = logging.getLogger(__name__)


class NotStored(PublishError):
    """The broker answered without saying where it stored the record: not a publish."""


class _Producer:
    """The producer rules both publishers keep: one producer, made on first use, judged by
    the record metadata, closed and re-created after any failed or unstored send."""

    def __init__(
        self, config: KafkaConfig, *, producer_factory: Callable[..., Any] | None = None
    ) -> None:
        self.config = config
        self._factory = producer_factory
        self._producer: Any = None
        self._lock = threading.RLock()
        self._unreachable: tuple[float, Exception] | None = None
        self.producers_created = 0

    def _make(self) -> Any:
        """A new producer; while one could not be made (no broker answered) less than
        max_block_ms ago, that error again at once, so that publishes waiting for the
        producer fail one after another in an outage, not one max_block_ms each."""
        failed = self._unreachable
        if failed is not None and time.monotonic() - failed[0] < self.config.max_block_ms / 1000:
            raise failed[1]
        try:
            producer = self._new_producer()
        except Exception as error:
            self._unreachable = (time.monotonic(), error)
            raise
        self._unreachable = None
        return producer

    def _ready(self) -> Any:
        """The producer, made first if there is none."""
        with self._lock:
            if self._producer is None:
                self._producer = self._make()
            return self._producer

    def _new_producer(self) -> Any:
        factory = self._factory
        if factory is None:
            from kafka import KafkaProducer

            factory = KafkaProducer
        producer = factory(**self.config.producer_settings())
        self.producers_created += 1
        return producer

    def _send(self, messages: Sequence[OutboxMessage]) -> tuple[Any, list[Any]]:
        """Send every message (making the producer first if there is none): the producer and,
        per message, its kafka-python future or the error that kept it from being sent. May
        block up to max_block_ms (metadata) and bootstrap_timeout_ms (a new producer)."""
        with self._lock:
            sent: list[Any] = []
            try:
                producer = self._ready()
                for message in messages:
                    sent.append(
                        producer.send(
                            message.topic,
                            key=message.key.encode(),
                            value=message.value,
                            headers=list(message.headers),
                        )
                    )
            except Exception as error:  # the rest were not sent: they failed as this one
                sent += [error] * (len(messages) - len(sent))
            return self._producer, sent

    @property
    def _wait_seconds(self) -> float:
        """How long to wait for one acknowledgement: delivery_timeout_ms bounds it in the
        producer; this is a safety net."""
        return self.config.delivery_timeout_ms / 1000 + 5

    def _judge(self, message: OutboxMessage, result: object) -> Exception | None:
        """None if `result` (record metadata, or the error the send ended with) says the
        broker stored the message; else its PublishError (NotStored for offset -1)."""
        try:
            if isinstance(result, BaseException):
                raise result
            offset = getattr(result, "offset", None)
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

    def _reset(self, failed: Any = None) -> None:
        """Close the producer; with `failed`, only if it is still that one (a concurrent
        publish may have replaced it already)."""
        with self._lock:
            if failed is not None and self._producer is not failed:
                return
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception as error:  # closing a broken producer may fail too; it is gone
                log.debug("closing a failed producer raised %r", error)


class KafkaPublisher(_Producer):
    """Sends one message and waits until the broker reports where it stored it.

    A publish counts only with record metadata naming a stored offset (>= 0). kafka-python
    reports a send the broker answered with DUPLICATE_SEQUENCE_NUMBER as a success with
    offset -1: after a broker restart hands producer ids out again, an old producer can share
    its id with a new one and such a "success" stored nothing. Any failed or unstored send
    closes the producer and the next publish creates a new one: an idempotent producer
    whose broker forgot it (restart, expired producer state) cannot be trusted again.
    """

    def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged; PublishError otherwise (within the bounds)."""
        (error,) = self.publish_batch([message])
        if error is not None:
            raise error

    def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """Send every message, then wait for each acknowledgement (fsm.outbox.BatchPublisher):
        for each, None once stored, else its PublishError (NotStored for offset -1)."""
        with self._lock:
            producer, sent = self._send(messages)
            results = [self._judge(m, self._wait(s)) for m, s in zip(messages, sent, strict=True)]
            if any(result is not None for result in results):
                self._reset(producer)
            return results

    def _wait(self, sent: Any) -> object:
        if isinstance(sent, Exception):
            return sent
        try:
            return sent.get(timeout=self._wait_seconds)
        except Exception as error:
            return error

    def close(self) -> None:
        """Close the producer (a later publish creates a new one).

        Nothing is left to flush: publish() returns only once a message is acknowledged.
        """
        self._reset()


class AsyncKafkaPublisher(_Producer):
    """KafkaPublisher for asyncio (fsm.outbox.AsyncPublisher), with the same rules, never
    blocking the event loop.

    kafka-python's calls that may block (making a producer, a send waiting for metadata,
    closing) run in a worker thread (`asyncio.to_thread`); each acknowledgement comes back
    through the kafka future's callbacks, handed to the loop by `call_soon_threadsafe`.
    Publishes of several tasks share the producer and are in flight together; messages of
    one key keep the order in which their sends were made. One instance serves one loop.
    """

    async def connect(self) -> bool:
        """Make the producer now, in a worker thread, rather than at the first publish: its
        bootstrap is about 0.1 s of Python that would compete with the loop for the GIL while
        the first requests are served. False, logged, when no broker answered: the first
        publish tries again."""
        try:
            await asyncio.to_thread(self._ready)
        except Exception as error:
            log.warning(
                "no Kafka broker answered yet (%s); the first publish tries again",
                self.config.scrub(_describe(error)),
            )
            return False
        return True

    async def publish(self, message: OutboxMessage) -> None:
        """Return once the broker acknowledged; PublishError otherwise (within the bounds)."""
        (error,) = await self.publish_batch([message])
        if error is not None:
            raise error

    async def publish_batch(self, messages: Sequence[OutboxMessage]) -> list[Exception | None]:
        """See KafkaPublisher.publish_batch."""
        producer, sent = await asyncio.to_thread(self._send, messages)
        answers = await asyncio.gather(*(self._acknowledged(s) for s in sent))
        results = [self._judge(m, a) for m, a in zip(messages, answers, strict=True)]
        if any(result is not None for result in results):
            await asyncio.to_thread(self._reset, producer)
        return results

    async def _acknowledged(self, sent: Any) -> object:
        """The record metadata of a send, or the error it ended with, without blocking."""
        if isinstance(sent, Exception):
            return sent
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[object] = loop.create_future()

        def arrived(value: object) -> None:  # in kafka-python's sender thread
            if not loop.is_closed():  # a publish abandoned with its loop: nobody waits
                loop.call_soon_threadsafe(_resolve, answer, value)

        sent.add_callback(arrived)
        sent.add_errback(arrived)
        try:
            return await asyncio.wait_for(answer, self._wait_seconds)
        except TimeoutError as error:
            return error

    async def close(self) -> None:
        """Close the producer in a worker thread (a later publish creates a new one)."""
        await asyncio.to_thread(self._reset)


def _resolve(answer: asyncio.Future[object], value: object) -> None:
    if not answer.done():  # it may have timed out meanwhile
        answer.set_result(value)


def _describe(error: BaseException) -> str:
    text = str(error)
    name = type(error).__name__
    return text if text.startswith(name) else f"{name}: {text}"
