"""The Kafka adapters against a real Kafka-protocol broker, and their retry policy."""

from __future__ import annotations

import time

import pytest

from adapters.kafka import (
    KafkaConfig,
    KafkaConfigError,
    KafkaPublisher,
    RetriesExhausted,
    RetryingPublisher,
    RetryPolicy,
)
from adapters.kafka.broker import LocalBroker
from adapters.kafka.consumer import AuditConsumer, AuditLog, ConsumedEvent
from adapters.kafka.publisher import NotStored
from adapters.memory import FakePublisher
from fsm.outbox import OutboxMessage, PublishError

from .conftest import fast_config

TOPIC = "UserUpdateTopic"


def message(event_id: str, key: str = "1", value: bytes = b"{}") -> OutboxMessage:
    return OutboxMessage(
        event_id,
        TOPIC,
        key,
        value,
        (("event_id", event_id.encode()), ("event_type", b"UserStatusChanged")),
    )


class TestKafkaPublisher:
    def test_publishes_key_value_and_headers(self, broker: LocalBroker) -> None:
        """A published message is on the topic with its key, value and event-id header."""
        config = fast_config(broker)
        KafkaPublisher(config).publish(message("e1", key="42", value=b'{"a":1}'))
        audit = AuditConsumer(config, TOPIC).read_all(expect={"e1"}, timeout=10, quiet=0.1)
        (event,) = audit.events.values()
        assert (event.event_id, event.key, event.value) == ("e1", "42", b'{"a":1}')

    def test_keeps_per_key_order(self, broker: LocalBroker) -> None:
        """Messages of one key arrive in the order they were published."""
        config = fast_config(broker)
        publisher = KafkaPublisher(config)
        for i in range(10):
            publisher.publish(message(f"e{i}", key=str(i % 2)))
        audit = AuditConsumer(config, TOPIC).read_all(
            expect={f"e{i}" for i in range(10)}, timeout=10, quiet=0.1
        )
        keyed = {k: [e.event_id for e in v] for k, v in audit.by_key().items()}
        assert keyed == {"0": ["e0", "e2", "e4", "e6", "e8"], "1": ["e1", "e3", "e5", "e7", "e9"]}

    def test_fails_within_its_bound_when_the_broker_is_down(self, broker: LocalBroker) -> None:
        """With the broker stopped, publish raises PublishError after about delivery_timeout."""
        publisher = KafkaPublisher(fast_config(broker))
        publisher.publish(message("before"))
        broker.stop()
        started = time.monotonic()
        with pytest.raises(PublishError, match="publishing event during to UserUpdateTopic"):
            publisher.publish(message("during"))
        assert time.monotonic() - started < 5

    def test_recovers_after_a_broker_restart(self, broker: LocalBroker) -> None:
        """After a restart the publisher re-creates its producer and publishes again."""
        config = fast_config(broker)
        publisher = KafkaPublisher(config)
        publisher.publish(message("before"))
        broker.restart()
        for attempt in range(3):  # the first send may fail on the old producer
            try:
                publisher.publish(message("after"))
                break
            except PublishError:
                assert attempt < 2
        audit = AuditConsumer(config, TOPIC).read_all(expect={"after"}, timeout=10, quiet=0.1)
        assert "after" in audit.events
        assert "before" not in audit.events  # the restarted broker keeps nothing
        assert publisher.producers_created >= 2

    def test_an_acknowledgement_without_a_stored_offset_is_not_a_publish(
        self, broker: LocalBroker
    ) -> None:
        """A send the broker answers without storing (offset -1) fails; the retry stores it.

        A restarted broker hands producer ids out again from 1: A's old producer then shares
        B's id, and A's next send repeats a sequence number the broker has seen.
        """
        config = fast_config(broker)
        a, b = KafkaPublisher(config), KafkaPublisher(config)
        a.publish(message("a1"))
        broker.restart()
        b.publish(message("b1"))
        b.publish(message("b2"))
        with pytest.raises(NotStored, match="without a stored offset"):
            a.publish(message("a2"))
        a.publish(message("a2"))  # a new producer, a fresh id: stored
        audit = AuditConsumer(config, TOPIC).read_all(expect={"b1", "b2", "a2"}, timeout=10)
        assert {"b1", "b2", "a2"} <= audit.events.keys()
        assert a.producers_created == 2

    def test_unreachable_bootstrap_fails_fast(self) -> None:
        """No broker at all: the first publish fails within the configured bounds."""
        config = KafkaConfig(
            bootstrap_servers=LocalBroker().bootstrap_servers,
            request_timeout_ms=500,
            delivery_timeout_ms=800,
            max_block_ms=500,
        )
        started = time.monotonic()
        with pytest.raises(PublishError):
            KafkaPublisher(config).publish(message("nowhere"))
        assert time.monotonic() - started < 5


