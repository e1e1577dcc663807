"""A dead-lettered run waits for an operator: relays and workers leave it alone; a redrive
(its Redriven row with the outbox row back to pending, in one step) hands it back to the
relay. On the in-memory fakes; tests/flow/test_operations.py runs it through the CLI."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fsm.examples import ping
from fsm.outbox import Published, Redriven, redrivable
from fsm.ports import InvalidRecord
from fsm.relay import RelayReport, RelaySettings
from fsm.worker import Worker, WorkerSettings
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState, machine
from userstatus.relay import FlowSettler, OutboxRelay, flow_runs

from .conftest import MemoryFlow
from .test_failure_states import stored, stored_path

F = FlowState


def relay(flow: MemoryFlow) -> OutboxRelay:
    settings = RelaySettings(max_attempts=1)
    return OutboxRelay(flow.uow, flow.publisher, settings=settings, clock=flow.clock)


def dead_lettered(flow: MemoryFlow) -> tuple[str, str]:
    """A run whose event the relay gave up on: its id and the event's."""
    flow.publisher.failing = True
    run = flow.orchestrator.perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
    flow.clock.advance(30)  # the orchestrator's publish grace
    (event_id,) = relay(flow).run(until_idle=True).dead_events
    flow.publisher.failing = False
    assert stored(flow, run.id) == F.DEAD_LETTERED
    return run.id, event_id


class TestParked:
    def test_the_parked_states(self) -> None:
        """The flow parks its runs in DEAD_LETTERED only (its one Redriven row); ping nowhere."""
        assert (redrivable(machine), redrivable(ping)) == ((F.DEAD_LETTERED,), ())

    def test_the_relays_sweep_leaves_it(self, flow: MemoryFlow) -> None:
        """Found as left behind without `parked`; the relay's sweep passes it over."""
        run_id, _ = dead_lettered(flow)
        with flow.uow:
            assert [e.run_id for e in flow.uow.left_behind(machine.name, limit=5)] == [run_id]
        report = RelayReport()
        relay(flow).settle_left_behind(report)
        assert (report.finished_runs, report.unsettled_runs, report.errors) == (0, [], 0)
        assert stored(flow, run_id) == F.DEAD_LETTERED

    def test_a_worker_leaves_it(self, flow: MemoryFlow) -> None:
        """Not a state with a pending action: nothing for a worker to resume."""
        run_id, _ = dead_lettered(flow)
        runs = flow_runs(flow.uow, worker="w1", clock=flow.clock)
        worker = Worker([runs], settings=WorkerSettings(grace=timedelta(0)), clock=flow.clock)
        assert worker.run_once().found == 0
        assert stored(flow, run_id) == F.DEAD_LETTERED

    def test_a_late_outcome_does_not_move_it(self, flow: MemoryFlow) -> None:
        """The settle hook answers False (the outbox row alone) rather than fail."""
        run_id, event_id = dead_lettered(flow)
        settler = FlowSettler(flow.uow, clock=flow.clock, worker="w1")
        settler.finish(run_id, Published(event_id))
        assert stored(flow, run_id) == F.DEAD_LETTERED


class TestRedrive:
    def test_back_to_the_relay_and_published(self, flow: MemoryFlow) -> None:
        """Event pending again (attempts from 0), run in publish_failed; the relay ends it."""
        run_id, event_id = dead_lettered(flow)
        runs = flow_runs(flow.uow, worker="operator", clock=flow.clock)
        runs.load(run_id).send(
            Redriven(event_id),
            effect=lambda uow: flow.uow.outbox.redrive(event_id, now=flow.clock()),
        )
        record = flow.uow.outbox.records[event_id]
        assert (record.status, record.attempts, stored(flow, run_id)) == (
            "pending",
            0,
            F.PUBLISH_FAILED,
        )
        assert relay(flow).run(until_idle=True).published == 1
        assert stored_path(flow, run_id)[-3:] == [F.DEAD_LETTERED, F.PUBLISH_FAILED, F.PUBLISHED]

    def test_only_a_dead_message(self, flow: MemoryFlow) -> None:
        """A pending message is refused, unchanged."""
        flow.publisher.failing = True
        flow.orchestrator.perform(UpdateUserStatusPayload(1, UserStatus.SUSPENDED))
        (event_id,) = flow.uow.outbox.records
        with pytest.raises(InvalidRecord, match="is pending, not dead"):
            flow.uow.outbox.redrive(event_id, now=flow.clock())
