"""Wiring: the flow on SQLAlchemy and Kafka, sync (the demo, the relay command) and asyncio
(a service such as examples/service)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.kafka.config import KafkaConfig
from adapters.kafka.publisher import AsyncKafkaPublisher, KafkaPublisher
from adapters.kafka.retry import AsyncRetryingPublisher, RetryingPublisher
from adapters.sqlalchemy import create_async_engine, create_engine, require_tables
from fsm.defaults import utc_now
from fsm.outbox import AsyncPublisher, Publisher
from fsm.persistence import PersistentMachine
from fsm.relay import RelaySettings
from fsm.retry import STEP_RETRY, RetryPolicy
from userstatus.domain import UserStatus
from userstatus.flow import FlowState, machine
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import (
    AsyncUserStatusUpdateOrchestrator,
    UserStatusUpdateOrchestrator,
)
from userstatus.ports import CurrentUsers
from userstatus.publisher import AsyncUserUpdatePublisher, UserUpdatePublisher
from userstatus.relay import AsyncOutboxRelay, OutboxRelay
from userstatus.sql import FLOW_TABLES, AsyncFlowSqlUnitOfWork, FlowSqlUnitOfWork

log = logging.getLogger(__name__)

GRACE_MARGIN = 5.0
"""Seconds added to the immediate publish's worst case: the commit after it, clock skew."""


def publish_grace(
    retry: RetryPolicy, kafka: KafkaConfig, steps: RetryPolicy = STEP_RETRY
) -> timedelta:
    """How long relays leave a new event to the orchestrator that committed it.

    The immediate publish makes up to `retry.attempts` attempts of at most
    `kafka.attempt_seconds` each (max_block_ms + delivery_timeout_ms), with the longest
    backoff waits between them; no attempt starts past `retry.deadline`, so it also ends
    within the deadline plus one attempt. The smaller bound, plus the time recording the
    step may be tried again (`steps.deadline`), plus GRACE_MARGIN.
    """
    attempt = kafka.attempt_seconds
    waits = sum(retry.wait(failed, lambda: 1.0) for failed in range(1, retry.attempts))
    worst = min(retry.attempts * attempt + waits, retry.deadline + attempt)
    return timedelta(seconds=worst + steps.deadline + GRACE_MARGIN)


def immediate_kafka(kafka: KafkaConfig, retry: RetryPolicy) -> KafkaConfig:
    """`kafka` with each time bound cut to `retry.deadline`: the immediate publish after a
    commit serves the common case, and the relay owns the rest, so a caller waits about
    the deadline (two bounds at most: blocked on metadata, then on delivery) in an outage."""
    bound = max(100, int(retry.deadline * 1000))
    return replace(
        kafka,
        request_timeout_ms=min(kafka.request_timeout_ms, bound),
        delivery_timeout_ms=min(kafka.delivery_timeout_ms, bound),
        max_block_ms=min(kafka.max_block_ms, bound),
    )


def kafka_relay_settings(settings: RelaySettings, kafka: KafkaConfig) -> RelaySettings:
    """`settings` for a relay publishing to Kafka: one attempt takes up to `kafka`'s bound
    (RelaySettingsError if the lease is too short for it)."""
    bound = max(settings.publish_timeout, kafka.attempt_seconds)
    return replace(settings, publish_timeout=bound)


@dataclass
class FlowApp:
    """One database and one Kafka: builds orchestrators and relays on them.

    Each orchestrator and each relay gets its own unit of work (one thread each).
    """

    engine: Engine
    kafka: KafkaConfig
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    relay_settings: RelaySettings = field(default_factory=RelaySettings)
    clock: Callable[[], datetime] = utc_now
    publish_grace: timedelta | None = None
    """How long relays leave a new event to its orchestrator; None: `publish_grace()`."""
    _publishers: list[KafkaPublisher] = field(default_factory=list, init=False, repr=False)

    @classmethod
    def connect(
        cls, db_url: str, kafka: KafkaConfig, *, users: bool = True, **options: Any
    ) -> FlowApp:
        """Open a database `fsm db init --with userstatus` made (SchemaMissing if it lacks a
        table; nothing is created) and keep the Kafka settings. `users=False` (a relay,
        which never reads users) needs only the engine's tables, `fsm db init`'s."""
        engine = create_engine(db_url)
        try:
            require_tables(engine, extra=FLOW_TABLES if users else {})
        except BaseException:
            engine.dispose()
            raise
        return cls(engine, kafka, **options)

    def unit_of_work(self) -> FlowSqlUnitOfWork:
        """A new unit of work on the database (for one thread)."""
        return FlowSqlUnitOfWork(self.engine, clock=self.clock)

    def publisher(self, kafka: KafkaConfig | None = None) -> KafkaPublisher:
        """A Kafka publisher (one producer, re-created after a fatal error); closed by close()."""
        publisher = KafkaPublisher(kafka or self.kafka)
        self._publishers.append(publisher)
        return publisher

    def orchestrator(
        self, publisher: Publisher | None = None, *, uow: FlowSqlUnitOfWork | None = None
    ) -> UserStatusUpdateOrchestrator:
        """An orchestrator whose immediate publish retries under `retry` (its Kafka time
        bounds cut to the retry deadline, see `immediate_kafka`)."""
        uow = uow or self.unit_of_work()
        kafka = immediate_kafka(self.kafka, self.retry)
        retrying = RetryingPublisher(publisher or self.publisher(kafka), self.retry)
        return UserStatusUpdateOrchestrator(
            UserStatusManager(CurrentUsers(uow)),
            UserUpdatePublisher(retrying),
            uow,
            clock=self.clock,
            publish_grace=self.publish_grace or publish_grace(self.retry, kafka),
        )

    def runs(self) -> PersistentMachine[FlowState]:
        """The stored runs of the flow, to load and inspect (with its own unit of work)."""
        return PersistentMachine(machine, self.unit_of_work(), types=[UserStatus], clock=self.clock)

    def relay(self, publisher: Publisher | None = None, *, owner: str | None = None) -> OutboxRelay:
        """A relay with its own unit of work; it backs off between claims, not within one.

        Publishing to Kafka, its lease must outlast one attempt under `kafka`'s bounds:
        RelaySettingsError otherwise.
        """
        settings = self.relay_settings
        if publisher is None:
            publisher = self.publisher()
            settings = kafka_relay_settings(settings, self.kafka)
        return OutboxRelay(
            self.unit_of_work(),
            publisher,
            settings=settings,
            owner=owner,
            clock=self.clock,
        )

    def close(self) -> None:
        """Close the producers this app made and release the database connections."""
        for publisher in self._publishers:
            try:
                publisher.close()
            except Exception as error:  # a producer that cannot flush is closed all the same
                log.warning("closing a Kafka producer failed: %r", error)
        self._publishers.clear()
        self.engine.dispose()


