"""UserUpdatePublisher (and its async twin): turns a status change into a `UserUpdateTopic`
message and sends it."""

from __future__ import annotations

from fsm.drive import Steps, run_async, run_sync, settle
from fsm.outbox import AsyncPublisher, Publisher, PublishError
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.outcomes import Published, PublishFailed, PublishOutcome


def publish_steps(
    publisher: Publisher | AsyncPublisher, event: UserStatusChanged, topic: str
) -> Steps[PublishOutcome]:
    """Send the event; a failure is an outcome (the caller keeps the event pending)."""
    message = event.to_message(topic)
    try:
        yield from settle(publisher.publish(message))
    except PublishError as error:
        attempts = getattr(error, "attempts", 1)
        return PublishFailed(event.event_id, str(error), attempts)
    return Published(event.event_id)


class UserUpdatePublisher:
    """Knows the event schema and the topic; the Publisher it wraps knows the broker."""

    def __init__(self, publisher: Publisher, *, topic: str = TOPIC) -> None:
        self.publisher = publisher
        self.topic = topic

    def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event; a failure is an outcome (the caller keeps the event pending)."""
        return run_sync(publish_steps(self.publisher, event, self.topic))


class AsyncUserUpdatePublisher:
    """UserUpdatePublisher on an AsyncPublisher (userstatus.ports.AsyncEventPublisher)."""

    def __init__(self, publisher: AsyncPublisher, *, topic: str = TOPIC) -> None:
        self.publisher = publisher
        self.topic = topic

    async def publish(self, event: UserStatusChanged) -> PublishOutcome:
        """Send the event; a failure is an outcome (the caller keeps the event pending)."""
        return await run_async(publish_steps(self.publisher, event, self.topic))
