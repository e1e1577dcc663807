"""Stored state labels: Enum states by value, and runs stored under the older names still load."""

from __future__ import annotations

from collections.abc import Hashable
from enum import Enum, IntEnum

import pytest
from sqlalchemy import Engine, text

from adapters.memory import InMemoryUnitOfWork
from fsm import CallbackError, Machine, PersistentMachine, State
from fsm.labels import former_labels, trigger_label
from fsm.persistence import state_label
from fsm.ports import RunRecord
from tests.persistence.persist_support import Faults, Step, Updated, persistent
from userstatus.sql import FlowSqlUnitOfWork


class Level(IntEnum):
    """An Enum of int values."""

    HIGH = 2


class Odd(Enum):
    """An Enum whose values are neither str nor int."""

    PAIR = (1, 2)
    EMPTY = ""
    YES = True


class Swap(Enum):
    """Each member's value is the other member's name, lower-cased."""

    GO = "stop"
    STOP = "go"


def raw(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    """Rows as plain SQL reads them, on a fresh connection."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


def name_spelled(engine: Engine) -> str:
    """A run stopped in AUDITING whose rows hold the Enum names, as older versions stored them."""
    with FlowSqlUnitOfWork(engine) as uow:
        uow.users.create(7, "active")
    run = persistent(engine, faults=Faults({"audit"})).start({"user_id": 7, "status": "closed"})
    with pytest.raises(CallbackError):
        run.send("go")
    with engine.begin() as connection:
        connection.execute(text("update runs set state = upper(state)"))
        connection.execute(
            text("update run_history set source = upper(source), target = upper(target)")
        )
    return run.id


def loaded_state(machine: Machine[Hashable], label: str) -> Hashable:
    """The state a run stored under `label` (with no history) loads in."""
    uow = InMemoryUnitOfWork()
    uow.runs.create(RunRecord("r1", machine.name, label, {}, 1))
    return PersistentMachine(machine, uow).load("r1").state


class TestStateLabel:
    """How each kind of state is spelled in the store."""

    @pytest.mark.parametrize(
        ("state", "label"),
        [
            ("idle", "idle"),
            (Step.WAITING, "waiting"),
            (Level.HIGH, "HIGH"),
            (Odd.PAIR, "PAIR"),
            (Odd.EMPTY, "EMPTY"),
            (Odd.YES, "YES"),
            (3, "3"),
        ],
    )
    def test_label(self, state: Hashable, label: str) -> None:
        """Strings as is; Enum members by a non-empty str value, else by name; else repr."""
        assert state_label(state) == label


class TestTriggerLabel:
    """How each kind of trigger is spelled in the history."""

    @pytest.mark.parametrize(
        ("trigger", "label"),
        [("go", "go"), (Swap.GO, "Swap.GO"), (Updated, "Updated"), ((1, 2), "(1, 2)")],
    )
    def test_label(self, trigger: Hashable, label: str) -> None:
        """Strings as is, Enum members and classes by qualified name, the rest by repr."""
        assert trigger_label(trigger) == label


class TestFormerLabels:
    """The labels a state's runs may have been stored under before."""

    def test_aliases_then_the_enum_name(self) -> None:
        """An Enum state stored by value was stored by its name before, after its aliases."""
        assert former_labels(State(Step.WAITING, aliases=("queued",))) == ("queued", "WAITING")

    def test_a_state_stored_by_name_has_no_other(self) -> None:
        """An Enum state stored by its name (an IntEnum's) was never stored otherwise."""
        assert former_labels(State(Level.HIGH)) == ()


class TestStoredByValue:
    """Plain SQL reads the same spelling as the API and the docs."""

    def test_run_and_history_hold_the_values(self, engine: Engine) -> None:
        """A finished run's state and its history's sources and targets are Enum values."""
        with FlowSqlUnitOfWork(engine) as uow:
            uow.users.create(7, "active")
        run = persistent(engine).start({"user_id": 7, "status": "closed"}, run_id="r1")
        run.send("go")
        assert raw(engine, "select state from runs") == [("done",)]
        assert raw(engine, "select source, target from run_history order by seq") == [
            ("waiting", "updating"),
            ("updating", "auditing"),
            ("auditing", "done"),
        ]


class TestStoredByName:
    """Runs stored under the Enum names before the change load and advance."""

    def test_loads(self, engine: Engine) -> None:
        """The run and its history read back as the same states."""
        run_id = name_spelled(engine)
        assert raw(engine, "select state from runs") == [("AUDITING",)]
        run = persistent(engine).load(run_id)
        assert run.state is Step.AUDITING
        assert [(h.source, h.trigger, h.target) for h in run.history] == [
            (Step.WAITING, "go", Step.UPDATING),
            (Step.UPDATING, Updated, Step.AUDITING),
        ]

    def test_advances_and_is_stored_by_value(self, engine: Engine) -> None:
        """Resuming finishes the run; its new rows use the values, the old ones stay."""
        run_id = name_spelled(engine)
        assert persistent(engine).resume(run_id).state is Step.DONE
        assert raw(engine, "select state from runs") == [("done",)]
        targets = raw(engine, "select target from run_history order by seq")
        assert targets == [("UPDATING",), ("AUDITING",), ("done",)]

    def test_sweeper_finds_it(self, engine: Engine) -> None:
        """`resumable_states` holds the older spelling too, so `find` still sees the run."""
        run_id = name_spelled(engine)
        machine = persistent(engine)
        with FlowSqlUnitOfWork(engine) as uow:
            found = uow.runs.find(machine.machine.name, states=machine.resumable_states)
        assert found == [run_id]


class TestAliases:
    """An older name is read only where it cannot mean another state."""

    def test_label_wins_over_an_older_name(self) -> None:
        """'go' is the label of Swap.STOP, not the older name of Swap.GO."""
        machine: Machine[Hashable] = Machine(
            "swap",
            states=[State(Swap.GO, initial=True), State(Swap.STOP, final=True)],
            transitions=[(Swap.GO, "halt", Swap.STOP)],
        )
        assert loaded_state(machine, "go") is Swap.STOP
        assert loaded_state(machine, "stop") is Swap.GO
        assert loaded_state(machine, "GO") is Swap.GO

    def test_explicit_alias_beside_the_older_name(self) -> None:
        """An Enum state renamed by value loads from its alias and from its member name."""
        machine: Machine[Hashable] = Machine(
            "renamed",
            states=[
                State(Swap.GO, initial=True, aliases=("start",)),
                State(Swap.STOP, final=True),
            ],
            transitions=[(Swap.GO, "halt", Swap.STOP)],
        )
        assert loaded_state(machine, "start") is Swap.GO
        assert loaded_state(machine, "GO") is Swap.GO
        assert loaded_state(machine, "stop") is Swap.GO
