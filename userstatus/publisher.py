"""UserUpdatePublisher: turns a status change into a `UserUpdateTopic` message and sends it."""

from __future__ import annotations

from fsm.outbox import Publisher, PublishError
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.outcomes import Published, PublishFailed, PublishOutcome


class UserUpdatePublisher:
    """Knows the event schema and the topic; the Publisher it wraps knows the broker."""

    def __init__(self, publisher: Publisher, *, topic: str = TOPIC) -> None:
        self.publisher = publisher
        self.topic = topic

    def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event; a failure is an outcome (the caller keeps the event pending)."""
        message = event.to_message(self.topic)
        try:
            self.publisher.publish(message)
        except PublishError as error:
            attempts = getattr(error, "attempts", 1)
            return PublishFailed(event.event_id, str(error), attempts)
        return Published(event.event_id)
