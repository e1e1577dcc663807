"""A card-capture machine whose capture is an external step, and the gateway it calls.

The gateway writes one line per call to a file (the idempotency key and who called), then
takes `seconds`: long enough for a test to look at the database during the call, or to
kill the calling process in the middle of it.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from adapters.sqlalchemy import SqlUnitOfWork, create_engine
from fsm import Machine, State
from fsm.outbox import OutboxMessage, OutboxUnitOfWork


class Stage(StrEnum):
    """Where a capture stands."""

    RECEIVED = "received"
    CAPTURING = "capturing"
    CAPTURED = "captured"
    DECLINED = "declined"


@dataclass(frozen=True)
class Ready:
    """The payment is recorded; the card can be charged."""


@dataclass(frozen=True)
class Captured:
    """The gateway took the money; `key` is the idempotency key it was called with."""

    key: str
    worker: str


@dataclass(frozen=True)
class Declined:
    """The gateway said no."""

    reason: str


class CaptureSteps(Protocol):
    """What the capture machine's actions call."""

    def prepare(self, context: dict[str, Any]) -> Ready: ...

    def capture(self, context: dict[str, Any], key: str) -> Captured | Declined: ...


class LocalCaptureSteps(Protocol):
    """The same capture written as a local action: the call runs inside the step's
    transaction (the mistake the external kind exists to prevent; the tests' control)."""

    def prepare(self, context: dict[str, Any]) -> Ready: ...

    def capture_in_transaction(self, context: dict[str, Any]) -> Captured | Declined: ...


S = Stage
ROWS = [
    (S.RECEIVED, Ready, S.CAPTURING),
    (S.CAPTURING, Captured, S.CAPTURED),
    (S.CAPTURING, Declined, S.DECLINED),
]

machine: Machine[Stage] = Machine(
    "capture",
    steps=CaptureSteps,
    states=[
        State(S.RECEIVED, initial=True, action=CaptureSteps.prepare),
        State(S.CAPTURING, action=CaptureSteps.capture, external=True),
        State(S.CAPTURED, final=True),
        State(S.DECLINED, final=True, failure=True),
    ],
    transitions=ROWS,
)

local_machine: Machine[Stage] = Machine(
    "capture_local",
    steps=LocalCaptureSteps,
    states=[
        State(S.RECEIVED, initial=True, action=LocalCaptureSteps.prepare),
        State(S.CAPTURING, action=LocalCaptureSteps.capture_in_transaction),
        State(S.CAPTURED, final=True),
        State(S.DECLINED, final=True, failure=True),
    ],
    transitions=ROWS,
)


class GatewayDown(Exception):
    """The gateway did not answer."""


class Gateway:
    """Both machines' collaborators: a gateway that logs each call to `calls`."""

    def __init__(
        self, calls: Path, *, worker: str, seconds: float = 0.0, uow: OutboxUnitOfWork | None = None
    ) -> None:
        self.calls = calls
        self.worker = worker
        self.seconds = seconds
        self.uow = uow
        self.down = False

    def prepare(self, context: dict[str, Any]) -> Ready:
        return Ready()

    def capture(self, context: dict[str, Any], key: str) -> Captured | Declined:
        if self.down:
            raise GatewayDown("the gateway did not answer")
        with self.calls.open("a") as log:
            log.write(f"{key} {self.worker}\n")
            log.flush()
            os.fsync(log.fileno())
        time.sleep(self.seconds)
        return Captured(key, self.worker)

    def capture_in_transaction(self, context: dict[str, Any]) -> Captured | Declined:
        assert self.uow is not None
        self.uow.outbox.add(  # a write of the step's own: its transaction is open from here
            OutboxMessage(f"charge-{context['payment']}", "payments", "card", b"{}")
        )
        return self.capture(context, "local")


def calls(path: Path) -> list[tuple[str, str]]:
    """The gateway's calls so far: (idempotency key, worker)."""
    if not path.exists():
        return []
    return [
        (key, worker)
        for key, worker in (line.split() for line in path.read_text().split("\n") if line)
    ]


def session_states(engine: Engine, application: str) -> list[str]:
    """The states of PostgreSQL's sessions named `application` (pg_stat_activity)."""
    with engine.connect() as connection:
        rows = connection.execute(
            text("select state from pg_stat_activity where application_name = :name"),
            {"name": application},
        )
        return [str(state) for (state,) in rows]


def another_writer_commits(url: str) -> bool:
    """True if a write in another connection commits within half a second."""
    impatient = create_engine(url, connect_args={"timeout": 0.5})
    try:
        with SqlUnitOfWork(impatient) as uow:
            uow.outbox.add(OutboxMessage(uuid.uuid4().hex, "payments", "other", b"{}"))
        return True
    except OperationalError as error:
        assert "locked" in str(error)
        return False
    finally:
        impatient.dispose()
