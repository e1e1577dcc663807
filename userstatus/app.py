"""Wiring: the flow on SQLAlchemy and Kafka, as the demo, the relay command and tests build it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from adapters.kafka.config import KafkaConfig
from adapters.kafka.publisher import KafkaPublisher
from adapters.kafka.retry import RetryingPublisher, RetryPolicy
from adapters.sqlalchemy import create_engine, init_db
from adapters.sqlalchemy.flow import FlowSqlUnitOfWork
from fsm.ports import Publisher
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import UserStatusUpdateOrchestrator, utcnow
from userstatus.ports import CurrentUsers
from userstatus.publisher import UserUpdatePublisher
from userstatus.relay import OutboxRelay, RelaySettings


@dataclass
class FlowApp:
    """One database and one Kafka: builds orchestrators and relays on them.

    Each orchestrator and each relay gets its own unit of work (one thread each).
    """

    engine: Engine
    kafka: KafkaConfig
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    relay_settings: RelaySettings = field(default_factory=RelaySettings)
    clock: Callable[[], datetime] = utcnow

    @classmethod
    def connect(cls, db_url: str, kafka: KafkaConfig, **options: Any) -> FlowApp:
        """Open the database (creating missing tables) and keep the Kafka settings."""
        engine = create_engine(db_url)
        init_db(engine)
        return cls(engine, kafka, **options)

    def unit_of_work(self) -> FlowSqlUnitOfWork:
        """A new unit of work on the database (for one thread)."""
        return FlowSqlUnitOfWork(self.engine, clock=self.clock)

    def publisher(self, kafka: KafkaConfig | None = None) -> KafkaPublisher:
        """A Kafka publisher (one producer, re-created after a fatal error)."""
        return KafkaPublisher(kafka or self.kafka)

    def orchestrator(
        self, publisher: Publisher | None = None, *, uow: FlowSqlUnitOfWork | None = None
    ) -> UserStatusUpdateOrchestrator:
        """An orchestrator whose immediate publish retries under `retry`."""
        uow = uow or self.unit_of_work()
        retrying = RetryingPublisher(publisher or self.publisher(), self.retry)
        return UserStatusUpdateOrchestrator(
            UserStatusManager(CurrentUsers(uow)),
            UserUpdatePublisher(retrying),
            uow,
            clock=self.clock,
        )

    def relay(self, publisher: Publisher | None = None, *, owner: str | None = None) -> OutboxRelay:
        """A relay with its own unit of work; it backs off between claims, not within one."""
        return OutboxRelay(
            self.unit_of_work(),
            publisher or self.publisher(),
            settings=self.relay_settings,
            owner=owner,
            clock=self.clock,
        )

    def close(self) -> None:
        """Release the database connections."""
        self.engine.dispose()
