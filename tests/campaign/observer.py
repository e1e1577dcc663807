"""The campaign's independent consumer: confluent-kafka (librdkafka), not the producer's client.

It reads `UserUpdateTopic` continuously in a thread of its own and records every message
it sees with the broker incarnation it came from. The local broker keeps nothing across a
restart, so the campaign closes this consumer before each stop (after `catch_up`) and
opens a new one, reading the re-created topic from its beginning, once the new broker is
up. What was seen is what the broker stored, whatever kafka-python told the producers.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, TypeVar

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Sighting:
    """One message as the independent consumer read it."""

    seq: int
    """Arrival order over the whole campaign."""
    incarnation: int
    """Which broker (1, 2, ...: one per restart) stored it."""
    partition: int
    offset: int
    key: str
    event_id: str
    """From the `event_id` header; "" if the message had none."""
    new_status: str
    id_mismatch: bool
    """The header's event id differs from the value's."""


class Observer:
    """Consumes a topic with manual assignment from the beginning, one broker at a time."""

    def __init__(self, bootstrap_servers: str, topic: str) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.sightings: list[Sighting] = []
        self.errors = 0
        self.incarnation = 0
        self._consumer: Consumer | None = None
        self._partitions: list[TopicPartition] = []
        self._commands: queue.Queue[tuple[Callable[[], Any], Future[Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="observer", daemon=True)

    # -- called by the campaign (each runs in the observer's thread)

    def start(self) -> None:
        """Start the thread; messages are read once `open` names the first broker."""
        self._thread.start()

    def open(self, incarnation: int) -> None:
        """Read from the broker now running (number `incarnation`), from the beginning."""
        self._call(lambda: self._open(incarnation), timeout=10)

    def catch_up(self, timeout: float) -> bool:
        """Read until every partition's end (high watermark) is reached; False on timeout."""
        return bool(self._call(lambda: self._catch_up(timeout), timeout=timeout + 10))

    def close(self) -> None:
        """Stop reading this broker (call `catch_up` first: what is not read is not seen)."""
        self._call(self._close, timeout=15)

    def stop(self) -> None:
        """Close the consumer and end the thread."""
        if self._thread.is_alive():
            self._call(self._close, timeout=15)
            self._stop.set()
            self._thread.join(timeout=15)

    def seen_count(self) -> int:
        """How many messages were read so far."""
        return len(self.sightings)

    # -- the thread

    def _call(self, function: Callable[[], T], *, timeout: float) -> T:
        future: Future[T] = Future()
        self._commands.put((function, future))
        return future.result(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                function, future = self._commands.get(timeout=0.0 if self._consumer else 0.05)
            except queue.Empty:
                pass
            else:
                try:
                    future.set_result(function())
                except Exception as error:
                    future.set_exception(error)
            self._read(0.05)

    def _open(self, incarnation: int) -> None:
        self._close()
        self.incarnation = incarnation
        self._consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap_servers,
                "group.id": f"campaign-observer-{incarnation}",  # never joined nor committed
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "fetch.wait.max.ms": 50,
                "error_cb": self._on_error,
            },
            logger=log,
        )

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        self._partitions = []
        if consumer is not None:
            consumer.close()

    def _assign(self) -> bool:
        """Assign every partition once the topic exists (the first publish creates it)."""
        if self._partitions:
            return True
        assert self._consumer is not None
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=0.5)
        except Exception:  # the broker is starting or away: try again on the next turn
            return False
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            return False
        self._partitions = [
            TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(topic.partitions)
        ]
        self._consumer.assign(self._partitions)
        return True

    def _read(self, timeout: float) -> int:
        if self._consumer is None or not self._assign():
            return 0
        messages = self._consumer.consume(num_messages=500, timeout=timeout)
        for message in messages:
            self._record(message)
        return len(messages)

    def _record(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.code() != KafkaError._PARTITION_EOF:
                self.errors += 1
            return
        headers = dict(message.headers() or [])
        raw_id = headers.get("event_id") or b""
        header_id = raw_id.decode() if isinstance(raw_id, bytes) else raw_id
        key = message.key()
        try:
            value = json.loads(message.value() or b"")
            new_status = str(value.get("new_status", ""))
            value_id = str(value.get("event_id", ""))
        except (ValueError, AttributeError):
            new_status, value_id = "", ""
        self.sightings.append(
            Sighting(
                seq=len(self.sightings),
                incarnation=self.incarnation,
                partition=message.partition() or 0,
                offset=message.offset() or 0,
                key=key.decode() if isinstance(key, bytes) else str(key or ""),
                event_id=header_id,
                new_status=new_status,
                id_mismatch=header_id != value_id,
            )
        )

    def _catch_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._consumer is None:
                return True  # no broker open: nothing to read
            if not self._assign():
                if self._topic_missing():
                    return True  # nothing was published to this broker
                continue
            self._read(0.05)
            if self._at_end():
                return True
        return False

    def _topic_missing(self) -> bool:
        assert self._consumer is not None
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=1.0)
        except Exception:
            return False
        topic = metadata.topics.get(self.topic)
        return topic is None or topic.error is not None

    def _at_end(self) -> bool:
        assert self._consumer is not None
        try:
            positions = self._consumer.position(self._partitions)
            for position in positions:
                _, high = self._consumer.get_watermark_offsets(position, timeout=1.0)
                start = position.offset if position.offset >= 0 else 0
                if start < high:
                    return False
        except Exception:
            return False
        return True

    def _on_error(self, error: KafkaError) -> None:
        # The broker going away is the campaign's doing; librdkafka reports it here.
        log.debug("observer: %s", error)
