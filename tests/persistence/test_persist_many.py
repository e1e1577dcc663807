"""Many runs moved in one transaction: PersistentMachine.send_many and the stores' *_many
calls, in memory and on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Literal

import pytest
from sqlalchemy import Engine, event, select, text

from adapters.memory import AsyncInMemoryUnitOfWork, InMemoryRunStore, InMemoryUnitOfWork
from adapters.sqlalchemy import TABLES, SqlUnitOfWork
from adapters.sqlalchemy.store import RunStatements
from fsm import FSMError, Machine, PersistentMachine, RunFinished, State, runtime
from fsm.codec import DecodeError
from fsm.coverage import Coverage
from fsm.hooks import StepCommitted, StepFailed
from fsm.persistence import AsyncPersistentMachine
from fsm.ports import (
    ConcurrencyError,
    HistoryRecord,
    RunHead,
    RunMove,
    RunNotFound,
    UnitOfWork,
)
from tests.clock import T0, Clock


def check(context: dict[str, Any]) -> Literal["ok"]:
    return "ok"


orders = Machine(
    "orders",
    states=[
        State("waiting", initial=True),
        State("checking", action=check),
        State("done", final=True),
        State("checked", final=True),
        State("paused", after=timedelta(hours=1)),
    ],
    transitions=[
        ("waiting", "finish", "done"),
        ("waiting", "check", "checking"),
        ("waiting", "wait", "waiting"),
        ("waiting", "pause", "paused"),
        ("waiting", "ask", "done", lambda run: run.context.get("yes", False)),
        ("waiting", "ask", "checked"),
        ("paused", "timeout", "waiting"),
        ("checking", "ok", "checked"),
    ],
)


def twins(runs: PersistentMachine[Any], uow: UnitOfWork, event: object) -> Any:
    """Send `event` to run a by send_many and to its twin b by send_all; check that both
    stored the same run and steps, and return b's (record, history)."""
    runs.send_many([("a", event)])
    runs.send_all([("b", event)])
    with uow:
        a, b = uow.runs.load_many(["a", "b"])
        steps = [uow.runs.history(run_id) for run_id in ("a", "b")]
    assert replace(a, id="b") == b
    assert [replace(step, run_id="b") for step in steps[0]] == steps[1]
    return b, steps[1]


def unread(*_: object) -> None:
    """Put in place of a store's reads of a run's context and history."""
    raise AssertionError("read the run's context or history")


@dataclass(frozen=True)
class Outcome:
    n: int


@dataclass(frozen=True)
class Later(Outcome):
    """A subclass: the row of Outcome fires for it."""


renamed = Machine(
    "renamed",
    states=[
        State("waiting", initial=True, aliases=("idle",)),
        State("paused", after=timedelta(minutes=5)),
        State("done", final=True),
    ],
    transitions=[("waiting", Outcome, "paused"), ("paused", "timeout", "done")],
)


@dataclass(frozen=True)
class Note:
    value: object


class Unstorable:
    """A value the codec cannot store."""


noted = Machine(
    "noted",
    states=[State("waiting", initial=True), State("done", final=True)],
    transitions=[("waiting", Note, "done")],
)


@pytest.fixture(params=["sql", "memory"])
def uow(request: pytest.FixtureRequest, engine: Engine) -> UnitOfWork:
    """A unit of work on the `engine` (SQLite and PostgreSQL), or an in-memory one (which
    ignores the engine: it runs once per database, cheap)."""
    if request.param == "memory":
        return InMemoryUnitOfWork()
    return SqlUnitOfWork(engine, clock=Clock())


def started(uow: UnitOfWork, *ids: str) -> PersistentMachine[str]:
    runs = PersistentMachine(orders, uow, clock=Clock())
    for run_id in ids:
        runs.start({"n": run_id}, run_id=run_id)
    return runs


@pytest.fixture(params=["send_many", "send_all"])
def send(request: pytest.FixtureRequest) -> Any:
    """send_many or send_all, which must move runs alike (send_all returns no handles)."""

    def sent(runs: Any, events: list[tuple[str, object]], **options: Any) -> None:
        getattr(runs, request.param)(events, **options)

    return sent


def states(runs: PersistentMachine[str], *ids: str) -> list[tuple[str, int, int]]:
    """(state, version, history length) of each run, as stored."""
    found = [runs.load(run_id) for run_id in ids]
    return [(str(h.state), h.version, len(h.run.history)) for h in found]


