"""Machines whose actions and guards are `async def`, and the collaborators they call, for
the async persistent runner's tests (in memory, SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert

from adapters.sqlalchemy import TABLES, AsyncSqlUnitOfWork
from fsm import Machine, Rollback, Run, State
from fsm.defaults import new_id, utc_now
from tests.persistence.external_support import ROWS, Captured, Declined, Ready, Stage


class AsyncCaptureSteps(Protocol):
    """The capture machine's steps, awaited: `capture` is external."""

    async def prepare(self, context: dict[str, Any]) -> Ready: ...

    async def capture(self, context: dict[str, Any], key: str) -> Captured | Declined: ...


class AsyncLocalCaptureSteps(Protocol):
    """The same capture as a local action, inside the step's transaction (the control)."""

    async def prepare(self, context: dict[str, Any]) -> Ready: ...

    async def capture_in_transaction(self, context: dict[str, Any]) -> Captured | Declined: ...


capture: Machine[Stage, AsyncCaptureSteps] = Machine(
    "async_capture",
    steps=AsyncCaptureSteps,
    states=[
        State(Stage.RECEIVED, initial=True, action=AsyncCaptureSteps.prepare),
        State(Stage.CAPTURING, action=AsyncCaptureSteps.capture, external=True),
        State(Stage.CAPTURED, final=True),
        State(Stage.DECLINED, final=True, failure=True),
    ],
    transitions=ROWS,
)

local_capture: Machine[Stage, AsyncLocalCaptureSteps] = Machine(
    "async_capture_local",
    steps=AsyncLocalCaptureSteps,
    states=[
        State(Stage.RECEIVED, initial=True, action=AsyncLocalCaptureSteps.prepare),
        State(Stage.CAPTURING, action=AsyncLocalCaptureSteps.capture_in_transaction),
        State(Stage.CAPTURED, final=True),
        State(Stage.DECLINED, final=True, failure=True),
    ],
    transitions=ROWS,
)


class Gateway:
    """Both capture machines' steps. Each call is logged in `calls` (shared between the
    workers of a test) as (key, worker), sets `started`, then takes `seconds`."""

    def __init__(
        self,
        worker: str,
        calls: list[tuple[str, str]],
        *,
        seconds: float = 0.0,
        uow: AsyncSqlUnitOfWork | None = None,
    ) -> None:
        self.worker = worker
        self.calls = calls
        self.seconds = seconds
        self.uow = uow
        self.started = asyncio.Event()
        self.error: Exception | None = None
        self.answer: Captured | Declined | Rollback | None = None

    async def prepare(self, context: dict[str, Any]) -> Ready:
        await asyncio.sleep(0)
        return Ready()

    async def capture(self, context: dict[str, Any], key: str) -> Captured | Declined:
        self.calls.append((key, self.worker))
        context["gateway_ref"] = f"ref-{len(self.calls)}"
        self.started.set()
        await asyncio.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        if isinstance(self.answer, Rollback):
            raise self.answer
        return self.answer or Captured(key, self.worker)

    async def capture_in_transaction(self, context: dict[str, Any]) -> Captured | Declined:
        assert self.uow is not None
        await add_message(self.uow, f"charge-{context['payment']}")  # the step's transaction
        return await self.capture(context, "local")


async def add_message(uow: AsyncSqlUnitOfWork, key: str) -> None:
    """Write an outbox row in the unit of work's transaction (a local action's own write)."""
    now = utc_now()
    await uow.session.execute(
        insert(TABLES.outbox).values(
            event_id=new_id(),
            topic="payments",
            key=key,
            value=b"{}",
            headers=[],
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


@dataclass(frozen=True)
class Recorded:
    """The approval was recorded."""


@dataclass(frozen=True)
class Refused:
    """The approval was refused after the step had written: its writes are undone."""

    reason: str


class ApprovalSteps(Protocol):
    """What the approval machine's action calls."""

    async def record(self, context: dict[str, Any]) -> Recorded | Refused: ...


async def small_enough(run: Run[Any]) -> bool:
    """The async guard: amounts under 100 may be approved."""
    await asyncio.sleep(0)
    return bool(run.context.get("amount", 0) < 100)


approval: Machine[str, ApprovalSteps] = Machine(
    "approval",
    steps=ApprovalSteps,
    states=[
        State("waiting", initial=True),
        State("recording", action=ApprovalSteps.record),
        State("done", final=True),
        State("refused", final=True, failure=True),
    ],
    transitions=[
        ("waiting", "approve", "recording", small_enough),
        ("recording", Recorded, "done"),
        ("recording", Refused, "refused"),
    ],
)


class Recorder:
    """Writes an outbox row in the step, then records or refuses (rolling the write back)."""

    def __init__(self, uow: AsyncSqlUnitOfWork, *, refuse: bool = False) -> None:
        self.uow = uow
        self.refuse = refuse

    async def record(self, context: dict[str, Any]) -> Recorded | Refused:
        await add_message(self.uow, f"approval-{context['amount']}")
        context["recorded"] = True
        if self.refuse:
            raise Rollback(Refused("over the limit"))
        return Recorded()
