"""A definition changed while runs are in flight: aliases load and advance the stored runs."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import Engine, text

from adapters.memory import InMemoryUnitOfWork
from adapters.sqlalchemy import SqlUnitOfWork
from fsm import DecodeError, FSMError, Machine, PersistentMachine, State
from fsm.codec import Codec
from fsm.ports import UnitOfWork
from tests.persistence import payments_new, payments_old
from tests.persistence.payments_new import ALIASES, OLD, Captured, CaptureFailed, build


def stored(uow: UnitOfWork) -> tuple[str, str]:
    """With the old definition: a run stopped in capture_failed (r1), one in captured (r2)."""
    old = PersistentMachine(payments_old.machine, uow)
    old.start({"decline": "card expired"}, run_id="r1")
    old.start({"amount": "12.50"}, run_id="r2")
    return "r1", "r2"


def raw(engine: Engine, sql: str) -> list[tuple[object, ...]]:
    """Rows as plain SQL reads them."""
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql))]


END = ("b", "end", "z")
"""The last row of every machine `hop` builds here."""


def hop(*rows: tuple[str, str, str]) -> Machine[str]:
    """Machine 'm' with `rows`, from state a (initial) to z (final)."""
    between = sorted({name for row in rows for name in (row[0], row[2])} - {"a", "z"})
    states = [State("a", initial=True), *map(State, between), State("z", final=True)]
    return Machine("m", states=states, transitions=list(rows))


class TestRenamedState:
    """A run stored in a state that was renamed loads in the state it became, and advances."""

    def test_loads_in_the_new_state(self, engine: Engine) -> None:
        """capture_failed reads as payment_failed; its outcome as the renamed class."""
        uow = SqlUnitOfWork(engine)
        failed, _ = stored(uow)
        run = PersistentMachine(build(), uow).load(failed)
        assert run.state == "payment_failed"
        assert list(run.history) == [
            ("capturing", CaptureFailed, "payment_failed", CaptureFailed("card expired"))
        ]

    def test_advances_writing_the_new_names(self, engine: Engine) -> None:
        """The next steps write payment_failed and CaptureFailed; the old row stays as it was."""
        uow = SqlUnitOfWork(engine)
        failed, _ = stored(uow)
        runs = PersistentMachine(build(), uow)
        assert runs.send(failed, "retry").state == "payment_failed"  # declines again
        assert runs.send(failed, "give_up").state == "abandoned"
        assert raw(engine, "select state from runs where id = 'r1'") == [("abandoned",)]
        assert raw(
            engine,
            "select source, trigger, target from run_history where run_id = 'r1' order by seq",
        ) == [
            ("capturing", "Failed", "capture_failed"),
            ("payment_failed", "retry", "capturing"),
            ("capturing", "CaptureFailed", "payment_failed"),
            ("payment_failed", "give_up", "abandoned"),
        ]
        with uow:
            outcomes = [entry.outcome for entry in uow.runs.history(failed)]
        assert outcomes[0] == {"$t": f"{OLD}.Failed", "v": {"reason": "card expired"}}
        assert outcomes[2] == {
            "$t": "tests.persistence.payments_new.CaptureFailed",
            "v": {"reason": "card expired"},
        }

    def test_sweeper_finds_runs_under_the_former_name(self) -> None:
        """`resumable_states` lists a state's aliases after its label."""
        machine: Machine[str] = Machine(
            "m",
            states=[
                State(
                    "working",
                    initial=True,
                    action=lambda c: "done",
                    outcomes=("done",),
                    aliases=("busy",),
                ),
                State("finished", final=True),
            ],
            transitions=[("working", "done", "finished")],
        )
        assert PersistentMachine(machine, InMemoryUnitOfWork()).resumable_states == (
            "working",
            "busy",
        )


class TestMovedOutcome:
    """An outcome class moved to another module (same name) loads through its former tag."""

    def test_loads_and_advances(self, engine: Engine) -> None:
        """payments_old.Captured reads as payments_new.Captured; the run then settles."""
        uow = SqlUnitOfWork(engine)
        _, captured = stored(uow)
        runs = PersistentMachine(build(), uow)
        run = runs.load(captured)
        assert run.outcome == Captured(Decimal("12.50"))
        assert type(run.outcome) is Captured
        assert runs.send(captured, "settle").state == "settled"
        assert raw(engine, "select state from runs where id = 'r2'") == [("settled",)]