class TestAuditConsumer:
    def test_counts_duplicates(self, broker: LocalBroker) -> None:
        """A re-sent event is counted as a duplicate and kept once."""
        config = fast_config(broker)
        publisher = KafkaPublisher(config)
        for event_id in ("a", "b", "a", "a"):
            publisher.publish(message(event_id))
        audit = AuditConsumer(config, TOPIC).read_all(expect={"a", "b"}, timeout=10, quiet=0.2)
        assert (len(audit.events), audit.duplicates, audit.received) == (2, 2, 4)

    def test_missing_topic_reads_nothing(self, broker: LocalBroker) -> None:
        """A topic nobody wrote to gives an empty log (after the timeout)."""
        audit = AuditConsumer(fast_config(broker), "NoSuchTopic").read_all(timeout=0.5)
        assert audit.events == {}

    def test_reading_again_is_not_a_duplicate(self, broker: LocalBroker) -> None:
        """Reading the topic a second time into the same log counts no duplicates."""
        config = fast_config(broker)
        KafkaPublisher(config).publish(message("a"))
        consumer = AuditConsumer(config, TOPIC)
        log = consumer.read_all(expect={"a"}, timeout=10, quiet=0.1)
        consumer.read_all(expect={"a"}, timeout=10, quiet=0.1, log=log)
        assert (len(log.events), log.duplicates, log.received) == (1, 0, 1)

    def test_log_keeps_first_arrival(self) -> None:
        """The audit log keeps an event's first copy."""
        log = AuditLog()
        assert log.add(ConsumedEvent("x", "1", b"a", 0, 0))
        assert not log.add(ConsumedEvent("x", "1", b"a", 0, 1))
        assert log.events["x"].offset == 0

    def test_key_order_survives_a_recreated_topic(self) -> None:
        """After a topic is re-created its offsets restart; a key's events keep arrival order."""
        log = AuditLog()
        log.add(ConsumedEvent("first", "7", b"a", 0, 5))  # before the broker lost its topic
        log.add(ConsumedEvent("second", "7", b"b", 0, 0))  # the re-created topic
        log.add(ConsumedEvent("third", "7", b"c", 0, 1))
        assert [e.event_id for e in log.by_key()["7"]] == ["first", "second", "third"]


