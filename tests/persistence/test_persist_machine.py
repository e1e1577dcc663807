"""PersistentMachine: runs stored step by step, resumed elsewhere, refused when stale."""

from __future__ import annotations

import gc
import weakref
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, Table, func, select, text

from adapters.memory import InMemoryRunStore, InMemoryUnitOfWork
from adapters.sqlalchemy import TABLES
from fsm import (
    CallbackError,
    ConcurrencyError,
    DecodeError,
    EncodeError,
    FSMError,
    InvalidEvent,
    Machine,
    PersistentMachine,
    RestoreError,
    RunExists,
    RunNotFound,
    State,
)
from fsm.codec import type_tag
from fsm.examples import ping
from fsm.hooks import StepCommitted
from fsm.ports import HistoryRecord, RunRecord
from tests.clock import T0, Clock
from tests.persistence.persist_support import (
    Audited,
    Change,
    Faults,
    InjectedFault,
    NoUser,
    Step,
    Updated,
    persistent,
)
from userstatus.sql import FlowSqlUnitOfWork, users


def rows(engine: Engine, table: Table) -> int:
    """Committed rows in a table, read on a fresh connection."""
    with engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(table)).scalar_one()


def with_user(engine: Engine, user_id: int = 7, status: str = "active") -> None:
    """Store a user."""
    with FlowSqlUnitOfWork(engine) as uow:
        uow.users.create(user_id, status)