class TestUnaliased:
    """A rename without its alias fails naming the stored name, the run and the fix."""

    def test_renamed_state(self) -> None:
        """The stored state is unknown: add it to the state it became."""
        uow = InMemoryUnitOfWork()
        failed, _ = stored(uow)
        with pytest.raises(DecodeError) as caught:
            PersistentMachine(payments_new.unaliased, uow).load(failed)
        assert str(caught.value) == (
            "cannot restore run r1 of machine 'payment': state: unknown state 'capture_failed'; "
            "the machine's states: abandoned, captured, capturing, payment_failed, settled; "
            "if it was renamed, add aliases=('capture_failed',) to the state it became"
        )
        assert caught.value.run_id == "r1"

    def test_renamed_trigger(self) -> None:
        """The stored trigger label has no row: alias it to the trigger it became."""
        uow = InMemoryUnitOfWork()
        failed, _ = stored(uow)
        aliases = {old: new for old, new in ALIASES.items() if old != "Failed"}
        with pytest.raises(DecodeError) as caught:
            PersistentMachine(build(aliases=aliases), uow).load(failed)
        assert caught.value.reason == (
            "history step 1: no row capturing --Failed--> capture_failed in the table; "
            "if 'Failed' was renamed, add aliases={'Failed': CaptureFailed} to the Machine"
        )

    def test_renamed_trigger_with_two_rows_now(self) -> None:
        """Each trigger now leading between the stored states is offered as the alias."""
        uow = InMemoryUnitOfWork()
        PersistentMachine(hop(("a", "go", "b"), END), uow).start(run_id="r1").send("go")
        runs = PersistentMachine(hop(("a", "walk", "b"), ("a", "run", "b"), END), uow)
        with pytest.raises(DecodeError) as caught:
            runs.load("r1")
        assert caught.value.reason == (
            "history step 1: no row a --go--> b in the table; "
            "if 'go' was renamed, add aliases={'go': 'walk' or 'run'} to the Machine"
        )

    def test_no_row_between_the_stored_states_now(self) -> None:
        """With no row left from the stored source to the target, an alias cannot help."""
        uow = InMemoryUnitOfWork()
        PersistentMachine(hop(("a", "go", "b"), END), uow).start(run_id="r1").send("go")
        with pytest.raises(DecodeError) as caught:
            PersistentMachine(hop(("a", "skip", "c"), ("c", "on", "b"), END), uow).load("r1")
        assert caught.value.reason == (
            "history step 1: no row a --go--> b in the table; no row leads from 'a' to 'b' now"
        )

    def test_moved_type(self) -> None:
        """The stored type tag is unknown: alias it to the type it became."""
        uow = InMemoryUnitOfWork()
        _, captured = stored(uow)
        with pytest.raises(DecodeError) as caught:
            PersistentMachine(payments_new.unaliased, uow).load(captured)
        assert caught.value.reason == (
            f"history step 1 outcome: unknown type tag '{OLD}.Captured'; this machine knows "
            "tests.persistence.payments_new.CaptureFailed, tests.persistence.payments_new.Captured "
            "(register the type with types=[...] if it is yours; if it was moved or renamed, "
            f"add aliases={{'{OLD}.Captured': TheType}} to the Machine)"
        )


class TestCodecAliases:
    """The codec reads a former tag and writes the current one."""

    def test_reads_former_tag_writes_current(self) -> None:
        """A value stored under the old tag comes back as the new type; it is written anew."""
        codec = Codec(aliases={f"{OLD}.Captured": Captured})
        amount = {"$t": "decimal", "v": "1.50"}
        data = {"$t": f"{OLD}.Captured", "v": {"amount": amount}}
        value = codec.decode(data, machine="m", run_id="r1")
        assert value == Captured(Decimal("1.50"))
        assert codec.encode(value)["$t"] == "tests.persistence.payments_new.Captured"

    def test_alias_that_is_a_current_tag(self) -> None:
        """An alias naming a type the codec knows under that tag now is refused."""
        with pytest.raises(FSMError) as caught:
            Codec([Captured], aliases={"tests.persistence.payments_new.Captured": CaptureFailed})
        assert str(caught.value) == (
            "alias 'tests.persistence.payments_new.Captured' of "
            "tests.persistence.payments_new.CaptureFailed is the stored name of "
            "tests.persistence.payments_new.Captured now; an alias must be a name no type has today"
        )
