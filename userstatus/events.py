"""The `UserUpdateTopic` event: a versioned JSON schema, its headers and its message key."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fsm.outbox import OutboxMessage
from userstatus.domain import UserStatus

TOPIC = "UserUpdateTopic"
"""Where user status changes are announced."""

EVENT_TYPE = "UserStatusChanged"
SCHEMA_VERSION = 1
"""Bump on an incompatible change; consumers check it before reading the rest."""


class EventDecodeError(ValueError):
    """A message on the topic is not a user status event this code understands."""


@dataclass(frozen=True, slots=True)
class UserStatusChanged:
    """One committed status change, as published (schema version 1)."""

    event_id: str
    user_id: int
    old_status: UserStatus
    new_status: UserStatus
    occurred_at: datetime
    run_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The event as the JSON object that goes on the topic."""
        return {
            "schema_version": SCHEMA_VERSION,
            "event_type": EVENT_TYPE,
            "event_id": self.event_id,
            "user_id": self.user_id,
            "old_status": self.old_status.value,
            "new_status": self.new_status.value,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat(),
            "run_id": self.run_id,
        }

    def encode(self) -> bytes:
        """The message value: compact JSON with sorted keys, so re-sends are byte-identical."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()

    def to_message(self, topic: str = TOPIC) -> OutboxMessage:
        """The outbox message: keyed by user id (per-user order), id and type in headers."""
        return OutboxMessage(
            event_id=self.event_id,
            topic=topic,
            key=str(self.user_id),
            value=self.encode(),
            headers=(
                ("event_id", self.event_id.encode()),
                ("event_type", EVENT_TYPE.encode()),
                ("schema_version", str(SCHEMA_VERSION).encode()),
            ),
            run_id=self.run_id,
            created_at=self.occurred_at,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UserStatusChanged:
        """Read an event object; EventDecodeError names what is wrong."""
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise EventDecodeError(
                f"schema_version {version!r} is not supported; supported: {SCHEMA_VERSION}"
            )
        try:
            return cls(
                event_id=str(data["event_id"]),
                user_id=int(data["user_id"]),
                old_status=UserStatus(data["old_status"]),
                new_status=UserStatus(data["new_status"]),
                occurred_at=datetime.fromisoformat(data["occurred_at"]),
                run_id=data.get("run_id"),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise EventDecodeError(f"not a {EVENT_TYPE} event: {error!r}") from error

    @classmethod
    def decode(cls, value: bytes) -> UserStatusChanged:
        """Read a message value from the topic."""
        try:
            data = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise EventDecodeError(f"message value is not JSON: {error}") from error
        if not isinstance(data, dict):
            raise EventDecodeError("message value is not a JSON object")
        return cls.from_json(data)