class TestStartAndResume:
    """A run is stored when it starts and continues from the store in a new machine."""

    def test_start_stores_the_waiting_run(self, engine: Engine) -> None:
        """A run that waits for an event is stored at version 1 with no history."""
        run = persistent(engine).start({"user_id": 7, "status": "closed"}, run_id="r1")
        assert (run.state, run.version) == (Step.WAITING, 1)
        with FlowSqlUnitOfWork(engine) as uow:
            stored = uow.runs.load("r1")
        assert (stored.state, stored.version, stored.context) == (
            "waiting",
            1,
            {"user_id": 7, "status": "closed"},
        )

    def test_repr_names_the_machine_the_run_its_state_and_version(self, engine: Engine) -> None:
        """What a log line or a debugger shows of the machine and of a stored run."""
        runs = persistent(engine)
        run = runs.start({"user_id": 7, "status": "closed"}, run_id="r1")
        assert repr(runs) == "<PersistentMachine 'user-update'>"
        assert repr(run) == "<PersistentRun r1 of 'user-update' in Step.WAITING v1>"

    def test_reload_reads_the_store_again(self, engine: Engine) -> None:
        """A handle left behind catches up with reload: its own run, or the one named."""
        with_user(engine)
        runs = persistent(engine)
        behind = runs.start({"user_id": 7, "status": "closed"}, run_id="r1")
        runs.start({"user_id": 7, "status": "closed"}, run_id="r2")
        runs.send("r1", "go")
        assert behind.reload().state is Step.DONE
        assert (behind.reload("r2").id, behind.state) == ("r2", Step.WAITING)

    def test_each_step_commits_and_history_round_trips(self, engine: Engine) -> None:
        """Three steps: three history rows, version 4, outcomes back as dataclasses."""
        with_user(engine)
        run = persistent(engine).start({"user_id": 7, "status": "suspended"}, run_id="r1")
        run.send("go")
        assert (run.state, run.finished, run.version) == (Step.DONE, True, 4)
        again = persistent(engine).load("r1")  # a new machine, engine pool, codec
        assert again.history == run.history
        assert again.history[1].outcome == Updated(
            7,
            Change("active", "suspended"),
            2,
            T0,
            again.history[1].outcome.fee,  # type: ignore[attr-defined]
        )
        assert again.history[2].outcome == Audited(1)
        assert again.context == {"user_id": 7, "status": "suspended", "events": 1}
        with engine.connect() as connection:
            triggers = connection.execute(
                select(TABLES.history.c.trigger).order_by(TABLES.history.c.seq)
            ).scalars()
            assert list(triggers) == ["go", "Updated", "Audited"]

    def test_resume_after_a_failed_step(self, engine: Engine) -> None:
        """Step 2 fails: step 1 stays committed; another machine resumes from there."""
        with_user(engine)
        faults = Faults({"audit"})
        run = persistent(engine, faults=faults).start({"user_id": 7, "status": "closed"})
        with pytest.raises(CallbackError, match="action audit raised InjectedFault") as caught:
            run.send("go")
        assert isinstance(caught.value.__cause__, InjectedFault)
        assert (run.state, run.version) == (Step.AUDITING, 3)
        resumed = persistent(engine).resume(run.id)
        assert (resumed.state, resumed.version) == (Step.DONE, 4)
        assert rows(engine, TABLES.outbox) == 1  # the update step did not run again

    def test_resume_of_a_waiting_run_does_nothing(self, engine: Engine) -> None:
        """Resuming a run that waits for an event changes nothing."""
        run = persistent(engine).start({"user_id": 7, "status": "closed"})
        assert persistent(engine).resume(run.id).version == 1

    def test_send_by_id(self, engine: Engine) -> None:
        """send(run_id, event) loads, sends and commits."""
        run = persistent(engine).start({"user_id": 8, "status": "closed"})
        sent = persistent(engine).send(run.id, "go")
        assert sent.state is Step.FAILED and sent.outcome == NoUser(8)

    def test_action_in_the_first_step(self, engine: Engine) -> None:
        """A machine whose initial state acts stores the run with its first step, at once."""
        uow = FlowSqlUnitOfWork(engine)

        def act(context: dict[str, Any]) -> Audited:
            uow.users.create(context["user_id"], "active")
            return Audited(1)

        machine = Machine(
            "acts",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Audited, "z")],
        )
        run = PersistentMachine(machine, uow).start({"user_id": 3}, run_id="r1")
        assert (run.state, run.version) == ("z", 2)
        assert rows(engine, users) == rows(engine, TABLES.history) == 1

    def test_failed_first_step_stores_nothing(self, engine: Engine) -> None:
        """If the first step fails, the run's creation rolls back with it."""
        uow = FlowSqlUnitOfWork(engine)

        def act(context: dict[str, Any]) -> Audited:
            uow.users.create(1, "active")
            raise RuntimeError("no")

        machine = Machine(
            "acts",
            states=[State("a", initial=True, action=act), State("z", final=True)],
            transitions=[("a", Audited, "z")],
        )
        with pytest.raises(CallbackError, match="RuntimeError"):
            PersistentMachine(machine, uow).start({}, run_id="r1")
        assert rows(engine, TABLES.runs) == rows(engine, users) == 0

    def test_unknown_and_duplicate_ids(self, engine: Engine) -> None:
        """Resuming an unknown id and starting an existing one are clear errors."""
        machine = persistent(engine)
        machine.start({}, run_id="r1")
        with pytest.raises(RunNotFound, match="'r2'"):
            machine.resume("r2")
        with pytest.raises(RunExists, match="'r1'"):
            machine.start({}, run_id="r1")

    def test_events_not_allowed_write_nothing(self, engine: Engine) -> None:
        """An event the state has no row for raises InvalidEvent; the version stays."""
        run = persistent(engine).start({}, run_id="r1")
        with pytest.raises(InvalidEvent, match="allowed: 'go'"):
            run.send("stop")
        assert persistent(engine).load("r1").version == 1

    def test_the_in_memory_run_cannot_bypass_the_store(self, engine: Engine) -> None:
        """Sending through .run instead of the persistent handle is refused, not lost."""
        run = persistent(engine).start({}, run_id="r1")
        with pytest.raises(CallbackError, match="send events through its PersistentRun"):
            run.run.send("go")
        assert run.run.state is Step.WAITING

    def test_the_in_memory_run_of_a_dropped_handle_is_refused(self, engine: Engine) -> None:
        """A run whose handle is gone cannot move by itself either: it names the way out."""
        in_memory = persistent(engine).start({}, run_id="r1").run
        with pytest.raises(CallbackError, match="handle is gone: send events through"):
            in_memory.send("go")
        assert in_memory.state is Step.WAITING
        assert persistent(engine).load("r1").version == 1

    def test_a_dropped_handle_is_freed_with_its_run_at_once(self, engine: Engine) -> None:
        """No reference cycle: a relay's settled runs never wait for the cyclic collector."""
        run = persistent(engine).load(persistent(engine).start({}, run_id="r1").id)
        handle = weakref.ref(run)
        gc.disable()
        try:
            del run
            assert handle() is None
        finally:
            gc.enable()


