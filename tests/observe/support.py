"""What the observability tests share: hooks that record, a payment gateway, the machines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from adapters.sqlalchemy import TABLES
from fsm.examples import Authorized, Captured, CaptureFailed, Declined
from fsm.hooks import StepCommitted, StepFailed
from tests.faults.injector import Fault, FaultInjector, Kind


@contextmanager
def failing_commit(engine: Engine, kind: Kind = "transient") -> Iterator[None]:
    """The block's first commit on `engine` fails (the connection lost: the database rolls
    back, or with "lost-ack" commits first), and the block must raise that error."""
    injector = FaultInjector(engine)
    try:
        injector.arm(Fault("commit", 1, kind))
        with pytest.raises(Exception, match="injected fault"):
            yield
        assert injector.fired == f"commit 1 ({kind})"
    finally:
        injector.detach()


@dataclass
class Told:
    """Step hooks that record what they are told, and what the database held at the time."""

    engine: Engine | None = None
    """When set, each committed step also records how many history rows another
    connection sees then (the step's own row included once it has committed)."""
    committed: list[StepCommitted] = field(default_factory=list)
    failed: list[StepFailed] = field(default_factory=list)
    seen: list[int] = field(default_factory=list)

    def after_commit(self, step: StepCommitted) -> None:
        self.committed.append(step)
        if self.engine is not None:
            with self.engine.connect() as connection:
                count = select(func.count()).select_from(TABLES.history)
                self.seen.append(connection.execute(count).scalar_one())

    def after_failure(self, step: StepFailed) -> None:
        self.failed.append(step)

    def hooks(self) -> dict[str, Any]:
        """The keyword arguments giving a persistent machine these hooks."""
        return {"after_commit": [self.after_commit], "after_failure": [self.after_failure]}

    def moves(self) -> list[tuple[str, str, str]]:
        """The committed transitions: (source, trigger, target)."""
        return [(s.source, s.trigger, s.target) for s in self.committed]


class Gateway:
    """fsm.examples.payment's steps: authorizes unless `decline`, raises while `down`;
    captures after `failures` failed captures, or never answers when `unanswered`."""

    def __init__(
        self,
        *,
        decline: bool = False,
        down: bool = False,
        failures: int = 0,
        unanswered: bool = False,
    ) -> None:
        self.decline = decline
        self.down = down
        self.failures = failures
        self.unanswered = unanswered

    def authorize(self, context: dict[str, Any]) -> Authorized | Declined:
        if self.down:
            raise ConnectionError("gateway unreachable")
        return Declined() if self.decline else Authorized()

    def capture(self, context: dict[str, Any], key: str) -> Captured | CaptureFailed:
        if self.unanswered:
            raise TimeoutError("no answer")
        if self.failures:
            self.failures -= 1
            context["attempts"] = int(context.get("attempts", 0)) + 1
            return CaptureFailed()
        return Captured()
