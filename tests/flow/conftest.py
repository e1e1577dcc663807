"""Fixtures of the flow tests: the flow wired on in-memory fakes with a hand-driven clock."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.kafka.broker import LocalBroker
from adapters.kafka.config import KafkaConfig
from adapters.kafka.retry import RetryPolicy
from adapters.memory import FakePublisher
from fsm.relay import RelaySettings
from tests.clock import Clock
from userstatus.app import FlowApp
from userstatus.demo import init_schema
from userstatus.fakes import FakeUserRepository, InMemoryFlowUnitOfWork
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import UserStatusUpdateOrchestrator
from userstatus.ports import CurrentUsers
from userstatus.publisher import UserUpdatePublisher


@dataclass
class MemoryFlow:
    """The flow on fakes, with every part reachable from the test."""

    clock: Clock
    users: FakeUserRepository
    uow: InMemoryFlowUnitOfWork
    publisher: FakePublisher
    orchestrator: UserStatusUpdateOrchestrator


@pytest.fixture
def clock() -> Clock:
    """A hand-driven clock."""
    return Clock()


@pytest.fixture
def flow(clock: Clock) -> Iterator[MemoryFlow]:
    """Users 1 (active), 2 (suspended), 3 (closed) and 4 (pending) on fakes."""
    users = FakeUserRepository(
        [(1, "active"), (2, "suspended"), (3, "closed"), (4, "pending_verification")],
        clock=clock,
    )
    uow = InMemoryFlowUnitOfWork(users=users)
    uow.outbox.clock = clock
    publisher = FakePublisher()
    orchestrator = UserStatusUpdateOrchestrator(
        UserStatusManager(CurrentUsers(uow)),
        UserUpdatePublisher(publisher),
        uow,
        clock=clock,
        sleep=clock.sleep,
    )
    yield MemoryFlow(clock, users, uow, publisher, orchestrator)


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    """A real Kafka-protocol broker (Tansu) on a free port, stopped after the test."""
    with LocalBroker() as running:
        yield running


def fast_config(broker: LocalBroker) -> KafkaConfig:
    """Kafka settings with short bounds, so a publish to a stopped broker fails in ~1 s."""
    return KafkaConfig(
        bootstrap_servers=broker.bootstrap_servers,
        request_timeout_ms=800,
        delivery_timeout_ms=1_000,
        max_block_ms=800,
    )


def sql_app(db_url: str, broker: LocalBroker, **relay: Any) -> FlowApp:
    """The flow on `db_url` (its tables created first) and the broker, with short bounds."""
    init_schema(db_url)  # as `fsm db init` would: FlowApp.connect creates no tables
    settings = {
        "batch_size": 20,
        "lease_seconds": 30.0,
        "max_attempts": 50,
        "backoff_initial": 0.05,
        "backoff_max": 0.2,
        "idle_interval": 0.05,
    } | relay
    return FlowApp.connect(
        db_url,
        fast_config(broker),
        retry=RetryPolicy(attempts=1, deadline=1.0),
        relay_settings=RelaySettings(**settings),
    )
