"""Rollback outcomes: an action undoes its step's writes and the table still takes a row."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, func, select

from adapters.sqlalchemy import TABLES
from fsm import Machine, PersistentMachine, Rollback, State
from userstatus.sql import FlowSqlUnitOfWork, users


@dataclass(frozen=True)
class Booked:
    """The booking went through."""


@dataclass(frozen=True)
class Refused:
    """The booking was refused after the step had written: its writes are undone."""

    reason: str


class BookingSteps(Protocol):
    """What the booking machine's action calls."""

    def book(self, context: dict[str, Any]) -> Booked | Refused: ...


def booking(name: str, *, waits: bool) -> Machine[str]:
    """new --book--> booked | refused; with `waits`, a `waiting --go-->` step comes first."""
    first = [State("waiting", initial=True)] if waits else []
    return Machine(
        name,
        steps=BookingSteps,
        states=[
            *first,
            State("new", initial=not waits, action=BookingSteps.book),
            State("booked", final=True),
            State("refused", final=True, failure=True),
        ],
        transitions=[
            *([("waiting", "go", "new")] if waits else []),
            ("new", Booked, "booked"),
            ("new", Refused, "refused"),
        ],
    )


at_once = booking("booking", waits=False)
later = booking("booking-later", waits=True)


class Service:
    """Writes a user in the step, then books or refuses (rolling the write back)."""

    def __init__(self, uow: FlowSqlUnitOfWork, *, refuse: bool) -> None:
        self.uow = uow
        self.refuse = refuse

    def book(self, context: dict[str, Any]) -> Booked | Refused:
        self.uow.users.create(context["user_id"], "active")
        context["note"] = "written before the refusal"
        if self.refuse:
            raise Rollback(Refused("over the limit"))
        return Booked()


def runs_of(engine: Engine, machine: Machine[str], *, refuse: bool) -> PersistentMachine[str]:
    uow = FlowSqlUnitOfWork(engine)
    return PersistentMachine(machine, uow, steps=Service(uow, refuse=refuse))


def user_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(select(users.c.id).order_by(users.c.id)).scalars())


def stored_runs(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(TABLES.runs)).scalar_one())


class TestRollbackOutcome:
    def test_the_first_step_is_undone_and_its_row_taken(self, engine: Engine) -> None:
        """In one start: the action's write is gone, the run is stored in the outcome's state."""
        run = runs_of(engine, at_once, refuse=True).start({"user_id": 7}, run_id="r1")
        assert (run.state, run.outcome) == ("refused", Refused("over the limit"))
        assert user_ids(engine) == [] and stored_runs(engine) == 1
        with FlowSqlUnitOfWork(engine) as uow:
            assert [h.target for h in uow.runs.history("r1")] == ["refused"]
            assert uow.runs.load("r1").context == {"user_id": 7}
        assert run.context == {"user_id": 7}  # the in-memory context is the committed one

    def test_the_callers_effect_survives_the_rollback(self, engine: Engine) -> None:
        """start(effect=) is part of the run's creation: done again after the rollback."""

        def effect(uow: Any) -> None:
            uow.users.create(99, "active")

        runs = runs_of(engine, at_once, refuse=True)
        assert runs.start({"user_id": 7}, run_id="r1", effect=effect).state == "refused"
        assert user_ids(engine) == [99]

    def test_a_later_step_is_undone_and_earlier_ones_stay(self, engine: Engine) -> None:
        """A rollback in a step after the first leaves the earlier committed steps alone."""
        runs = runs_of(engine, later, refuse=True)
        runs.start({"user_id": 7}, run_id="r1")
        run = runs.send("r1", "go")
        assert run.state == "refused" and user_ids(engine) == []
        assert run.context == {"user_id": 7}
        with FlowSqlUnitOfWork(engine) as uow:
            assert [h.target for h in uow.runs.history("r1")] == ["new", "refused"]

    def test_without_a_rollback_the_write_commits(self, engine: Engine) -> None:
        """The same action returning normally keeps its write."""
        run = runs_of(engine, at_once, refuse=False).start({"user_id": 7})
        assert run.state == "booked" and user_ids(engine) == [7]

    def test_an_in_memory_run_takes_the_row(self) -> None:
        """With no store to undo, a Rollback's outcome simply picks the row."""

        class Refusing:
            def book(self, context: dict[str, Any]) -> Booked | Refused:
                raise Rollback(Refused("no"))

        assert at_once.start({}, steps=Refusing()).state == "refused"