@dataclass
class AsyncFlowApp:
    """FlowApp for asyncio: one async engine and one Kafka producer, shared by the tasks;
    each task gets its own orchestrator and unit of work (`orchestrator()`).

    The immediate publish runs as FlowApp's does (its Kafka time bounds cut to the retry
    deadline, retried under `retry`), through an AsyncKafkaPublisher: no call blocks the
    loop. Failed publishes are left to a relay: `relay()`, a task in the same loop, or
    `fsm relay`, its own process.
    """

    engine: AsyncEngine
    kafka: KafkaConfig
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    relay_settings: RelaySettings = field(default_factory=RelaySettings)
    clock: Callable[[], datetime] = utc_now
    publish_grace: timedelta | None = None
    """How long relays leave a new event to its orchestrator; None: `publish_grace()`."""
    _publisher: AsyncKafkaPublisher | None = field(default=None, init=False, repr=False)
    _relay_publishers: list[AsyncKafkaPublisher] = field(
        default_factory=list, init=False, repr=False
    )

    @classmethod
    def connect(cls, db_url: str, kafka: KafkaConfig, **options: Any) -> AsyncFlowApp:
        """Open `db_url`, which `fsm db init --with userstatus` made (SchemaMissing if it lacks
        a table, checked with a sync connection once; nothing is created)."""
        check = create_engine(db_url)
        try:
            require_tables(check, extra=FLOW_TABLES)
        finally:
            check.dispose()
        return cls(create_async_engine(db_url), kafka, **options)

    def unit_of_work(self) -> AsyncFlowSqlUnitOfWork:
        """A new unit of work on the database (for one task)."""
        return AsyncFlowSqlUnitOfWork(self.engine, clock=self.clock)

    def orchestrator(
        self, publisher: AsyncPublisher | None = None, *, uow: AsyncFlowSqlUnitOfWork | None = None
    ) -> AsyncUserStatusUpdateOrchestrator:
        """An orchestrator for one task, on its own unit of work and the shared producer."""
        uow = uow or self.unit_of_work()
        shared = self._shared()
        return AsyncUserStatusUpdateOrchestrator(
            UserStatusManager(CurrentUsers(uow)),
            AsyncUserUpdatePublisher(AsyncRetryingPublisher(publisher or shared, self.retry)),
            uow,
            clock=self.clock,
            publish_grace=self.publish_grace or publish_grace(self.retry, shared.config),
        )

    def _shared(self) -> AsyncKafkaPublisher:
        """The producer the orchestrators share (made on first use, not connected yet)."""
        if self._publisher is None:
            self._publisher = AsyncKafkaPublisher(immediate_kafka(self.kafka, self.retry))
        return self._publisher

    async def start(self) -> bool:
        """Connect the shared producer before the first request (see
        AsyncKafkaPublisher.connect); False when no broker answered yet."""
        return await self._shared().connect()

    def relay(
        self, publisher: AsyncPublisher | None = None, *, owner: str | None = None
    ) -> AsyncOutboxRelay:
        """An async relay with its own unit of work, to run as a task (`await relay.run()`,
        ended by `relay.stop()`); see FlowApp.relay. Without `publisher`, it gets a producer
        of its own under `kafka`'s full bounds (not the immediate publish's), closed by
        close()."""
        settings = self.relay_settings
        if publisher is None:
            settings = kafka_relay_settings(settings, self.kafka)
            publisher = AsyncKafkaPublisher(self.kafka)
            self._relay_publishers.append(publisher)
        return AsyncOutboxRelay(
            self.unit_of_work(),
            publisher,
            settings=settings,
            owner=owner,
            clock=self.clock,
        )

    async def close(self) -> None:
        """Close the producers and release the database connections."""
        publisher, self._publisher = self._publisher, None
        closing = [publisher] if publisher is not None else []
        closing += self._relay_publishers
        self._relay_publishers.clear()
        for producer in closing:
            await producer.close()
        await self.engine.dispose()