class TestSendMany:
    def test_every_run_takes_its_step_in_one_transaction(self, uow: UnitOfWork) -> None:
        """Each run moves by its event, with its history row and version, and the effect
        writes in the same transaction."""
        runs = started(uow, "a", "b", "c")
        written: list[object] = []
        moved = runs.send_many([("a", "finish"), ("c", "finish")], effect=written.append)
        assert [(h.id, h.state, h.version) for h in moved] == [("a", "done", 2), ("c", "done", 2)]
        assert written == [uow]
        assert states(runs, "a", "b", "c") == [("done", 2, 1), ("waiting", 1, 0), ("done", 2, 1)]
        step = runs.load("c").run.history[0]
        assert (step.source, step.trigger, step.target) == ("waiting", "finish", "done")

    def test_a_run_with_history_takes_the_next_step(self, uow: UnitOfWork, send: Any) -> None:
        """The step is numbered after the run's stored history."""
        runs = started(uow, "a")
        runs.send("a", "wait")
        send(runs, [("a", "finish")])  # a second step numbered 1 would be refused
        assert states(runs, "a") == [("done", 3, 2)]

    def test_the_handles_returned_go_on_through_the_store(self, uow: UnitOfWork) -> None:
        """After the batch each handle sends as `load` would; its in-memory run still refuses."""
        runs = started(uow, "a")
        (moved,) = runs.send_many([("a", "wait")])
        with pytest.raises(FSMError, match="run a is persistent"):
            moved.run.send("finish")
        assert moved.send("finish").state == "done"
        assert states(runs, "a") == [("done", 3, 2)]

    def test_hooks_hear_each_step_after_the_commit_or_the_rollback(
        self, uow: UnitOfWork, send: Any
    ) -> None:
        """after_commit gets each run's step; after_failure each step undone, timed by the clock."""
        done: list[StepCommitted] = []
        undone: list[StepFailed] = []
        runs = PersistentMachine(
            orders, uow, clock=Clock(), after_commit=[done.append], after_failure=[undone.append]
        )
        for run_id in ("a", "b", "c"):
            runs.start(run_id=run_id)
        send(runs, [("b", "finish"), ("a", "wait")])
        assert [(step.run_id, step.seq, step.target) for step in done] == [
            ("b", 1, "done"),
            ("a", 1, "waiting"),
        ]

        def refuse(_: object) -> None:
            raise RuntimeError("the outbox is away")

        with pytest.raises(RuntimeError):
            send(runs, [("c", "finish")], effect=refuse)
        assert [(step.run_id, step.target, step.at) for step in undone] == [("c", "done", T0)]

    def test_a_refused_event_writes_nothing_for_any_run(self, uow: UnitOfWork, send: Any) -> None:
        """One run cannot take its event (it is finished): none of the batch moves."""
        runs = started(uow, "a", "b")
        runs.send("a", "finish")
        with pytest.raises(RunFinished):
            send(runs, [("b", "finish"), ("a", "finish")])
        assert states(runs, "a", "b") == [("done", 2, 1), ("waiting", 1, 0)]

    def test_a_run_not_stored_writes_nothing(self, uow: UnitOfWork, send: Any) -> None:
        runs = started(uow, "a")
        with pytest.raises(RunNotFound, match="nope"):
            send(runs, [("a", "finish"), ("nope", "finish")])
        assert states(runs, "a") == [("waiting", 1, 0)]

    def test_an_event_leading_to_an_action_is_refused(self, uow: UnitOfWork, send: Any) -> None:
        """send_many takes one step per run: a state with an action left would need more."""
        runs = started(uow, "a", "b")
        with pytest.raises(FSMError, match=r"run b's event leads to 'checking'.*send it alone"):
            send(runs, [("a", "finish"), ("b", "check")])
        assert states(runs, "a", "b") == [("waiting", 1, 0), ("waiting", 1, 0)]
        assert runs.send("b", "check").state == "checked"  # alone, its action runs

    def test_after_failure_hears_the_step_leading_to_an_action(
        self, uow: UnitOfWork, send: Any
    ) -> None:
        undone: list[StepFailed] = []
        runs = PersistentMachine(orders, uow, clock=Clock(), after_failure=[undone.append])
        runs.start(run_id="a")
        runs.start(run_id="b")
        with pytest.raises(FSMError, match="send it alone"):
            send(runs, [("a", "finish"), ("b", "check")])
        assert [(step.run_id, step.target) for step in undone] == [("a", "done"), ("b", "checking")]

    def test_a_failing_effect_writes_nothing(self, uow: UnitOfWork, send: Any) -> None:
        runs = started(uow, "a")

        def refuse(_: object) -> None:
            raise RuntimeError("the outbox is away")

        with pytest.raises(RuntimeError, match="outbox is away"):
            send(runs, [("a", "finish")], effect=refuse)
        assert states(runs, "a") == [("waiting", 1, 0)]

    def test_a_run_given_twice_is_refused_before_anything_is_read(
        self, uow: UnitOfWork, send: Any
    ) -> None:
        runs = started(uow, "a")
        with pytest.raises(FSMError, match=r"one event per run; given twice: \['a'\]"):
            send(runs, [("a", "finish"), ("a", "check")])

    def test_listeners_hear_each_step(self, uow: UnitOfWork, send: Any) -> None:
        """A listener is given each run: send_all restores them all (no step is fixed)."""
        heard: list[str] = []
        runs = PersistentMachine(
            orders, uow, clock=Clock(), listeners=[lambda run, t: heard.append(run.id)]
        )
        for run_id in ("a", "b"):
            runs.start(run_id=run_id)
        send(runs, [("b", "finish"), ("a", "finish")])
        assert heard == ["b", "a"]

    def test_async_runs_too(self) -> None:
        """The async runner shares the rules: the same steps, awaited."""

        async def scenario() -> list[str]:
            uow = AsyncInMemoryUnitOfWork()
            runs = AsyncPersistentMachine(orders, uow, clock=Clock())
            for run_id in ("a", "b", "c", "d"):
                await runs.start(run_id=run_id)
            await runs.send_many([("a", "finish"), ("b", "finish")], effect=written.append)
            await runs.send_all([("c", "finish"), ("d", "ask")], effect=written.append)
            return [str((await runs.load(run_id)).state) for run_id in ("a", "b", "c", "d")]

        written: list[object] = []
        assert asyncio.run(scenario()) == ["done", "done", "done", "checked"]
        assert len(written) == 2 and isinstance(written[0], AsyncInMemoryUnitOfWork)


