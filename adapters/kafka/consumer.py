"""An audit consumer: reads a topic from the start, de-duplicates by event id, counts duplicates."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from adapters.kafka.config import KafkaConfig


@dataclass(frozen=True, slots=True)
class ConsumedEvent:
    """One message as read from the topic."""

    event_id: str
    key: str
    value: bytes
    partition: int
    offset: int


@dataclass
class AuditLog:
    """What the consumer saw: each event once, in arrival order, and how many were repeats."""

    events: dict[str, ConsumedEvent] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    """How many times each event id arrived."""
    duplicates: int = 0
    received: int = 0
    without_id: int = 0

    read: set[tuple[int, int, str]] = field(default_factory=set)
    """(partition, offset, event id) of every record read: reading it again is no delivery."""

    def add(self, event: ConsumedEvent) -> bool:
        """Keep the event unless its id was seen; True if it was new.

        A record read again (same partition, offset and id, as when a topic is read from
        the start a second time) is ignored; the same id at another offset is a duplicate.
        """
        position = (event.partition, event.offset, event.event_id)
        if position in self.read:
            return False
        self.read.add(position)
        self.received += 1
        self.copies[event.event_id] = self.copies.get(event.event_id, 0) + 1
        if event.event_id in self.events:
            self.duplicates += 1
            return False
        self.events[event.event_id] = event
        return True

    def duplicates_among(self, event_ids: Collection[str]) -> int:
        """How many extra copies of these events arrived."""
        return sum(self.copies.get(e, 1) - 1 for e in event_ids if e in self.copies)

    def by_key(self) -> dict[str, list[ConsumedEvent]]:
        """Each key's first-seen events, in the order they arrived.

        Arrival order, not offset order: a key's records arrive in offset order within one
        topic, and a topic that was lost and re-created (a broker keeping no storage)
        starts its offsets again at 0, so sorting by offset would put later events first.
        """
        keyed: dict[str, list[ConsumedEvent]] = {}
        for event in self.events.values():
            keyed.setdefault(event.key, []).append(event)
        return keyed


class AuditConsumer:
    """Reads every partition of a topic from the beginning with manual assignment.

    Manual assignment needs no consumer group, so it works the same on any Kafka; the
    de-duplication by event id is what makes at-least-once delivery safe to consume.
    """

    def __init__(
        self,
        config: KafkaConfig,
        topic: str,
        *,
        consumer_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.config = config
        self.topic = topic
        self._factory = consumer_factory

    def read_all(
        self,
        *,
        expect: Collection[str] = (),
        timeout: float = 20.0,
        quiet: float = 1.0,
        log: AuditLog | None = None,
    ) -> AuditLog:
        """Read until every id in `expect` arrived and `quiet` seconds bring nothing new,
        or until `timeout` seconds have passed."""
        factory = self._factory
        if factory is None:
            from kafka import KafkaConsumer

            factory = KafkaConsumer
        audit = log if log is not None else AuditLog()
        settings = self.config.consumer_settings()
        consumer = factory(enable_auto_commit=False, auto_offset_reset="earliest", **settings)
        try:
            from kafka import TopicPartition

            deadline = time.monotonic() + timeout
            partitions: set[int] | None = None
            while partitions is None and time.monotonic() < deadline:
                partitions = consumer.partitions_for_topic(self.topic)
                if partitions is None:
                    time.sleep(0.1)
            if not partitions:
                return audit
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            consumer.seek_to_beginning(*assigned)
            wanted = set(expect)
            last_new = time.monotonic()
            while time.monotonic() < deadline:
                batch = consumer.poll(timeout_ms=200)
                for records in batch.values():
                    for record in records:
                        if self._take(record, audit):
                            last_new = time.monotonic()
                done = wanted <= audit.events.keys()
                if done and time.monotonic() - last_new >= quiet:
                    break
        finally:
            consumer.close()
        return audit

    @staticmethod
    def _take(record: Any, audit: AuditLog) -> bool:
        headers = dict(record.headers or [])
        raw_id = headers.get("event_id")
        if raw_id is None:
            audit.without_id += 1
            audit.received += 1
            return False
        key = record.key.decode() if record.key is not None else ""
        event = ConsumedEvent(raw_id.decode(), key, record.value, record.partition, record.offset)
        return audit.add(event)
