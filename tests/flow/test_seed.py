"""The seed article's tests: three independent units, each tested on its own with fakes."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.memory import FakePublisher
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import UserStatusChanged
from userstatus.fakes import FakeUserRepository, InMemoryFlowUnitOfWork
from userstatus.flow import FlowState
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import UserStatusUpdateOrchestrator
from userstatus.outcomes import (
    Published,
    PublishOutcome,
    UpdateOutcome,
    UserNotFound,
    UserStatusUpdated,
)
from userstatus.publisher import UserUpdatePublisher


class RecordingManager:
    """A status manager that only records that it was called."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
        self.calls.append(f"manager.update_user_status({payload.user_id})")
        return UserStatusUpdated(payload.user_id, UserStatus.ACTIVE, payload.new_status)


class RecordingPublisher:
    """An event publisher that only records that it was called."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def publish(self, event: UserStatusChanged) -> PublishOutcome:
        self.calls.append(f"publisher.publish({event.user_id})")
        return Published(event.event_id)


class TestOrchestrator:
    def test_calls_the_manager_then_the_publisher(self) -> None:
        """The orchestrator calls updateUserStatus, then publish, in that order."""
        calls: list[str] = []
        orchestrator = UserStatusUpdateOrchestrator(
            RecordingManager(calls), RecordingPublisher(calls), InMemoryFlowUnitOfWork()
        )
        run = orchestrator.perform(UpdateUserStatusPayload(5, UserStatus.SUSPENDED))
        assert calls == ["manager.update_user_status(5)", "publisher.publish(5)"]
        assert run.state == FlowState.PUBLISHED

    def test_does_not_publish_when_the_update_fails(self) -> None:
        """A failed update never reaches the publisher."""
        calls: list[str] = []

        class MissingUser(RecordingManager):
            def update_user_status(self, payload: UpdateUserStatusPayload) -> UpdateOutcome:
                self.calls.append("manager")
                return UserNotFound(payload.user_id)

        orchestrator = UserStatusUpdateOrchestrator(
            MissingUser(calls), RecordingPublisher(calls), InMemoryFlowUnitOfWork()
        )
        run = orchestrator.perform(UpdateUserStatusPayload(5, UserStatus.SUSPENDED))
        assert calls == ["manager"]
        assert run.state == FlowState.UPDATE_FAILED


class TestStatusManager:
    def test_updates_an_existing_user(self) -> None:
        """The manager changes the status of a user that exists."""
        users = FakeUserRepository([(1, "active")])
        outcome = UserStatusManager(users).update_user_status(
            UpdateUserStatusPayload(1, UserStatus.SUSPENDED)
        )
        assert outcome == UserStatusUpdated(1, UserStatus.ACTIVE, UserStatus.SUSPENDED)
        assert users.status_of(1) == "suspended"
        assert users.updates == [(1, "suspended")]

    def test_does_nothing_for_a_missing_user(self) -> None:
        """The manager writes nothing when the user does not exist."""
        users = FakeUserRepository([(1, "active")])
        outcome = UserStatusManager(users).update_user_status(
            UpdateUserStatusPayload(2, UserStatus.SUSPENDED)
        )
        assert outcome == UserNotFound(2)
        assert users.updates == []
        assert list(users.users) == [1]


class TestUserUpdatePublisher:
    def test_publishes_to_user_update_topic(self) -> None:
        """The publisher sends the event to UserUpdateTopic, keyed by the user id."""
        fake = FakePublisher()
        event = UserStatusChanged(
            "e1", 9, UserStatus.ACTIVE, UserStatus.CLOSED, datetime(2026, 1, 1, tzinfo=UTC)
        )
        outcome = UserUpdatePublisher(fake).publish(event)
        assert outcome == Published("e1")
        assert [(m.topic, m.key) for m in fake.sent] == [("UserUpdateTopic", "9")]
        assert UserStatusChanged.decode(fake.sent[0].value) == event
