"""A small user-update machine on the SQLAlchemy adapters, with faults the tests can arm."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from adapters.sqlalchemy import SqlRunStore
from fsm import Machine, PersistentMachine, State
from fsm.outbox import OutboxMessage
from fsm.ports import HistoryRecord
from tests.clock import Clock
from userstatus.sql import FlowSqlUnitOfWork

TOPIC = "UserUpdateTopic"


class Step(Enum):
    """The states of the test machine."""

    WAITING = "waiting"
    UPDATING = "updating"
    AUDITING = "auditing"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Change:
    """Nested in an outcome, to show nested dataclasses round-trip."""

    old: str
    new: str


@dataclass(frozen=True)
class Updated:
    """The user's status changed and its event is in the outbox."""

    user_id: int
    change: Change
    version: int
    at: datetime
    fee: Decimal


@dataclass(frozen=True)
class NoUser:
    """No user has that id."""

    user_id: int


@dataclass(frozen=True)
class Audited:
    """The audit step ran."""

    count: int


class InjectedFault(Exception):
    """Raised where a test armed a fault."""


@dataclass
class Faults:
    """Named points where the machine's actions or the store fail on purpose."""

    armed: set[str] = field(default_factory=set)

    def hit(self, point: str) -> None:
        if point in self.armed:
            raise InjectedFault(f"fault injected after {point}")


class FaultyRunStore(SqlRunStore):
    """The real run store, failing right after a write when a test armed that point."""

    def __init__(self, real: SqlRunStore, faults: Faults) -> None:
        self.__dict__.update(real.__dict__)
        self._faults = faults

    def write(self, record: Any, entry: HistoryRecord) -> int:
        version = super().write(record, entry)  # one statement on PostgreSQL, two elsewhere
        self._faults.hit("step written")
        return version


class FaultyUnitOfWork(FlowSqlUnitOfWork):
    """The real unit of work whose run store fails at armed points."""

    def __init__(self, *args: Any, faults: Faults, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.faults = faults

    @property
    def runs(self) -> SqlRunStore:
        return FaultyRunStore(super().runs, self.faults)


def build_machine(uow: FlowSqlUnitOfWork, faults: Faults | None = None) -> Machine[Step]:
    """WAITING --go--> UPDATING (update the user, add the event) --> AUDITING --> DONE."""
    faults = faults if faults is not None else Faults()

    def update_user(context: dict[str, Any]) -> Updated | NoUser:
        user = uow.users.get(context["user_id"])
        if user is None:
            return NoUser(context["user_id"])
        new = uow.users.update_status(user.id, context["status"], expected_version=user.version)
        faults.hit("status updated")
        uow.outbox.add(
            OutboxMessage(
                event_id=f"user-{user.id}-v{new.version}",
                topic=TOPIC,
                key=str(user.id),
                value=f"{user.status}->{new.status}".encode(),
                headers=(("event-type", b"UserStatusChanged"),),
                run_id=context.get("run_id"),
            )
        )
        faults.hit("outbox row added")
        context["events"] = context.get("events", 0) + 1
        return Updated(
            user.id, Change(user.status, new.status), new.version, uow.clock(), Decimal("0.10")
        )

    def audit(context: dict[str, Any]) -> Audited:
        faults.hit("audit")
        return Audited(context.get("events", 0))

    return Machine(
        "user-update",
        states=[
            State(Step.WAITING, initial=True),
            State(Step.UPDATING, action=update_user),
            State(Step.AUDITING, action=audit),
            State(Step.DONE, final=True),
            State(Step.FAILED, final=True, failure=True),
        ],
        transitions=[
            (Step.WAITING, "go", Step.UPDATING),
            (Step.UPDATING, Updated, Step.AUDITING),
            (Step.UPDATING, NoUser, Step.FAILED),
            (Step.AUDITING, Audited, Step.DONE),
        ],
    )


def persistent(
    engine: Any, *, clock: Clock | None = None, faults: Faults | None = None
) -> PersistentMachine[Step]:
    """A PersistentMachine of the test machine on its own unit of work."""
    clock = clock if clock is not None else Clock()
    faults = faults if faults is not None else Faults()
    uow = FaultyUnitOfWork(engine, clock=clock, faults=faults)
    return PersistentMachine(build_machine(uow, faults), uow, clock=clock)
