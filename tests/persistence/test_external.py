"""External steps on the in-memory store: the claim, the key, the lease, the late worker."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest

from adapters.memory import InMemoryRunStore, InMemoryUnitOfWork
from fsm import CallbackError, ConcurrencyError, DefinitionError, Machine, PersistentMachine, State
from fsm.ports import RunClaimed
from fsm.runtime import Rollback
from tests.clock import T0, Clock
from tests.persistence.external_support import Captured, Declined, Ready, Stage, machine


class Gateway:
    """Scripted collaborators: `capture` runs `on_call` (if set), then returns `answer`."""

    def __init__(self, worker: str, uow: InMemoryUnitOfWork) -> None:
        self.worker = worker
        self.uow = uow
        self.keys: list[str] = []
        self.open_during_call: list[bool] = []
        self.on_call: Callable[[], None] | None = None
        self.error: Exception | None = None
        self.answer: Captured | Declined | Rollback | None = None

    def prepare(self, context: dict[str, Any]) -> Ready:
        return Ready()

    def capture(self, context: dict[str, Any], key: str) -> Captured | Declined:
        self.keys.append(key)
        self.open_during_call.append(self.uow.in_transaction)
        context["gateway_ref"] = f"ref-{len(self.keys)}"
        if self.on_call is not None:
            self.on_call()
        if self.error is not None:
            raise self.error
        if isinstance(self.answer, Rollback):
            raise self.answer
        return self.answer or Captured(key, self.worker)


class Workers:
    """Two workers on one store, with one clock and a 30 s lease."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = InMemoryRunStore()
        self.a, self.runs_a = self.worker("a")
        self.b, self.runs_b = self.worker("b")

    def worker(self, name: str) -> tuple[Gateway, PersistentMachine[Stage]]:
        uow = InMemoryUnitOfWork(runs=self.store)
        gateway = Gateway(name, uow)
        runs = PersistentMachine(
            machine, uow, steps=gateway, worker=name, clock=self.clock, lease=timedelta(seconds=30)
        )
        return gateway, runs

    def stuck(self) -> str:
        """A run waiting to capture, unclaimed (worker a's first call failed)."""
        self.a.error = RuntimeError("gateway down")
        with pytest.raises(CallbackError):
            self.runs_a.start({"payment": "p-1"}, run_id="pay-1")
        self.a.error = None
        self.a.keys.clear()
        return "pay-1"


def test_an_external_action_runs_with_no_transaction_open_and_gets_the_step_key() -> None:
    """The claim commits first; the call sees no transaction; the outcome commits after."""
    workers = Workers()
    during: list[tuple[str, str | None, datetime | None, int, int]] = []

    def look() -> None:
        stored = workers.store.load("pay-1")
        claim = (stored.claimed_by, stored.claimed_until, stored.attempt)
        during.append((stored.state, *claim, stored.version))

    workers.a.on_call = look
    run = workers.runs_a.start({"payment": "p-1"}, run_id="pay-1")
    assert run.state is Stage.CAPTURED
    assert workers.a.keys == ["pay-1:2"]
    assert workers.a.open_during_call == [False]
    stored = workers.store.load("pay-1")
    assert (stored.claimed_by, stored.claimed_until, stored.attempt) == (None, None, 0)
    assert stored.context["gateway_ref"] == "ref-1"  # the call's context changes are kept
    assert stored.version == 3  # created, moved to capturing (claimed in that step), captured
    # The step that entered the external state claimed the run for the call in its write,
    # for the lease.
    assert during == [("capturing", "a", T0 + timedelta(seconds=30), 1, 2)]


def test_a_failed_call_gives_the_claim_back_and_keeps_the_key() -> None:
    """After a failed call another worker may go at once, with the same key; the failed
    call's context changes are dropped."""
    workers = Workers()
    run_id = workers.stuck()
    stored = workers.store.load(run_id)
    assert stored.claimed_by is None and "gateway_ref" not in stored.context
    run = workers.runs_b.resume(run_id)
    assert run.state is Stage.CAPTURED
    assert workers.b.keys == ["pay-1:2"]