class TestConcurrency:
    """Two machines advancing the same run: one wins, the other is told, nothing doubles."""

    def test_stale_handle_gets_concurrency_error(self, engine: Engine, db_url: str) -> None:
        """Both load version 1; the second send fails and its step leaves no trace."""
        from adapters.sqlalchemy import create_engine

        with_user(engine)
        run_id = persistent(engine).start({"user_id": 7, "status": "closed"}).id
        other_engine = create_engine(db_url)
        try:
            mine = persistent(engine).load(run_id)
            theirs = persistent(other_engine).load(run_id)
            mine.send("go")
            with pytest.raises(ConcurrencyError) as caught:
                theirs.send("go")
        finally:
            other_engine.dispose()
        error = caught.value
        assert isinstance(error, FSMError)
        assert (error.run_id, error.expected, error.found) == (run_id, 1, 4)
        assert f"run {run_id} was changed by someone else" in str(error)
        assert theirs.state is Step.DONE and theirs.version == 4  # reloaded: the truth
        assert rows(engine, TABLES.history) == 3 and rows(engine, TABLES.outbox) == 1
        with FlowSqlUnitOfWork(engine) as uow:
            assert uow.users.get(7).version == 2  # type: ignore[union-attr]

    def test_stale_action_effect_is_rolled_back(self, engine: Engine) -> None:
        """Both resume a run whose update action is pending; the loser's update is undone."""
        with_user(engine)
        faults = Faults({"status updated"})
        run_id = persistent(engine, faults=faults).start({"user_id": 7, "status": "closed"}).id
        with pytest.raises(CallbackError, match="update_user raised InjectedFault"):
            persistent(engine, faults=faults).send(run_id, "go")  # stops in UPDATING
        first, second = persistent(engine).load(run_id), persistent(engine).load(run_id)
        assert first.state is second.state is Step.UPDATING
        first.advance()
        with pytest.raises(ConcurrencyError, match="expected version 2, found version 4"):
            second.advance()  # its action updated the user again before the save failed
        assert rows(engine, TABLES.history) == 3 and rows(engine, TABLES.outbox) == 1
        with FlowSqlUnitOfWork(engine) as uow:
            assert uow.users.get(7).version == 2  # type: ignore[union-attr]

    def test_a_failing_action_of_a_run_moved_meanwhile_is_its_own_error(
        self, engine: Engine
    ) -> None:
        """An action's own error stays the news when another process moved the run meanwhile."""
        with_user(engine)
        faults = Faults({"audit"})
        run_id = persistent(engine).start({"user_id": 7, "status": "closed"}).id
        with pytest.raises(CallbackError):
            persistent(engine, faults=faults).send(run_id, "go")  # stops in AUDITING
        first, second = (
            persistent(engine).load(run_id),
            persistent(engine, faults=faults).load(run_id),
        )
        first.advance()
        with pytest.raises(CallbackError, match="action audit raised InjectedFault"):
            second.advance()
        assert (second.state, second.version) == (Step.DONE, 4)  # reloaded: the truth


class TestListeners:
    """A listener runs inside the step: if it raises, the step rolls back."""

    def test_a_failing_listener_is_reported_as_the_listener_s_error(self) -> None:
        """The CallbackError names the listener; nothing of the step is stored."""

        def refuse(run: Any, transition: Any) -> None:
            raise ValueError("no")

        uow = InMemoryUnitOfWork()
        machine = Machine(
            "hop",
            states=[State("a", initial=True), State("z", final=True)],
            transitions=[("a", "go", "z")],
        )
        runs = PersistentMachine(machine, uow, listeners=[refuse])
        runs.start(run_id="r1")
        with pytest.raises(CallbackError) as caught:
            runs.send("r1", "go")
        assert (caught.value.kind, caught.value.name) == ("listener", "refuse")
        assert runs.load("r1").state == "a"


