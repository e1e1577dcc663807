"""Every failure state of the flow, reached on fakes, with what was (not) written."""

from __future__ import annotations

import logging
import typing
from dataclasses import replace
from datetime import timedelta

import pytest

from fsm.definition import Machine
from fsm.errors import BindError, DefinitionError
from fsm.relay import RelaySettings
from fsm.validation import outcome_family
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.flow import FlowState, machine
from userstatus.outcomes import (
    IllegalStatusChange,
    PublishFailed,
    RelayOutcome,
    StorageError,
    UserNotFound,
)
from userstatus.relay import OutboxRelay

from .conftest import MemoryFlow

S = UserStatus
F = FlowState


def perform(flow: MemoryFlow, user_id: int, status: UserStatus) -> typing.Any:
    return flow.orchestrator.perform(UpdateUserStatusPayload(user_id, status))


def stored(flow: MemoryFlow, run_id: str) -> FlowState:
    """The state the run is stored in."""
    return FlowState(flow.uow.runs.state_of(run_id))


def stored_path(flow: MemoryFlow, run_id: str) -> list[FlowState]:
    """The targets of the run's stored history, in order."""
    return [FlowState(h.target) for h in flow.uow.runs.history(run_id)]


class Crash(BaseException):
    """The process dies."""


def crash_after_commit(flow: MemoryFlow) -> str:
    """Update user 1 and die after the commit, before the publish; the run's id."""

    def die(event: typing.Any) -> typing.Any:
        raise Crash

    flow.orchestrator.publisher.publish = die  # type: ignore[method-assign]
    with pytest.raises(Crash):
        perform(flow, 1, S.SUSPENDED)
    (run_id,) = flow.uow.runs.runs
    return str(run_id)


class TestDefinition:
    def test_the_table_handles_every_outcome(self) -> None:
        """Building the flow proves each action's closed family has rows."""
        assert machine.name == "user_status_update"
        failures = {s.name for s in machine.states if s.failure}
        assert failures == {F.UPDATE_FAILED, F.PUBLISH_FAILED, F.DEAD_LETTERED}

    def test_relay_outcomes_are_handled_from_publish_failed(self) -> None:
        """Every outcome a relay attempt can have has a row out of publish_failed."""
        family = outcome_family(OutboxRelay.attempt)
        assert family is not None
        assert set(family) == set(typing.get_args(RelayOutcome))
        triggers = {row.trigger for row in machine.rows_from(F.PUBLISH_FAILED)}
        assert set(family) <= triggers

    def test_a_missing_row_fails_the_build(self) -> None:
        """Dropping the StorageError row makes the machine refuse to build, naming it."""
        rows = [r for r in machine.transitions if r.trigger is not StorageError]
        with pytest.raises(DefinitionError, match="StorageError"):
            Machine("broken", states=machine.states, transitions=rows)

    def test_actions_without_collaborators_say_so(self) -> None:
        """Running the definition with no steps object names what its states run."""
        with pytest.raises(BindError, match="update_status of FlowSteps") as caught:
            machine.start({"user_id": 1, "new_status": "active"})
        assert caught.value.missing == ("update_status",)

    def test_every_orchestrator_runs_the_one_definition(self, flow: MemoryFlow) -> None:
        """Orchestrators share the module's machine: one object for checks, diagrams, coverage."""
        assert flow.orchestrator.machine is machine
        assert perform(flow, 1, S.SUSPENDED).run.machine is machine