class TestSendAll:
    """send_all: a step its state alone decides is written from the run's head."""

    def test_a_fixed_step_reads_neither_context_nor_history(
        self, uow: UnitOfWork, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Neither store is asked for a run's context or history; each run moves with its
        step numbered after its history, its context as stored, told after the commit."""
        done: list[StepCommitted] = []
        runs = PersistentMachine(orders, uow, clock=Clock(), after_commit=[done.append])
        for run_id in ("a", "b"):
            runs.start({"n": run_id}, run_id=run_id)
        runs.send("b", "wait")

        for store in (InMemoryRunStore, RunStatements):
            for name in ("load", "load_many", "history", "load_steps", "load_many_steps"):
                if hasattr(store, name):
                    monkeypatch.setattr(store, name, unread)
        written: list[object] = []
        runs.send_all([("a", "finish"), ("b", "finish")], effect=written.append)
        assert written == [uow]
        monkeypatch.undo()
        assert states(runs, "a", "b") == [("done", 2, 1), ("done", 3, 2)]
        assert runs.load("b").run.context == {"n": "b"}
        assert [(s.run_id, s.seq, s.source, s.trigger, s.target) for s in done[-2:]] == [
            ("a", 1, "waiting", "finish", "done"),
            ("b", 2, "waiting", "finish", "done"),
        ]
        assert done[-1].entered_at == T0  # when b took its first step

    @pytest.mark.parametrize("event", ["finish", "pause", "wait"])
    def test_it_stores_what_send_many_stores(self, uow: UnitOfWork, event: str) -> None:
        """The same event sent to twin runs, one by send_many and one by send_all: the same
        stored run (state, version, finished, timeout, claim, times) and the same step."""
        clock = Clock()
        runs = PersistentMachine(orders, uow, clock=clock)
        for run_id in ("a", "b"):
            runs.start({"n": 1}, run_id=run_id)
        clock.advance(90)
        b, _ = twins(runs, uow, event)
        if event == "pause":
            assert b.due_at == T0 + timedelta(seconds=90, hours=1)

    def test_a_guarded_row_restores_its_run_in_the_same_batch(self, uow: UnitOfWork) -> None:
        """A run whose row has a guard is restored and asks it (its context says which row),
        in the batch's one transaction with the runs moved from their heads; every step is
        told in the order given."""
        done: list[StepCommitted] = []
        runs = PersistentMachine(orders, uow, clock=Clock(), after_commit=[done.append])
        runs.start({"yes": True}, run_id="a")
        runs.start({"yes": False}, run_id="b")
        runs.start(run_id="c")
        written: list[object] = []
        runs.send_all([("b", "ask"), ("c", "finish"), ("a", "ask")], effect=written.append)
        assert written == [uow]
        assert [(s.run_id, s.target) for s in done] == [
            ("b", "checked"),
            ("c", "done"),
            ("a", "done"),
        ]
        assert states(runs, "a", "b", "c") == [("done", 2, 1), ("checked", 2, 1), ("done", 2, 1)]

    def test_a_renamed_state_a_claim_and_an_outcome_subclass(self, uow: UnitOfWork) -> None:
        """A run stored under its state's former label, claimed by another worker, sent a
        subclass of its row's outcome class into a state with a timeout: send_all stores
        what send_many stores (the current labels, the claim given up, the due time)."""
        clock = Clock()
        runs = PersistentMachine(renamed, uow, clock=clock, types=[Outcome, Later])
        other = PersistentMachine(renamed, uow, clock=clock, types=[Outcome, Later], worker="w2")
        for run_id in ("a", "b"):
            runs.start({"n": 1}, run_id=run_id)
            assert other.load(run_id).claim()
        if isinstance(uow, InMemoryUnitOfWork):
            for run_id in ("a", "b"):
                uow.runs.runs[run_id] = replace(uow.runs.runs[run_id], state="idle")
        else:
            with uow.engine.begin() as connection:  # type: ignore[attr-defined]
                connection.execute(text("update runs set state = 'idle'"))
        clock.advance(30)
        b, steps = twins(runs, uow, Later(2))
        assert (b.state, b.claimed_by, b.due_at) == (
            "paused",
            None,
            T0 + timedelta(minutes=5, seconds=30),
        )
        assert steps[0].source == "waiting"

    def test_coverage_counts_a_step_written_from_a_head(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Transition coverage (an observer with a row observer) counts the row of a step
        written from the run's head, and the run is not restored for it."""
        runs = PersistentMachine(orders, InMemoryUnitOfWork(), clock=Clock())
        runs.start(run_id="a")
        with Coverage() as coverage:
            monkeypatch.setattr(InMemoryRunStore, "load_many", unread)
            runs.send_all([("a", "finish")])
        assert coverage.counts(orders)[0] == 1

    def test_an_observer_of_runs_is_given_each_run(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """An observer with no row observer is given a Run for every row: send_all then
        restores the runs it would move from their heads."""
        monkeypatch.setattr(runtime, "_observers", [])
        monkeypatch.setattr(runtime, "_row_observers", [])
        runs = PersistentMachine(orders, InMemoryUnitOfWork(), clock=Clock())
        runs.start({"n": 7}, run_id="a")
        heard: list[tuple[str, object]] = []
        stop = runtime.observe(lambda run, t: heard.append((run.id, run.context.get("n"))))
        try:
            runs.send_all([("a", "finish")])
        finally:
            stop()
        assert heard == [("a", 7)]

    def test_an_outcome_that_cannot_be_stored_fails_as_in_send_many(self) -> None:
        """An event the codec cannot encode: send_all raises send_many's error and tells
        after_failure of the same steps."""
        seen = []
        for how in ("send_many", "send_all"):
            undone: list[StepFailed] = []
            runs = PersistentMachine(
                noted, InMemoryUnitOfWork(), clock=Clock(), after_failure=[undone.append]
            )
            runs.start(run_id="a")
            runs.start(run_id="b")
            with pytest.raises(FSMError) as raised:
                getattr(runs, how)([("a", Note(1)), ("b", Note(Unstorable()))])
            seen.append((type(raised.value), [step.run_id for step in undone]))
        assert seen[0] == seen[1]
        assert seen[0][1] == ["a"]  # b's step was never built

    def test_what_only_a_restore_checks_is_left_to_the_next_load(self) -> None:
        """A stored context this definition cannot decode: send_all moves the run from its
        head (its step needs nothing of the context), and the next load refuses it."""
        uow = InMemoryUnitOfWork()
        runs = PersistentMachine(orders, uow, clock=Clock())
        runs.start(run_id="a")
        uow.runs.runs["a"] = replace(uow.runs.runs["a"], context={"x": {"$t": "gone.Type"}})
        runs.send_all([("a", "finish")])
        assert uow.runs.runs["a"].state == "done"
        with pytest.raises(DecodeError):
            runs.load("a")

    @pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # SQLite: one writer
    def test_two_batches_over_the_same_runs_do_not_deadlock(self, engine: Engine) -> None:
        """Two batches over runs a and b, each restoring one (a guarded row) and moving the
        other from its head, each pausing after its first lock until the other took its
        own: one commits and the other gets ConcurrencyError, as two send_many batches
        would (every run of a batch is locked in one statement, in id order), not
        PostgreSQL's deadlock error after deadlock_timeout."""
        runs = PersistentMachine(orders, SqlUnitOfWork(engine, clock=Clock()), clock=Clock())
        runs.start({"yes": False}, run_id="a")
        runs.start({"yes": False}, run_id="b")
        barrier = threading.Barrier(2, timeout=2)
        mine = threading.local()

        def pause(_c: object, _cursor: object, statement: str, *_: object) -> None:
            if "FOR UPDATE" in statement and getattr(mine, "batch", False) and not mine.locked:
                mine.locked = True
                with contextlib.suppress(threading.BrokenBarrierError):  # the other one waits
                    barrier.wait()

        errors: dict[str, BaseException | None] = {}

        def batch(name: str, events: list[tuple[str, object]]) -> None:
            mine.batch, mine.locked = True, False
            uow = SqlUnitOfWork(engine, clock=Clock())
            try:
                PersistentMachine(orders, uow, clock=Clock()).send_all(events)
                errors[name] = None
            except BaseException as error:
                errors[name] = error

        threads = [
            threading.Thread(target=batch, args=("first", [("b", "ask"), ("a", "finish")])),
            threading.Thread(target=batch, args=("second", [("a", "ask"), ("b", "finish")])),
        ]
        event.listen(engine, "after_cursor_execute", pause)
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
        finally:
            event.remove(engine, "after_cursor_execute", pause)
        raised = [error for error in errors.values() if error is not None]
        assert len(raised) == 1 and isinstance(raised[0], ConcurrencyError), errors


class TestStoreMany:
    def test_load_many_leaves_out_runs_not_stored(self, uow: UnitOfWork) -> None:
        """The stored ones, each with its history readable right after."""
        runs = started(uow, "a", "b")
        runs.send("b", "finish")
        with uow:
            found = uow.runs.load_many(["b", "nope", "a"])
            histories = {record.id: uow.runs.history(record.id) for record in found}
        assert sorted(record.id for record in found) == ["a", "b"]
        assert [len(histories["a"]), len(histories["b"])] == [0, 1]

    def test_write_many_names_the_run_that_moved(self, uow: UnitOfWork) -> None:
        """A stale version anywhere in the batch: ConcurrencyError for that run, and after
        the rollback nothing of the batch is written."""
        started(uow, "a", "b", "c")
        with uow:
            records = uow.runs.load_many(["a", "b", "c"])
        with uow:
            uow.runs.save(records[1])  # b moves on: version 2
        with pytest.raises(ConcurrencyError, match="run b") as raised, uow:
            uow.runs.write_many([(replace(r, state="done"), entry(r.id, 1)) for r in records])
        assert (raised.value.expected, raised.value.found) == (1, 2)
        with uow:
            after = {r.id: (r.state, r.version) for r in uow.runs.load_many(["a", "b", "c"])}
        assert after == {"a": ("waiting", 1), "b": ("waiting", 2), "c": ("waiting", 1)}

    def test_write_many_refuses_a_step_stored_already(self, uow: UnitOfWork) -> None:
        started(uow, "a", "b")
        with uow:
            uow.runs.append(entry("a", 1))
        with uow:
            records = uow.runs.load_many(["b", "a"])
        with pytest.raises(ConcurrencyError, match="run history a"), uow:
            uow.runs.write_many([(r, entry(r.id, 1)) for r in records])
        with uow:
            assert [len(uow.runs.history(run_id)) for run_id in ("a", "b")] == [1, 0]
            assert [r.version for r in uow.runs.load_many(["a", "b"])] == [1, 1]

    def test_write_many_refuses_a_step_appended_while_it_writes(self, engine: Engine) -> None:
        """A step stored after the runs were locked and checked (an `append` holds no lock
        on the run): the batch's INSERT meets it, and write_many raises ConcurrencyError
        for run history, nothing of the batch written."""
        uow = SqlUnitOfWork(engine, clock=Clock())
        started(uow, "a", "b")
        with uow:
            records = uow.runs.load_many(["a", "b"])
        appended: list[str] = []

        def meanwhile(_c: object, cursor: Any, statement: str, *_: object) -> None:
            # The history INSERT alone (SQLite) or within the batch's one statement (PostgreSQL)
            if "INSERT INTO run_history" in statement and not appended:
                appended.append(statement)
                cursor.execute(
                    "INSERT INTO run_history (run_id, seq, source, trigger, target, at)"
                    " VALUES ('b', 1, 'waiting', 'finish', 'done', '2026-12-03 00:00:00+00')"
                )

        event.listen(engine, "before_cursor_execute", meanwhile)
        try:
            with pytest.raises(ConcurrencyError, match="run history"), uow:
                uow.runs.write_many([(r, entry(r.id, 1)) for r in records])
        finally:
            event.remove(engine, "before_cursor_execute", meanwhile)
        assert appended
        with uow:
            assert [len(uow.runs.history(run_id)) for run_id in ("a", "b")] == [0, 0]
            assert [r.version for r in uow.runs.load_many(["a", "b"])] == [1, 1]


class TestHeadsAndMoves:
    """RunStore.heads, and write_many's moves: steps written without the runs' contexts."""

    def test_heads_say_where_each_stored_run_stands(self, uow: UnitOfWork) -> None:
        clock = Clock()
        runs = PersistentMachine(orders, uow, clock=clock)
        for run_id in ("a", "b"):
            runs.start({"n": 1}, run_id=run_id)
        clock.advance(60)
        runs.send("b", "wait")
        with uow:
            heads = {head.id: head for head in uow.runs.heads(["b", "nope", "a"])}
        assert heads == {
            "a": RunHead("a", "orders", "waiting", 1, 0, T0),
            "b": RunHead("b", "orders", "waiting", 2, 1, T0 + timedelta(seconds=60)),
        }

    def test_a_move_keeps_the_context_and_gives_up_the_claim(self, uow: UnitOfWork) -> None:
        started(uow, "a")
        with uow:
            [record] = uow.runs.load_many(["a"])
            uow.runs.save(replace(record, claimed_by="w", claimed_until=T0, attempt=2))
        later = T0 + timedelta(minutes=5)
        step = replace(entry("a", 1), at=later)
        with uow:
            uow.runs.write_many([], [RunMove(step, 2, finished=True, due_at=later)])
        with uow:
            [after] = uow.runs.load_many(["a"])
            assert uow.runs.history("a") == [step]
        assert after == replace(
            record, state="done", version=3, finished=True, updated_at=later, due_at=later
        )

    def test_a_moved_run_is_named(self, uow: UnitOfWork) -> None:
        """A stale version anywhere in the batch: ConcurrencyError for that run, and after
        the rollback nothing of the batch is written."""
        started(uow, "a", "b")
        with uow:
            [b] = uow.runs.load_many(["b"])
            uow.runs.save(b)  # b moves on: version 2
        moves = [RunMove(entry(run_id, 1), 1, finished=True) for run_id in ("a", "b")]
        with pytest.raises(ConcurrencyError, match="run b") as raised, uow:
            uow.runs.write_many([], moves)
        assert (raised.value.expected, raised.value.found) == (1, 2)
        with uow:
            after = [(h.state, h.version, h.seq) for h in uow.runs.heads(["a", "b"])]
        assert sorted(after) == [("waiting", 1, 0), ("waiting", 2, 0)]

    def test_a_move_whose_step_is_stored_already_is_refused(self, uow: UnitOfWork) -> None:
        started(uow, "a", "b")
        with uow:
            uow.runs.append(entry("a", 1))
        moves = [RunMove(entry(run_id, 1), 1, finished=True) for run_id in ("b", "a")]
        with pytest.raises(ConcurrencyError, match="run history a"), uow:
            uow.runs.write_many([], moves)
        with uow:
            assert [len(uow.runs.history(run_id)) for run_id in ("a", "b")] == [1, 0]


def test_write_many_stores_the_rows_write_stores(engine: Engine) -> None:
    """Saves (with and without a claim) and a move written together store, column by column,
    what `write` and the same step one at a time store (on PostgreSQL the batch is one
    statement from JSON: a None outcome is JSON null there too, as a bound None is)."""
    uow = SqlUnitOfWork(engine, clock=Clock())
    ids = ("a", "b", "c", "d", "e", "f")
    started(uow, *ids)
    later = T0 + timedelta(minutes=5)
    with uow:
        records = {r.id: r for r in uow.runs.load_many(list(ids))}

    def writes(first: str, second: str, third: str) -> tuple[list[Any], RunMove]:
        claimed = replace(records[first], state="done", context={"n": 1, "x": [1, "y"]})
        claimed = replace(claimed, claimed_by="w", claimed_until=later, attempt=2, due_at=later)
        plain = replace(records[second], state="checked", finished=True, context={})
        saves = [
            (claimed, replace(entry(first, 1), outcome={"ok": [1, None]}, at=later)),
            (plain, replace(entry(second, 1), target="checked")),
        ]
        return saves, RunMove(replace(entry(third, 1), at=later), 1, finished=True)

    together, move = writes("a", "b", "c")
    with uow:
        uow.runs.write_many(together, [move])
    alone, move = writes("d", "e", "f")
    with uow:
        for record, step in alone:
            uow.runs.write(record, step)
        uow.runs.write_many([], [move])  # a move has no single-run form
    runs, history = TABLES.runs, TABLES.history
    with engine.connect() as connection:
        stored = {row.id: row[2:] for row in connection.execute(select(runs).order_by(runs.c.id))}
        steps = {row.run_id: row[1:] for row in connection.execute(select(history))}
        if engine.dialect.name == "postgresql":
            kinds = connection.execute(text("select jsonb_typeof(outcome) from run_history"))
            assert sorted(kinds.scalars()) == ["null", "null", "null", "null", "object", "object"]
    for batch, single in zip("abc", "def", strict=True):
        # Each move keeps its own context ({"n": its id}); the rest is alike.
        assert stored[batch][:1] + stored[batch][2:] == stored[single][:1] + stored[single][2:]
        assert steps[batch] == steps[single], batch
    assert [stored[run_id][1] for run_id in "abcf"] == [{"n": 1, "x": [1, "y"]}, {}, *_ns("cf")]
    # state, context, version, finished, created_at, updated_at, claimed_by, claimed_until,
    # attempt, due_at: the claim saved, the move's given up
    assert stored["a"][6:] == ("w", later, 2, later)
    assert stored["c"][6:] == (None, None, 0, None)


def _ns(ids: str) -> list[dict[str, str]]:
    return [{"n": run_id} for run_id in ids]


def entry(run_id: str, seq: int) -> HistoryRecord:
    return HistoryRecord(run_id, seq, "waiting", "finish", "done", None, T0)


class TestWrite:
    """`write`: a step's save and history row (one statement on PostgreSQL), all or none."""

    def test_a_step_is_saved_and_appended(self, uow: UnitOfWork) -> None:
        started(uow, "a")
        with uow:
            [record] = uow.runs.load_many(["a"])
            assert uow.runs.write(replace(record, state="done"), entry("a", 1)) == 2
        with uow:
            [after] = uow.runs.load_many(["a"])
            assert (after.state, after.version, len(uow.runs.history("a"))) == ("done", 2, 1)

    def test_a_moved_run_is_named_and_its_step_not_written(self, uow: UnitOfWork) -> None:
        started(uow, "a")
        with uow:
            [record] = uow.runs.load_many(["a"])
        with uow:
            uow.runs.save(record)  # another writer: version 2
        with pytest.raises(ConcurrencyError, match="run a") as raised, uow:
            uow.runs.write(replace(record, state="done"), entry("a", 1))
        assert (raised.value.entity, raised.value.expected, raised.value.found) == ("run", 1, 2)
        with uow:
            assert uow.runs.history("a") == []

    def test_a_step_stored_already_is_named_and_the_save_undone(self, uow: UnitOfWork) -> None:
        started(uow, "a")
        with uow:
            uow.runs.append(entry("a", 1))
            [record] = uow.runs.load_many(["a"])
        with pytest.raises(ConcurrencyError, match="run history a") as raised, uow:
            uow.runs.write(replace(record, state="done"), entry("a", 1))
        assert (raised.value.expected, raised.value.found) == (0, 1)
        with uow:
            [after] = uow.runs.load_many(["a"])
            assert (after.state, after.version) == ("waiting", 1)