class TestBadInputWritesNothing:
    """Values that cannot be stored are refused before any write."""

    def test_unregistered_context_type(self, engine: Engine) -> None:
        """A context holding an unknown object is refused at start; no run row."""
        with pytest.raises(EncodeError, match=r"run r1: context\['payload'\]: type .*object"):
            persistent(engine).start({"payload": object()}, run_id="r1")
        assert rows(engine, TABLES.runs) == 0

    @pytest.mark.parametrize("context", [{"s": "\ud800"}, {"\ud800": 1}])
    def test_lone_surrogate_in_the_context(self, engine: Engine, context: Any) -> None:
        """A lone surrogate is refused with EncodeError on every backend; no run row."""
        with pytest.raises(EncodeError, match=r"run r1: context.*surrogate"):
            persistent(engine).start(context, run_id="r1")
        assert rows(engine, TABLES.runs) == 0

    def test_unregistered_event(self, engine: Engine) -> None:
        """An event object the codec does not know is refused; the run stays where it was."""

        class Go(str):
            """A str subclass sent as the event."""

        run = persistent(engine).start({}, run_id="r1")
        with pytest.raises(EncodeError, match="the outcome 'go'"):
            run.send(Go("go"))
        assert rows(engine, TABLES.history) == 0 and run.version == 1

    def test_context_gone_bad_in_an_action(self, engine: Engine) -> None:
        """An action that puts an unknown object in the context: its whole step rolls back."""
        uow = FlowSqlUnitOfWork(engine)

        def act(context: dict[str, Any]) -> Audited:
            uow.users.create(1, "active")
            context["bad"] = object()
            return Audited(1)

        machine = Machine(
            "acts",
            states=[
                State("w", initial=True),
                State("a", action=act),
                State("z", final=True),
            ],
            transitions=[("w", "go", "a"), ("a", Audited, "z")],
        )
        run = PersistentMachine(machine, uow).start({}, run_id="r1")
        with pytest.raises(EncodeError, match=r"context\['bad'\]"):
            run.send("go")
        assert rows(engine, users) == 0 and rows(engine, TABLES.history) == 1
        assert "bad" not in run.context  # reloaded from the store


class TestCorruptRows:
    """A stored run that does not decode names the run; no silent default."""

    def corrupt(self, engine: Engine, sql: str) -> str:
        """Finish a run, then damage its rows with `sql`."""
        with_user(engine)
        run = persistent(engine).start({"user_id": 7, "status": "closed"}, run_id="r1")
        run.send("go")
        with engine.begin() as connection:
            connection.execute(text(sql))
        return run.id

    def test_unknown_tag_in_history(self, engine: Engine) -> None:
        """An outcome tagged with a type the machine does not know."""
        self.corrupt(
            engine,
            """update run_history set outcome = '{"$t": "os.system", "v": {}}' where seq = 2""",
        )
        with pytest.raises(DecodeError, match=r"run r1 of machine 'user-update'.*'os.system'"):
            persistent(engine).load("r1")

    def test_unknown_state(self, engine: Engine) -> None:
        """A state the machine does not have."""
        self.corrupt(engine, "update runs set state = 'LOST'")
        with pytest.raises(DecodeError, match=r"run r1 .*unknown state 'LOST'"):
            persistent(engine).load("r1")

    def test_unknown_state_in_history(self, engine: Engine) -> None:
        """A history row's source or target the machine does not have: the error says
        which row and which end."""
        self.corrupt(engine, "update run_history set source = 'GONE' where seq = 2")
        with pytest.raises(DecodeError, match=r"history step 2 source: unknown state 'GONE'"):
            persistent(engine).load("r1")
        with engine.begin() as connection:
            connection.execute(text("update run_history set source = 'updating' where seq = 2"))
            connection.execute(text("update run_history set target = 'GONE' where seq = 1"))
        with pytest.raises(DecodeError, match=r"history step 1 target: unknown state 'GONE'"):
            persistent(engine).load("r1")

    def test_history_that_does_not_lead_to_the_state(self, engine: Engine) -> None:
        """A state that the history does not end in."""
        self.corrupt(engine, "update runs set state = 'waiting'")
        with pytest.raises(DecodeError, match="history ends in 'done'"):
            persistent(engine).load("r1")

    def test_gap_in_history(self, engine: Engine) -> None:
        """A missing step."""
        self.corrupt(engine, "delete from run_history where seq = 2")
        with pytest.raises(DecodeError, match="expected step 2"):
            persistent(engine).load("r1")

    def test_row_not_in_the_table(self, engine: Engine) -> None:
        """A trigger the table has no row for."""
        self.corrupt(engine, "update run_history set trigger = 'jump' where seq = 1")
        with pytest.raises(DecodeError, match="no row waiting --jump--> updating"):
            persistent(engine).load("r1")

    def test_bad_dataclass_payload(self, engine: Engine) -> None:
        """A known type whose stored fields do not fit it."""
        tag = type_tag(Audited)
        self.corrupt(
            engine,
            "update run_history set outcome = "
            f"""'{{"$t": "{tag}", "v": {{"n": 1}}}}' where seq = 3""",
        )
        with pytest.raises(DecodeError, match=r"history step 3 outcome: .*Audited has no fields"):
            persistent(engine).load("r1")

    def test_other_machine(self, engine: Engine) -> None:
        """A run of another machine is not loaded as this one."""
        self.corrupt(engine, "update runs set machine = 'other'")
        with pytest.raises(RestoreError, match="belongs to machine 'other'"):
            persistent(engine).load("r1")


