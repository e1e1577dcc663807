"""The async orchestrator on SQLite and PostgreSQL: the sync flow's steps and rules, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from itertools import pairwise

import pytest
from sqlalchemy import Engine

from adapters.kafka.broker import LocalBroker
from adapters.memory import AsyncFakePublisher
from adapters.sqlalchemy import create_async_engine
from fsm.retry import RetryPolicy
from userstatus.app import AsyncFlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import UserStatusChanged
from userstatus.flow import FlowState
from userstatus.orchestrator import AsyncUserStatusUpdateOrchestrator, IdempotencyConflict
from userstatus.outcomes import IllegalStatusChange, Published, PublishFailed
from userstatus.sql import FlowSqlUnitOfWork

from .conftest import fast_config

S = UserStatus


@pytest.fixture
async def app(engine: Engine, db_url: str) -> AsyncIterator[AsyncFlowApp]:
    """The async flow on the test database (users 1 to 3 active); no broker is reached."""
    uow = FlowSqlUnitOfWork(engine)
    with uow:
        for user_id in (1, 2, 3):
            uow.users.create(user_id, "active")
    kafka = fast_config(LocalBroker())  # a free port, never started: the tests pass publishers
    flow = AsyncFlowApp(create_async_engine(db_url), kafka, retry=RetryPolicy(attempts=1))
    yield flow
    await flow.close()


def orchestrator(
    app: AsyncFlowApp, publisher: AsyncFakePublisher
) -> AsyncUserStatusUpdateOrchestrator:
    return app.orchestrator(publisher)


def outbox_status(engine: Engine, event_id: str) -> tuple[str, int]:
    uow = FlowSqlUnitOfWork(engine)
    with uow:
        entry = uow.outbox.get(event_id)
        assert entry is not None
        return entry.status, entry.message.attempts


class TestAsyncFlow:
    async def test_update_then_publish_then_settle(self, app: AsyncFlowApp, engine: Engine) -> None:
        """The user, the outbox row and the run commit; the event is published; the row is
        marked published in the publish step's transaction."""
        publisher = AsyncFakePublisher()
        run = await orchestrator(app, publisher).perform(UpdateUserStatusPayload(1, S.SUSPENDED))
        assert run.state == FlowState.PUBLISHED
        event = UserStatusChanged.from_json(run.context["event"])
        assert isinstance(run.outcome, Published) and run.outcome.event_id == event.event_id
        assert [m.event_id for m in publisher.sent] == [event.event_id]
        assert outbox_status(engine, event.event_id)[0] == "published"
        with FlowSqlUnitOfWork(engine) as uow:
            user = uow.users.get(1)
        assert user is not None and user.status == "suspended"
        assert [(t.source, t.target) for t in run.history] == [
            (FlowState.RECEIVED, FlowState.STATUS_UPDATED),
            (FlowState.STATUS_UPDATED, FlowState.PUBLISHED),
        ]

    async def test_a_failed_publish_stays_pending_for_the_relay(
        self, app: AsyncFlowApp, engine: Engine
    ) -> None:
        """The broker refuses: publish_failed, the update kept, the row pending and counted."""
        publisher = AsyncFakePublisher()
        publisher.failing = True
        run = await orchestrator(app, publisher).perform(UpdateUserStatusPayload(1, S.SUSPENDED))
        assert run.state == FlowState.PUBLISH_FAILED
        assert isinstance(run.outcome, PublishFailed) and run.outcome.attempts == 1
        assert outbox_status(engine, run.outcome.event_id) == ("pending", 1)

    async def test_an_illegal_change_writes_nothing(
        self, app: AsyncFlowApp, engine: Engine
    ) -> None:
        """The lifecycle refuses: update_failed, no event."""
        publisher = AsyncFakePublisher()
        run = await orchestrator(app, publisher).perform(
            UpdateUserStatusPayload(1, S.PENDING_VERIFICATION)
        )
        assert run.state == FlowState.UPDATE_FAILED
        assert isinstance(run.outcome, IllegalStatusChange)
        assert publisher.sent == [] and "event" not in run.context

    async def test_an_idempotency_key_applies_once(self, app: AsyncFlowApp) -> None:
        """The same key returns the same run; the same key for another change is refused."""
        publisher = AsyncFakePublisher()
        payload = UpdateUserStatusPayload(2, S.SUSPENDED)
        first = await orchestrator(app, publisher).perform(payload, idempotency_key="k")
        again = await orchestrator(app, publisher).perform(payload, idempotency_key="k")
        assert again.id == first.id and len(publisher.sent) == 1
        with pytest.raises(IdempotencyConflict, match="used for user 2 -> suspended"):
            await orchestrator(app, publisher).perform(
                UpdateUserStatusPayload(3, S.SUSPENDED), idempotency_key="k"
            )

    async def test_concurrent_tasks_keep_each_users_order(self, app: AsyncFlowApp) -> None:
        """Twenty tasks changing three users back and forth: each user's published events
        form one chain, in the order they were sent (an update queued behind a pending one
        leaves its publish to the relay)."""
        publisher = AsyncFakePublisher()
        publisher.delay = 0.01

        async def task(n: int) -> None:
            status = S.SUSPENDED if n % 2 else S.ACTIVE
            await orchestrator(app, publisher).perform(UpdateUserStatusPayload(n % 3 + 1, status))

        await asyncio.gather(*(task(n) for n in range(20)))
        for user in ("1", "2", "3"):
            events = [UserStatusChanged.decode(m.value) for m in publisher.sent if m.key == user]
            chain = [(e.old_status, e.new_status) for e in events]
            assert all(a[1] == b[0] for a, b in pairwise(chain)), chain