def test_a_failed_call_retried_on_its_handle_claims_anew() -> None:
    """The handle whose call failed goes again: a fresh claim, counted as attempt 1 again."""
    workers = Workers()
    run = workers.runs_a.load(workers.stuck())
    workers.a.error = RuntimeError("gateway down again")
    with pytest.raises(CallbackError):
        run.advance()
    workers.a.error = None
    attempts: list[int] = []
    workers.a.on_call = lambda: attempts.append(workers.store.load(run.id).attempt)
    assert run.advance().state is Stage.CAPTURED
    assert attempts == [1]


def test_a_failed_call_leaves_alone_the_claim_another_worker_took_meanwhile() -> None:
    """a's call outlasts its lease and b claims the run: a's failure gives back nothing."""
    workers = Workers()
    run_id = workers.stuck()

    def b_claims() -> None:
        workers.clock.advance(31)
        assert workers.runs_b.load(run_id).claim()

    workers.a.on_call = b_claims
    workers.a.error = RuntimeError("gateway down")
    with pytest.raises(CallbackError):
        workers.runs_a.resume(run_id)
    stored = workers.store.load(run_id)
    assert (stored.claimed_by, stored.claimed_until) == ("b", T0 + timedelta(seconds=61))


def test_a_worker_that_claimed_the_run_goes_on_with_its_handle() -> None:
    """claim() and then advance() on the same handle: the call is claimed as attempt 1."""
    workers = Workers()
    run = workers.runs_a.load(workers.stuck())
    assert run.claim()
    attempts: list[int] = []
    workers.a.on_call = lambda: attempts.append(workers.store.load(run.id).attempt)
    assert run.advance().state is Stage.CAPTURED
    assert attempts == [1]


def test_a_handle_behind_a_run_another_worker_finished_calls_nothing() -> None:
    """a read the run waiting to capture; b captured it since: a's claim finds the run
    moved on, and a's advance stops there, with the run as b left it."""
    workers = Workers()
    run = workers.runs_a.load(workers.stuck())
    assert workers.runs_b.resume(run.id).state is Stage.CAPTURED
    assert run.advance().state is Stage.CAPTURED
    assert workers.a.keys == []
    assert workers.b.keys == ["pay-1:2"]
    stored = workers.store.load(run.id)
    assert (stored.state, stored.version, stored.claimed_by) == ("captured", run.version, None)


def test_a_claim_runs_out_at_its_lease_exactly() -> None:
    """At `until` the claim of a worker that stopped answering is free for another."""
    workers = Workers()
    run_id = workers.stuck()
    assert workers.runs_a.load(run_id).claim()  # then a stopped answering
    workers.clock.advance(29)
    with pytest.raises(RunClaimed):
        workers.runs_b.resume(run_id)
    workers.clock.advance(1)
    assert workers.runs_b.resume(run_id).state is Stage.CAPTURED


def test_a_claimed_run_is_refused_without_calling_anything() -> None:
    """While a's call runs, b's resume raises RunClaimed and writes nothing."""
    workers = Workers()
    run_id = workers.stuck()
    seen: list[RunClaimed] = []

    def b_tries() -> None:
        version = workers.store.load(run_id).version
        with pytest.raises(RunClaimed) as refused:
            workers.runs_b.resume(run_id)
        seen.append(refused.value)
        assert workers.store.load(run_id).version == version

    workers.a.on_call = b_tries
    assert workers.runs_a.resume(run_id).state is Stage.CAPTURED
    assert workers.b.keys == []
    [error] = seen
    assert (error.run_id, error.owner, error.attempt) == (run_id, "a", 1)
    assert error.until == T0 + timedelta(seconds=30)
    assert "claimed by 'a' until 2026-01-01T12:00:30+00:00" in str(error)
    assert "nothing was called" in str(error)


def test_after_the_lease_another_worker_takes_the_step_and_the_late_outcome_is_refused() -> None:
    """a's call outlasts its lease; b takes the step (same key) and records it; a's outcome
    then fails the claim check and changes nothing."""
    workers = Workers()
    run_id = workers.stuck()

    def lease_runs_out() -> None:
        workers.clock.advance(31)
        assert workers.runs_b.resume(run_id).state is Stage.CAPTURED

    workers.a.on_call = lease_runs_out
    with pytest.raises(ConcurrencyError):
        workers.runs_a.resume(run_id)
    assert workers.a.keys == workers.b.keys == ["pay-1:2"]
    stored = workers.runs_a.load(run_id)
    assert stored.outcome == Captured("pay-1:2", "b")
    assert len(stored.history) == 2