class Ticking(Clock):
    """A clock one second later at every reading."""

    def __call__(self) -> datetime:
        self.advance(1)
        return self.now


class TestClock:
    """Timestamps come from the injected clock."""

    def test_history_times(self, engine: Engine) -> None:
        """Each history row carries the clock's time at its step."""
        clock = Clock()
        with_user(engine)
        machine = persistent(engine, clock=clock)
        run = machine.start({"user_id": 7, "status": "closed"})
        clock.advance(60)
        run.send("go")
        with FlowSqlUnitOfWork(engine) as uow:
            history = uow.runs.history(run.id)
            stored = uow.runs.load(run.id)
        assert [h.at for h in history] == [clock.now] * 3
        assert (stored.created_at, stored.updated_at) == (T0, clock.now)

    def test_a_new_run_is_stored_as_of_the_instant_it_entered_its_state(self) -> None:
        """On a clock that moves at every reading, the run's created_at is the instant its
        first state was entered, the time the first step counts from (a handle loading the
        run later counts from created_at)."""
        clock = Ticking()
        uow = InMemoryUnitOfWork()
        steps: list[StepCommitted] = []
        machine = PersistentMachine(ping, uow, clock=clock, after_commit=[steps.append])
        run = machine.start()
        stored = uow.runs.load(run.id)
        assert stored.created_at == stored.updated_at
        run.send("start")
        (step,) = steps
        assert step.entered_at == stored.created_at


class AwayStore(InMemoryRunStore):
    """An in-memory run store that cannot be read while `away`."""

    away = False

    def load(self, run_id: str) -> RunRecord:
        if self.away:
            raise ConnectionError("the store is away")
        return super().load(run_id)


class TestStoreAway:
    """A step that fails while the store cannot be read either."""

    def test_the_next_step_reads_the_run_again_first(self) -> None:
        """The handle cannot drop the failed action's changes to the context at once: its
        next step reads the stored run first and acts on that, so the action is called
        with the stored context and its outcome is stored."""
        store = AwayStore()
        tries: list[int] = []

        def work(context: dict[str, Any]) -> str:
            context["tries"] = context.get("tries", 0) + 1
            tries.append(context["tries"])
            if len(tries) == 1:
                store.away = True  # the step rolls back, and its reload fails
                raise RuntimeError("work failed")
            return "done"

        machine = Machine(
            "away",
            states=[State("a", initial=True), State("b", action=work), State("c", final=True)],
            transitions=[("a", "go", "b"), ("b", "done", "c")],
        )
        run = PersistentMachine(machine, InMemoryUnitOfWork(runs=store)).start()
        with pytest.raises(CallbackError, match="work failed"):
            run.send("go")
        store.away = False
        assert run.advance().state == "c"
        assert tries == [1, 1]
        assert store.load(run.id).context == {"tries": 1}

    def test_the_next_event_moves_the_run_read_again(self) -> None:
        """The same for `send`: a step whose write failed moved the handle's run in memory
        only; the next event moves the stored run, and its step is stored."""

        class Away(AwayStore):
            def write(self, record: RunRecord, entry: HistoryRecord) -> int:
                if self.away:
                    raise ConnectionError("the store is away")
                return super().write(record, entry)

        store = Away()
        machine = Machine(
            "away",
            states=[State("a", initial=True), State("b"), State("x", final=True)],
            transitions=[("a", "go", "b"), ("b", "stop", "x")],
        )
        run = PersistentMachine(machine, InMemoryUnitOfWork(runs=store)).start()
        store.away = True
        with pytest.raises(ConnectionError):
            run.send("go")
        store.away = False
        assert run.send("go").state == "b"
        assert store.load(run.id).state == "b"


