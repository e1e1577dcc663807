"""A step is all or nothing: a failure after any of its writes leaves no trace of it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import Engine, func, select

from adapters.sqlalchemy import TABLES
from fsm import CallbackError
from tests.persistence.persist_support import Faults, InjectedFault, Step, persistent
from userstatus.sql import FlowSqlUnitOfWork, users

POINTS = ["status updated", "outbox row added", "step written"]
"""The writes of the update step, in the order they happen."""


@dataclass(frozen=True)
class Snapshot:
    """What another connection sees of the step's tables."""

    run: tuple[str, int]
    history: int
    user: tuple[str, int]
    outbox: int


def snapshot(engine: Engine, run_id: str) -> Snapshot:
    """Read every table the step writes, on a fresh connection."""
    with engine.connect() as connection:
        run = connection.execute(
            select(TABLES.runs.c.state, TABLES.runs.c.version).where(TABLES.runs.c.id == run_id)
        ).one()
        user = connection.execute(select(users.c.status, users.c.version)).one()
        history = connection.execute(select(func.count()).select_from(TABLES.history)).scalar_one()
        outbox = connection.execute(select(func.count()).select_from(TABLES.outbox)).scalar_one()
    return Snapshot((run[0], run[1]), history, (user[0], user[1]), outbox)


def stopped_before_update(engine: Engine) -> str:
    """A run stored in UPDATING (version 2) whose update action has not committed."""
    with FlowSqlUnitOfWork(engine) as uow:
        uow.users.create(7, "active")
    faults = Faults({"status updated"})
    run = persistent(engine, faults=faults).start({"user_id": 7, "status": "suspended"})
    with pytest.raises(CallbackError):
        run.send("go")
    assert run.state is Step.UPDATING
    return run.id


class TestFailureAfterEachWrite:
    """Inject a failure after each write of the update step; nothing partial remains."""

    @pytest.mark.parametrize("point", POINTS)
    def test_nothing_partial_is_visible(self, engine: Engine, point: str) -> None:
        """The step's writes all roll back; the run, user and outbox look untouched."""
        run_id = stopped_before_update(engine)
        before = snapshot(engine, run_id)
        assert before == Snapshot(("updating", 2), 1, ("active", 1), 0)
        run = persistent(engine, faults=Faults({point})).load(run_id)
        with pytest.raises(InjectedFault, match=f"after {point}"):
            try:
                run.advance()
            except CallbackError as error:  # the action's own writes fail inside the action
                raise error.error from error
        assert snapshot(engine, run_id) == before
        assert (run.state, run.version, run.context.get("events")) == (Step.UPDATING, 2, None)

    @pytest.mark.parametrize("point", POINTS)
    def test_retry_after_the_failure_applies_once(self, engine: Engine, point: str) -> None:
        """Resuming after the failure completes the run with one update and one event."""
        run_id = stopped_before_update(engine)
        with pytest.raises((InjectedFault, CallbackError)):
            persistent(engine, faults=Faults({point})).resume(run_id)
        done = persistent(engine).resume(run_id)
        assert done.state is Step.DONE
        assert snapshot(engine, run_id) == Snapshot(("done", 4), 3, ("suspended", 2), 1)