class Clock:
    """A monotonic clock moved by sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class TestRetryPolicy:
    def test_retries_then_succeeds(self) -> None:
        """Two failures then a success: three attempts, two exponential waits."""
        fake, clock = FakePublisher(), Clock()
        fake.fail_next = 2
        policy = RetryPolicy(attempts=5, initial_backoff=0.1, max_backoff=1, jitter=0)
        RetryingPublisher(fake, policy, sleep=clock.sleep, clock=clock).publish(message("e"))
        assert fake.attempts == 3
        assert clock.sleeps == [0.1, 0.2]
        assert len(fake.sent) == 1

    def test_gives_up_after_the_attempts(self) -> None:
        """Every attempt failing raises RetriesExhausted saying how many were made."""
        fake, clock = FakePublisher(), Clock()
        fake.failing = True
        policy = RetryPolicy(attempts=3, initial_backoff=0.1, jitter=0)
        with pytest.raises(RetriesExhausted, match=r"gave up after 3 attempt") as caught:
            RetryingPublisher(fake, policy, sleep=clock.sleep, clock=clock).publish(message("e"))
        assert caught.value.attempts == 3
        assert fake.attempts == 3

    def test_deadline_bounds_the_total_time(self) -> None:
        """No wait is started that would end past the deadline."""
        fake, clock = FakePublisher(), Clock()
        fake.failing = True
        policy = RetryPolicy(attempts=100, initial_backoff=1, max_backoff=4, jitter=0, deadline=10)
        with pytest.raises(RetriesExhausted):
            RetryingPublisher(fake, policy, sleep=clock.sleep, clock=clock).publish(message("e"))
        assert clock.sleeps == [1, 2, 4]
        assert clock.now <= 10

    def test_jitter_spreads_each_wait_by_a_fraction(self) -> None:
        """Jitter spreads each wait by up to ± that fraction of it, as the relay's does: one
        backoff (fsm.retry.backoff) for both."""
        from fsm.relay import RelaySettings

        policy = RetryPolicy(initial_backoff=1, max_backoff=8, jitter=0.5)
        assert policy.wait(1, lambda: 1.0) == 1.5
        assert policy.wait(5, lambda: 0.0) == 4
        assert policy.wait(2, lambda: 0.5) == 2
        relay = RelaySettings(backoff_initial=1, backoff_max=8, jitter=0.5)
        assert [relay.delay(n, lambda: 0.25) for n in (1, 2, 5)] == [
            policy.wait(n, lambda: 0.25) for n in (1, 2, 5)
        ]
        with pytest.raises(ValueError, match="jitter must be a fraction from 0 to 1, got 2"):
            RetryPolicy(jitter=2)

    def test_bad_policy_is_refused(self) -> None:
        """A policy with no attempts or a negative deadline is refused, naming the field."""
        with pytest.raises(ValueError, match="attempts must be at least 1"):
            RetryPolicy(attempts=0)
        with pytest.raises(ValueError, match="deadline must not be negative"):
            RetryPolicy(deadline=-1)


class TestKafkaConfig:
    def test_reliability_settings(self) -> None:
        """The producer is idempotent with acks=all and bounded timeouts."""
        settings = KafkaConfig().producer_settings()
        assert settings["acks"] == "all"
        assert settings["enable_idempotence"] is True
        assert {"request_timeout_ms", "delivery_timeout_ms", "max_block_ms"} <= settings.keys()

    def test_record_batches_are_checked_in_c(self) -> None:
        """The [kafka] extra brings crc32c: kafka-python's CRC-32C of each record batch in C,
        not its pure-Python fallback (a third of its sending thread's time in a relay)."""
        from kafka.record import util

        assert util.crc32c_c is not None
        assert util.calc_crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value

    def test_security_settings_pass_through(self) -> None:
        """SSL and SASL settings reach kafka-python unchanged."""
        config = KafkaConfig(
            bootstrap_servers="k1:9093, k2:9093",
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_plain_username="svc",
            sasl_plain_password="secret",
            ssl_cafile="/etc/ca.pem",
        )
        settings = config.producer_settings()
        assert settings["bootstrap_servers"] == ["k1:9093", "k2:9093"]
        assert settings["security_protocol"] == "SASL_SSL"
        assert settings["sasl_mechanism"] == "SCRAM-SHA-512"
        assert settings["sasl_plain_username"] == "svc"
        assert settings["ssl_cafile"] == "/etc/ca.pem"
        assert config.consumer_settings()["sasl_plain_password"] == "secret"

    def test_bad_settings_are_refused(self) -> None:
        """An unknown protocol or a SASL protocol without mechanism is refused, listing options."""
        with pytest.raises(KafkaConfigError, match="PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"):
            KafkaConfig(security_protocol="TLS")
        with pytest.raises(KafkaConfigError, match="needs a sasl_mechanism"):
            KafkaConfig(security_protocol="SASL_SSL")