class TestEffects:
    """Writes given with an event commit with its transition, or not at all."""

    def test_effect_commits_with_the_event(self, engine: Engine) -> None:
        """The effect's write is seen by the step it precedes and stored with it."""
        persistent(engine).start({"user_id": 9, "status": "closed"}, run_id="r1")

        def effect(uow: Any) -> None:
            uow.users.create(9, "active")

        sent = persistent(engine).send("r1", "go", effect=effect)
        assert sent.state is Step.DONE
        with FlowSqlUnitOfWork(engine) as uow:
            assert uow.users.get(9).status == "closed"  # type: ignore[union-attr]

    def test_effect_rolls_back_with_a_refused_event(self, engine: Engine) -> None:
        """If the event is not allowed, the effect's write is undone too."""
        persistent(engine).start({"user_id": 5, "status": "closed"}, run_id="r1")

        def effect(uow: Any) -> None:
            uow.users.create(5, "active")

        with pytest.raises(InvalidEvent):
            persistent(engine).send("r1", "stop", effect=effect)
        assert rows(engine, users) == 0
        persistent(engine).send("r1", "go", effect=effect)
        assert rows(engine, users) == 1

    def test_an_effect_given_to_start_commits_with_the_new_run(self, engine: Engine) -> None:
        """The caller's write is stored together with the run's creation."""

        def effect(uow: Any) -> None:
            uow.users.create(9, "active")

        persistent(engine).start({"user_id": 9, "status": "closed"}, run_id="r1", effect=effect)
        assert (rows(engine, users), rows(engine, TABLES.runs)) == (1, 1)

    def test_an_effect_given_to_start_rolls_back_with_it(self, engine: Engine) -> None:
        """A start that fails (its id is taken) leaves no write of its effect behind."""
        persistent(engine).start({"user_id": 9, "status": "closed"}, run_id="r1")

        def effect(uow: Any) -> None:
            uow.users.create(10, "active")

        with pytest.raises(RunExists):
            persistent(engine).start(
                {"user_id": 10, "status": "closed"}, run_id="r1", effect=effect
            )
        assert rows(engine, users) == 0


class TestStoredNames:
    """States and triggers must keep distinct names in storage."""

    def test_triggers_with_the_same_stored_name(self) -> None:
        """An Enum trigger and a string trigger spelled like it, on one row, are refused."""
        from enum import Enum

        from adapters.sqlalchemy import create_engine

        Signal = Enum("Signal", ["GO"])
        machine = Machine(
            "twins",
            states=[State("a", initial=True), State("z", final=True)],
            transitions=[("a", Signal["GO"], "z"), ("a", "Signal.GO", "z")],
        )
        engine = create_engine("sqlite://")
        with pytest.raises(FSMError, match=r"would be stored under the same name 'Signal\.GO'"):
            PersistentMachine(machine, FlowSqlUnitOfWork(engine))
        engine.dispose()

    def test_states_with_the_same_stored_name(self) -> None:
        """A member stored by its value and one stored by its name, spelled alike, are refused."""
        from enum import Enum

        from adapters.sqlalchemy import create_engine

        Kind = Enum("Kind", {"A": "B", "B": 2})
        machine = Machine(
            "mixed",
            states=[State(Kind["A"], initial=True), State(Kind["B"], final=True)],
            transitions=[(Kind["A"], "go", Kind["B"])],
        )
        engine = create_engine("sqlite://")
        with pytest.raises(FSMError, match="stored under the same name 'B'"):
            PersistentMachine(machine, FlowSqlUnitOfWork(engine))
        engine.dispose()


class TestSweeping:
    """Runs left between two steps can be found and resumed."""

    def test_find_runs_with_a_step_left(self, engine: Engine) -> None:
        """A run stopped in an action state is found once it is old enough; others are not."""
        clock = Clock()
        with_user(engine)
        machine = persistent(engine, clock=clock, faults=Faults({"audit"}))
        stuck = machine.start({"user_id": 7, "status": "closed"}, run_id="stuck")
        with pytest.raises(CallbackError):
            stuck.send("go")
        machine.start({}, run_id="waiting")
        assert machine.resumable_states == ("updating", "UPDATING", "auditing", "AUDITING")

        def find(**options: Any) -> list[str]:
            with FlowSqlUnitOfWork(engine) as uow:
                return uow.runs.find(
                    "user-update", states=machine.resumable_states, finished=False, **options
                )

        assert find() == ["stuck"]
        assert find(updated_before=T0) == []
        clock.advance(120)
        assert find(updated_before=clock.now) == ["stuck"]
        for run_id in find(updated_before=clock.now):
            assert persistent(engine).resume(run_id).state is Step.DONE
        assert find() == []
        with FlowSqlUnitOfWork(engine) as uow:
            assert uow.runs.find("user-update", finished=True) == ["stuck"]
            assert sorted(uow.runs.find("user-update")) == ["stuck", "waiting"]