def test_a_claim_that_did_not_commit_calls_nothing() -> None:
    """The claim's commit fails: nothing is called, and the next resume takes the step."""
    workers = Workers()
    run_id = workers.stuck()
    workers.a.uow.fail_commit = ConnectionError("connection lost")  # the claim's commit
    with pytest.raises(ConnectionError):
        workers.runs_a.resume(run_id)
    assert workers.a.keys == []
    run = workers.runs_a.resume(run_id)
    assert run.state is Stage.CAPTURED and workers.a.keys == ["pay-1:2"]


def test_a_lost_record_leaves_the_claim_and_its_worker_retries_with_the_attempt_counted() -> None:
    """The record step's commit fails: the claim stays a's; b is refused; a tries again."""
    workers = Workers()
    run_id = workers.stuck()

    def lose_the_record() -> None:
        workers.a.uow.fail_commit = ConnectionError("connection lost")

    workers.a.on_call = lose_the_record
    with pytest.raises(ConnectionError):
        workers.runs_a.resume(run_id)
    stored = workers.store.load(run_id)
    assert (stored.state, stored.claimed_by, stored.attempt) == ("capturing", "a", 1)
    with pytest.raises(RunClaimed):
        workers.runs_b.resume(run_id)
    workers.a.on_call = None
    run = workers.runs_a.resume(run_id)
    assert run.state is Stage.CAPTURED
    assert workers.a.keys == ["pay-1:2", "pay-1:2"]


def test_rollback_from_an_external_action_takes_its_row() -> None:
    workers = Workers()
    workers.a.answer = Rollback(Declined("card refused"))
    run = workers.runs_a.start({"payment": "p-1"}, run_id="pay-1")
    assert run.state is Stage.DECLINED and run.outcome == Declined("card refused")


def test_an_in_memory_run_calls_an_external_action_inline_with_its_key() -> None:
    gateway = Gateway("memory", InMemoryUnitOfWork())
    run = machine.start({"payment": "p-1"}, run_id="r", steps=gateway)
    assert run.state is Stage.CAPTURED and gateway.keys == ["r:2"]
    assert run.step_key == "r:3"


class TestDefinition:
    """external= is checked with the rest of the definition."""

    def build(self, action: object, *, external: bool) -> Machine[str]:
        return Machine(
            "m",
            states=[
                State("a", initial=True, action=action, external=external),  # type: ignore[arg-type]
                State("b", final=True),
            ],
            transitions=[("a", True, "b")],
            steps=None,
        )

    def test_external_without_an_action(self) -> None:
        with pytest.raises(DefinitionError, match="state 'a' is external=True but has no action"):
            self.build(None, external=True)

    def test_an_external_action_must_take_the_key(self) -> None:
        def charge(context: dict[str, Any]) -> bool:
            return True

        with pytest.raises(DefinitionError) as error:
            self.build(charge, external=True)
        assert (
            "state 'a': action charge takes (context); an external action is called with "
            "the context and the step's idempotency key"
        ) in str(error.value)

    def test_a_local_action_must_take_the_context_alone(self) -> None:
        def charge(context: dict[str, Any], key: str) -> bool:
            return True

        with pytest.raises(DefinitionError, match=r"takes \(context, key\); an action is called "):
            self.build(charge, external=False)

    def test_a_steps_method_counts_self(self) -> None:
        from tests.persistence.external_support import CaptureSteps, LocalCaptureSteps

        assert machine.state(Stage.CAPTURING).external
        with pytest.raises(DefinitionError, match="action capture_in_transaction takes"):
            Machine(
                "m",
                steps=LocalCaptureSteps,
                states=[
                    State(
                        "a",
                        initial=True,
                        action=LocalCaptureSteps.capture_in_transaction,
                        external=True,
                    ),
                    State("b", final=True),
                ],
                transitions=[("a", Captured, "b"), ("a", Declined, "b")],
            )
        Machine(  # the right arity passes
            "m",
            steps=CaptureSteps,
            states=[
                State("a", initial=True, action=CaptureSteps.capture, external=True),
                State("b", final=True),
            ],
            transitions=[("a", Captured, "b"), ("a", Declined, "b")],
        )