class TestUpdateFailed:
    def test_user_not_found(self, flow: MemoryFlow) -> None:
        """A missing user ends in update_failed with nothing written and no event."""
        run = perform(flow, 99, S.ACTIVE)
        assert run.state == F.UPDATE_FAILED
        assert run.outcome == UserNotFound(99)
        assert flow.users.updates == []
        assert flow.uow.outbox.records == {}
        assert flow.publisher.sent == []
        assert stored(flow, run.id) == F.UPDATE_FAILED

    def test_illegal_status_change(self, flow: MemoryFlow) -> None:
        """Reopening a closed account is an outcome naming what is allowed, not an exception."""
        run = perform(flow, 3, S.ACTIVE)
        assert run.state == F.UPDATE_FAILED
        assert run.outcome == IllegalStatusChange(3, S.CLOSED, S.ACTIVE, ())
        assert flow.users.status_of(3) == "closed"
        assert flow.publisher.sent == []

    def test_storage_error_on_update(self, flow: MemoryFlow) -> None:
        """A repository that raises gives StorageError; nothing commits, no event."""
        flow.users.fail_on_update = OSError("disk full")
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.UPDATE_FAILED
        assert isinstance(run.outcome, StorageError)
        assert "disk full" in run.outcome.error
        assert flow.users.status_of(1) == "active"
        assert flow.uow.outbox.records == {}
        assert flow.publisher.sent == []
        assert stored(flow, run.id) == F.UPDATE_FAILED

    def test_commit_fails(self, flow: MemoryFlow) -> None:
        """A commit that fails leaves neither the status nor the event, and records the failure."""
        flow.uow.fail_commit = RuntimeError("serialization failure")
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.UPDATE_FAILED
        assert isinstance(run.outcome, StorageError)
        assert "serialization failure" in run.outcome.error
        assert flow.users.status_of(1) == "active"
        assert flow.uow.outbox.records == {}
        assert flow.publisher.sent == []
        assert stored_path(flow, run.id) == [F.UPDATE_FAILED]

    def test_outbox_refusal_rolls_the_update_back(self, flow: MemoryFlow) -> None:
        """If the event cannot be added, the status change does not commit either."""

        def refuse(message: typing.Any, **_: object) -> int:
            raise OSError("outbox table is read-only")

        flow.uow.outbox.add = refuse  # type: ignore[method-assign]
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.UPDATE_FAILED
        assert "outbox table is read-only" in run.outcome.error
        assert flow.users.status_of(1) == "active"
        assert flow.publisher.sent == []


class TestPublishFailed:
    def test_broker_down(self, flow: MemoryFlow) -> None:
        """The update commits, the publish fails: publish_failed, event pending, status kept."""
        flow.publisher.failing = True
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.PUBLISH_FAILED
        assert isinstance(run.outcome, PublishFailed)
        assert flow.users.status_of(1) == "suspended"
        assert flow.uow.outbox.counts()["pending"] == 1
        assert stored_path(flow, run.id) == [F.STATUS_UPDATED, F.PUBLISH_FAILED]

    def test_later_event_waits_behind_a_pending_one(self, flow: MemoryFlow) -> None:
        """A user's second change is not published before the first: it waits for the relay."""
        flow.publisher.failing = True
        perform(flow, 1, S.SUSPENDED)
        flow.publisher.failing = False
        second = perform(flow, 1, S.ACTIVE)
        assert second.state == F.PUBLISH_FAILED
        assert "earlier event" in second.outcome.error
        assert flow.publisher.sent == []


