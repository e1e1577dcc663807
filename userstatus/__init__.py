"""The reference flow: a user status update that tells the audit service, and never loses it."""

from fsm.relay import RelayReport, RelaySettings
from userstatus.domain import InvalidPayload, UpdateUserStatusPayload, UserStatus, lifecycle
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.flow import FlowState, FlowSteps, machine
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import UserStatusUpdateOrchestrator
from userstatus.outcomes import (
    DeadLettered,
    IllegalStatusChange,
    Published,
    PublishFailed,
    StorageError,
    UserNotFound,
    UserStatusUpdated,
)
from userstatus.publisher import UserUpdatePublisher
from userstatus.relay import AsyncOutboxRelay, OutboxRelay

__all__ = [
    "TOPIC",
    "AsyncOutboxRelay",
    "DeadLettered",
    "FlowState",
    "FlowSteps",
    "IllegalStatusChange",
    "InvalidPayload",
    "OutboxRelay",
    "PublishFailed",
    "Published",
    "RelayReport",
    "RelaySettings",
    "StorageError",
    "UpdateUserStatusPayload",
    "UserNotFound",
    "UserStatus",
    "UserStatusChanged",
    "UserStatusManager",
    "UserStatusUpdateOrchestrator",
    "UserStatusUpdated",
    "UserUpdatePublisher",
    "lifecycle",
    "machine",
]
