"""The flow's dependency direction: adapters never import the flow; the flow's core no adapter."""

from __future__ import annotations

import ast
from pathlib import Path

from sqlalchemy import Engine, select, update

import adapters
import userstatus

WIRING = {"app.py", "demo.py", "cli.py", "sql.py", "fakes.py"}
"""The flow's modules that wire adapters together (the composition root) and its own
adapters (its users on SQLAlchemy and in memory)."""


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


class TestLayers:
    def test_adapters_do_not_import_the_flow(self) -> None:
        """adapters/ implements ports for any flow: it never imports userstatus."""
        offenders = [
            f"{path.relative_to(Path(adapters.__file__).parent)}: {name}"
            for path in Path(adapters.__file__).parent.rglob("*.py")
            for name in imports(path)
            if name.split(".")[0] == "userstatus"
        ]
        assert offenders == []

    def test_flow_core_uses_only_ports(self) -> None:
        """The domain, machines, manager, publisher, orchestrator and relay import no adapter."""
        forbidden = ("adapters", "sqlalchemy", "kafka", "tenacity")
        offenders = [
            f"{path.name}: {name}"
            for path in Path(userstatus.__file__).parent.glob("*.py")
            if path.name not in WIRING
            for name in imports(path)
            if name.split(".")[0] in forbidden
        ]
        assert offenders == []


def test_runs_stored_before_the_delivery_outcomes_moved_still_load(engine: Engine) -> None:
    """Published & co. moved from userstatus.outcomes to fsm.outbox: a run whose history
    holds the old type tag loads (the flow machine's aliases) and reads the same outcome."""
    from adapters.memory import FakePublisher
    from adapters.sqlalchemy import TABLES
    from fsm.outbox import Published
    from fsm.persistence import PersistentMachine
    from userstatus.domain import UpdateUserStatusPayload, UserStatus
    from userstatus.flow import FlowState, machine
    from userstatus.manager import UserStatusManager
    from userstatus.orchestrator import UserStatusUpdateOrchestrator
    from userstatus.ports import CurrentUsers
    from userstatus.publisher import UserUpdatePublisher
    from userstatus.sql import FlowSqlUnitOfWork

    uow = FlowSqlUnitOfWork(engine)
    with uow:
        uow.users.create(1, "active")
    orchestrator = UserStatusUpdateOrchestrator(
        UserStatusManager(CurrentUsers(uow)), UserUpdatePublisher(FakePublisher()), uow
    )
    run = orchestrator.perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
    assert run.state == FlowState.PUBLISHED
    history = TABLES.history
    with engine.begin() as connection:
        (outcome,) = connection.execute(
            select(history.c.outcome).where(history.c.run_id == run.id, history.c.seq == 2)
        ).one()
        assert outcome["$t"] == "fsm.outbox.Published"
        outcome["$t"] = "userstatus.outcomes.Published"
        connection.execute(
            update(history)
            .where(history.c.run_id == run.id, history.c.seq == 2)
            .values(outcome=outcome)
        )
    loaded = PersistentMachine(machine, uow, types=[UserStatus]).load(run.id)
    assert loaded.outcome == Published(run.outcome.event_id)  # type: ignore[attr-defined]