class TestRelayRecovery:
    def relay(self, flow: MemoryFlow, **settings: typing.Any) -> OutboxRelay:
        return OutboxRelay(
            flow.uow,
            flow.publisher,
            settings=RelaySettings(**settings),
            owner="relay-1",
            clock=flow.clock,
            sleep=flow.clock.sleep,
            rand=lambda: 0.5,
        )

    def test_relay_publishes_in_order_and_finishes_runs(self, flow: MemoryFlow) -> None:
        """After an outage the relay publishes each user's events in commit order."""
        flow.publisher.failing = True
        runs = [
            perform(flow, 1, S.SUSPENDED),
            perform(flow, 2, S.ACTIVE),
            perform(flow, 1, S.ACTIVE),
            perform(flow, 1, S.CLOSED),
        ]
        flow.publisher.failing = False
        report = self.relay(flow).run(until_idle=True)
        assert report.published == 4
        statuses = [(m.key, m.value) for m in flow.publisher.sent if m.key == "1"]
        assert [b'"new_status":"suspended"' in v for _, v in statuses] == [True, False, False]
        assert [b'"new_status":"closed"' in v for _, v in statuses][-1]
        for run in runs:
            assert stored(flow, run.id) == F.PUBLISHED
        assert flow.uow.outbox.counts()["pending"] == 0

    def held_elsewhere(self, flow: MemoryFlow) -> str:
        """A run whose event is due for the relay while another worker still holds the run
        for 100 s (its step after the commit being recorded); the run's id."""
        run_id = crash_after_commit(flow)
        runs = flow.uow.runs.runs
        until = flow.clock() + timedelta(seconds=100)
        runs[run_id] = replace(runs[run_id], claimed_by="web-1", claimed_until=until)
        flow.clock.advance(30)  # the publish grace: the relay may take the event
        return run_id

    def test_a_run_another_worker_holds_is_left_to_the_sweep(
        self, flow: MemoryFlow, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The relay publishes an event whose run another worker holds: the outbox row is
        recorded at once (left pending, the event would be sent again after the lease),
        and the run is left to the left-behind sweep, not to an operator."""
        run_id = self.held_elsewhere(flow)
        caplog.set_level(logging.INFO, logger="fsm.relay")
        report = self.relay(flow).run_once()
        assert (report.published, report.errors, report.unsettled_runs) == (1, 0, [])
        assert flow.uow.outbox.counts()["published"] == 1
        assert stored(flow, run_id) == F.STATUS_UPDATED
        assert f"its run {run_id} is moved by the left-behind sweep" in caplog.text
        assert "NEEDS AN OPERATOR" not in caplog.text

    def test_a_drain_ends_once_the_held_run_has_moved(self, flow: MemoryFlow) -> None:
        """Drained means every run is final: with its event recorded, the relay keeps
        sweeping while another worker holds the run, and moves it once the claim is over
        (the idle sleeps advance the clock); the event was sent once."""
        run_id = self.held_elsewhere(flow)
        began = flow.clock()
        report = self.relay(flow).run(until_idle=True)
        assert (report.published, report.finished_runs, report.errors) == (1, 1, 0)
        assert flow.clock() - began >= timedelta(seconds=70)  # the rest of the claim
        assert stored_path(flow, run_id) == [F.STATUS_UPDATED, F.PUBLISH_FAILED, F.PUBLISHED]
        assert len(flow.publisher.sent) == 1

    def test_a_running_relay_moves_the_held_run_before_its_next_sweep_is_due(
        self, flow: MemoryFlow
    ) -> None:
        """A relay that is not draining sweeps again on each round while a run it left
        behind is held, not only every `sweep_interval`."""
        run_id = self.held_elsewhere(flow)
        self.relay(flow, sweep_interval=1000).run(max_seconds=150)
        assert stored(flow, run_id) == F.PUBLISHED

    def test_crash_after_commit_before_publish(self, flow: MemoryFlow) -> None:
        """A run left in status_updated (process died) is finished by the relay."""

        run_id = crash_after_commit(flow)
        assert stored(flow, run_id) == F.STATUS_UPDATED
        assert flow.users.status_of(1) == "suspended"
        relay = self.relay(flow)
        assert relay.run_once().claimed == 0  # held for the orchestrator that died
        flow.clock.advance(30)  # its publish grace
        assert relay.run_once().published == 1
        assert stored_path(flow, run_id) == [F.STATUS_UPDATED, F.PUBLISH_FAILED, F.PUBLISHED]
        assert len(flow.publisher.sent) == 1

    def test_crashed_run_can_be_dead_lettered(self, flow: MemoryFlow) -> None:
        """A run left in status_updated whose event never goes out ends dead-lettered too."""

        run_id = crash_after_commit(flow)
        flow.publisher.failing = True
        flow.clock.advance(30)
        report = self.relay(flow, max_attempts=1).run(until_idle=True)
        assert report.dead == 1
        assert stored_path(flow, run_id) == [
            F.STATUS_UPDATED,
            F.PUBLISH_FAILED,
            F.DEAD_LETTERED,
        ]

    def test_relay_leaves_an_event_being_published_alone(self, flow: MemoryFlow) -> None:
        """While the orchestrator publishes a new event, a relay does not claim it too."""
        relay = self.relay(flow)
        seen_by_relay: list[int] = []
        original = flow.publisher.publish

        def publish_while_relay_polls(message: typing.Any) -> None:
            seen_by_relay.append(relay.run_once().claimed)
            original(message)

        flow.publisher.publish = publish_while_relay_polls  # type: ignore[method-assign]
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.PUBLISHED
        assert seen_by_relay == [0]
        assert len(flow.publisher.sent) == 1

    def test_immediate_failure_is_counted_and_due_at_once(self, flow: MemoryFlow) -> None:
        """A failed immediate publish counts as attempt 1, keeps its error, is due at once."""
        flow.publisher.failing = True
        perform(flow, 1, S.SUSPENDED)
        (record,) = flow.uow.outbox.by_status("pending")
        assert record.attempts == 1
        assert "broker unavailable" in (record.last_error or "")
        assert record.next_attempt_at == flow.clock()

    def test_any_publisher_error_is_a_failed_attempt(self, flow: MemoryFlow) -> None:
        """A publisher raising something unexpected fails the attempt; the relay keeps going."""
        flow.publisher.failing = True
        run = perform(flow, 1, S.SUSPENDED)

        def broken(message: typing.Any) -> None:
            raise RuntimeError("serializer bug")

        flow.publisher.publish = broken  # type: ignore[method-assign]
        report = self.relay(flow).run_once()
        assert (report.failed, report.errors) == (1, 0)
        assert stored(flow, run.id) == F.PUBLISH_FAILED
        (record,) = flow.uow.outbox.by_status("pending")
        assert "serializer bug" in (record.last_error or "")

    def test_retries_exhausted_dead_letters(self, flow: MemoryFlow) -> None:
        """When every relay attempt fails the event is dead-lettered and reported, not dropped."""
        flow.publisher.failing = True
        run = perform(flow, 1, S.SUSPENDED)
        report = self.relay(flow, max_attempts=3, backoff_initial=1.0).run(until_idle=True)
        assert report.failed == 1  # attempt 2; attempt 1 was the immediate publish
        assert report.dead == 1
        assert report.dead_events == [run.context["event"]["event_id"]]
        assert stored_path(flow, run.id) == [
            F.STATUS_UPDATED,
            F.PUBLISH_FAILED,
            F.PUBLISH_FAILED,
            F.DEAD_LETTERED,
        ]
        (dead,) = flow.uow.outbox.by_status("dead")
        assert dead.attempts == 2  # two counted failures, the third attempt dead-lettered it
        assert "gave up after 3 attempts" in (dead.last_error or "")

    def test_age_limit_dead_letters(self, flow: MemoryFlow) -> None:
        """An event older than max_age is dead-lettered at its next failed attempt."""
        from datetime import timedelta

        flow.publisher.failing = True
        run = perform(flow, 1, S.SUSPENDED)
        flow.clock.advance(3600)
        report = self.relay(flow, max_age=timedelta(minutes=30)).run(until_idle=True)
        assert report.dead == 1
        assert stored(flow, run.id) == F.DEAD_LETTERED

    def test_backoff_between_attempts(self, flow: MemoryFlow) -> None:
        """A failed attempt is retried only after its backoff delay."""
        flow.publisher.failing = True
        perform(flow, 1, S.SUSPENDED)
        relay = self.relay(flow, backoff_initial=10.0)
        assert relay.run_once().failed == 1  # attempt 2 (the first was the immediate one)
        flow.clock.advance(19.0)
        assert relay.run_once().claimed == 0
        flow.clock.advance(1.0)  # 10 s doubled once, jitter centred
        assert relay.run_once().claimed == 1

    def test_expired_lease_is_claimed_again(self, flow: MemoryFlow) -> None:
        """A relay that dies holding a claim does not strand the event: the lease expires."""
        flow.publisher.failing = True
        perform(flow, 1, S.SUSPENDED)
        flow.publisher.failing = False
        outbox = flow.uow.outbox
        dead_relay = outbox.claim(owner="dead", limit=10, lease_seconds=30, now=flow.clock())
        assert len(dead_relay) == 1
        relay = self.relay(flow)
        assert relay.run_once().claimed == 0
        flow.clock.advance(31)
        assert relay.run_once().published == 1

    def test_stop_releases_claimed_events(self, flow: MemoryFlow) -> None:
        """Stopping between events hands the unfinished claims back: claimable at once."""
        flow.publisher.failing = True
        for user in (1, 2, 4):
            perform(flow, user, S.CLOSED)
        flow.publisher.failing = False
        relay = self.relay(flow)
        original = flow.publisher.publish

        def publish_then_stop(message: typing.Any) -> None:
            original(message)
            relay.stop()

        flow.publisher.publish = publish_then_stop  # type: ignore[method-assign]
        report = relay.run()
        assert (report.claimed, report.published, report.released) == (3, 1, 2)
        assert flow.uow.outbox.counts()["pending"] == 2
        flow.publisher.publish = original  # type: ignore[method-assign]
        assert self.relay(flow).run_once().published == 2  # no lease to wait out
        assert flow.uow.outbox.counts()["pending"] == 0
        assert len({m.event_id for m in flow.publisher.sent}) == 3
