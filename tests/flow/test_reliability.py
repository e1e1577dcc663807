"""The flow under database faults, user conflicts and retried requests, on fakes."""

from __future__ import annotations

import logging
import typing
from dataclasses import replace

import pytest

from fsm.drive import Steps, settle
from fsm.faults import TransientError
from fsm.outbox import OutboxMessage
from fsm.relay import RelayReport, RelaySettings
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.fakes import FakeUserRepository
from userstatus.flow import FlowState
from userstatus.manager import UserStatusManager
from userstatus.orchestrator import (
    IdempotencyConflict,
    RunNotSettled,
    UpdateAborted,
    key_run_id,
)
from userstatus.outcomes import (
    ConcurrentUpdate,
    IllegalStatusChange,
    StorageError,
    UserStatusUpdated,
)
from userstatus.ports import UserRecord
from userstatus.relay import OutboxRelay

from .conftest import MemoryFlow

S = UserStatus
F = FlowState


def perform(
    flow: MemoryFlow, user_id: int, status: UserStatus, **options: typing.Any
) -> typing.Any:
    return flow.orchestrator.perform(UpdateUserStatusPayload(user_id, status), **options)


def stored(flow: MemoryFlow, run_id: str) -> FlowState:
    return FlowState(flow.uow.runs.runs[run_id].state)


def relay(flow: MemoryFlow) -> OutboxRelay:
    return OutboxRelay(
        flow.uow,
        flow.publisher,
        settings=RelaySettings(),
        owner="relay-1",
        clock=flow.clock,
        sleep=flow.clock.sleep,
        rand=lambda: 0.5,
    )


def outbox_status(flow: MemoryFlow) -> list[str]:
    return [record.status for record in flow.uow.outbox.records.values()]


class Rival(FakeUserRepository):
    """Another writer changes the user just before each of our first `times` writes."""

    def __init__(self, users: FakeUserRepository, times: int, to: str = "suspended") -> None:
        super().__init__(clock=users.clock)
        self.users = users.users
        self.times = times
        self.to = to

    def update_status(self, user_id: int, status: str, *, expected_version: int) -> UserRecord:
        if self.times > 0:
            self.times -= 1
            current = self.users[user_id]
            super().update_status(user_id, self.to, expected_version=current.version)
            self.updates.pop()  # the rival's write is not ours
        return super().update_status(user_id, status, expected_version=expected_version)


class StatementRival(Rival):
    """As PostgreSQL's one-statement change_status under a concurrent change: another writer
    changes the user to `to` meanwhile, and the change writes nothing and answers None,
    for the first `times` changes (no write of ours is reached while they last)."""

    def change_status(
        self, user_id: int, status: str, *, allowed_from: typing.Collection[str]
    ) -> UserRecord | None:
        if self.times > 0:
            self.times -= 1
            self.users[user_id] = replace(self.users[user_id], status=self.to)
            return None
        return super().change_status(user_id, status, allowed_from=allowed_from)


class TestConflicts:
    def test_a_change_refused_for_a_concurrent_one_is_judged_and_tried_again(self) -> None:
        """A change that wrote nothing because the user changed meanwhile, to a status the
        change is still allowed from: the manager tries again and reports the new status as
        the old one."""
        users = StatementRival(FakeUserRepository([(1, "active")]), times=1, to="suspended")
        outcome = UserStatusManager(users).update_user_status(UpdateUserStatusPayload(1, S.CLOSED))
        assert users.updates == [(1, "closed")]
        assert outcome == UserStatusUpdated(1, S.SUSPENDED, S.CLOSED)

    @pytest.mark.parametrize("rival", [Rival, StatementRival])
    def test_a_conflict_is_judged_within_its_attempt_on_either_path(
        self, rival: type[Rival]
    ) -> None:
        """Read then write (SQLite, fakes) or one statement (PostgreSQL): a change overtaken
        by one the lifecycle makes final is refused in the same attempt, not counted as a
        lost attempt."""
        users = rival(FakeUserRepository([(1, "active")]), times=1, to="closed")
        manager = UserStatusManager(users, conflict_attempts=1)
        outcome = manager.update_user_status(UpdateUserStatusPayload(1, S.SUSPENDED))
        assert outcome == IllegalStatusChange(1, S.CLOSED, S.SUSPENDED, ())

    def test_changes_refused_at_every_attempt_are_a_concurrent_update(self) -> None:
        users = StatementRival(FakeUserRepository([(1, "active")]), times=99, to="suspended")
        manager = UserStatusManager(users, conflict_attempts=3)
        outcome = manager.update_user_status(UpdateUserStatusPayload(1, S.CLOSED))
        assert (outcome, users.updates, users.times) == (ConcurrentUpdate(1, 3), [], 96)

    def test_a_conflict_is_read_again_and_written(self) -> None:
        """One concurrent change: the manager reads the user again and its change succeeds."""
        users = Rival(FakeUserRepository([(1, "active")]), times=1, to="suspended")
        outcome = UserStatusManager(users).update_user_status(UpdateUserStatusPayload(1, S.CLOSED))
        assert users.updates == [(1, "closed")]
        assert outcome.old_status == S.SUSPENDED  # type: ignore[union-attr]

    def test_the_change_is_judged_again(self) -> None:
        """If the rival closed the user meanwhile, the lifecycle refuses the change."""
        users = Rival(FakeUserRepository([(1, "active")]), times=1, to="closed")
        outcome = UserStatusManager(users).update_user_status(
            UpdateUserStatusPayload(1, S.SUSPENDED)
        )
        assert outcome == IllegalStatusChange(1, S.CLOSED, S.SUSPENDED, ())
        assert users.updates == []

    def test_endless_conflicts_become_their_own_outcome(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        """After every attempt lost, ConcurrentUpdate (not StorageError), one WARNING line."""
        users = Rival(FakeUserRepository([(1, "active")]), times=99, to="active")
        manager = UserStatusManager(users, conflict_attempts=3)
        with caplog.at_level(logging.WARNING):
            outcome = manager.update_user_status(UpdateUserStatusPayload(1, S.SUSPENDED))
        assert outcome == ConcurrentUpdate(1, 3)
        assert [r.levelname for r in caplog.records] == ["WARNING"]

    def test_the_run_ends_update_failed_through_its_row(self, flow: MemoryFlow) -> None:
        """The flow records ConcurrentUpdate through the table, with no event."""
        rival = Rival(flow.users, times=99, to="active")
        flow.orchestrator.manager = UserStatusManager(rival)
        run = perform(flow, 1, S.SUSPENDED)
        assert (run.state, run.outcome) == (F.UPDATE_FAILED, ConcurrentUpdate(1, 3))
        assert flow.uow.outbox.records == {}


class TestStoredErrors:
    def test_a_storage_error_keeps_no_sql_or_parameters(self, flow: MemoryFlow) -> None:
        """The stored outcome has the error's type and first line; the log has the rest."""
        flow.users.fail_on_update = OSError(
            "value too long\n[SQL: UPDATE users SET status=? WHERE id=?]\n"
            "[parameters: ('suspended', 4242424242)]"
        )
        run = perform(flow, 1, S.SUSPENDED)
        assert run.outcome == StorageError(1, "OSError: value too long", False)
        assert "4242424242" not in str(flow.uow.runs.load(run.id).context)
        assert "4242424242" not in str(flow.uow.runs.history(run.id))


class TestFailedUpdateThroughTheTable:
    def test_a_refused_write_is_update_failed_in_one_start(self, flow: MemoryFlow) -> None:
        """The step rolls back and its outcome's row records it: one start, one commit."""
        flow.users.fail_on_update = ValueError("value too long")
        starts: list[str] = []
        start = flow.orchestrator.runs.start

        def counted(*args: typing.Any, **kwargs: typing.Any) -> typing.Any:
            starts.append(kwargs["run_id"])
            return start(*args, **kwargs)

        flow.orchestrator.runs.start = counted  # type: ignore[method-assign]
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.UPDATE_FAILED
        assert starts == [run.id]  # no second start to record the failure
        assert [h.target for h in flow.uow.runs.history(run.id)] == ["update_failed"]
        assert flow.uow.outbox.records == {}

    def test_an_event_the_outbox_refuses_undoes_the_user_change(self, flow: MemoryFlow) -> None:
        """The user was written before the outbox refused: the rollback undoes it too."""

        def refuse(message: OutboxMessage, **_: object) -> int:
            raise ValueError("outbox full")

        flow.uow.outbox.add = refuse  # type: ignore[method-assign]
        run = perform(flow, 1, S.SUSPENDED)
        assert (run.state, flow.users.status_of(1)) == (F.UPDATE_FAILED, "active")
        assert run.outcome == StorageError(1, "ValueError: outbox full", False)


class TestTransientSteps:
    def test_a_failed_first_commit_is_tried_again(self, flow: MemoryFlow) -> None:
        """A lost connection at step 1's commit: tried again, published, one event."""
        flow.uow.fail_commit = TransientError("connection lost")
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.PUBLISHED
        assert len(flow.uow.runs.runs) == 1 and len(flow.publisher.sent) == 1
        assert flow.users.updates == [(1, "suspended")]

    def test_a_lost_acknowledgement_of_step_one_is_read_back(self, flow: MemoryFlow) -> None:
        """Step 1 committed but its caller saw an error: the stored run goes on to publish."""
        flow.uow.lose_commit_ack = TransientError("connection lost after COMMIT")
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.PUBLISHED
        assert flow.users.updates == [(1, "suspended")]
        assert len(flow.publisher.sent) == 1

    def test_a_failed_publish_step_is_recorded_without_publishing_again(
        self, flow: MemoryFlow
    ) -> None:
        """Step 2's commit fails after the broker took the event: recorded again, sent once."""
        publish = flow.publisher.publish

        def then_lose_the_database(message: OutboxMessage) -> None:
            publish(message)
            flow.uow.fail_commit = TransientError("connection lost")

        flow.publisher.publish = then_lose_the_database  # type: ignore[method-assign]
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.PUBLISHED
        assert len(flow.publisher.sent) == 1
        assert outbox_status(flow) == ["published"]

    def test_a_database_that_stays_away_raises_run_not_settled(self, flow: MemoryFlow) -> None:
        """If step 2 cannot be recorded, perform() says so; the relay finishes the run."""
        load = flow.uow.runs.load
        publish = flow.publisher.publish

        def then_fail_every_load(message: OutboxMessage) -> None:
            publish(message)
            flow.uow.fail_commit = TransientError("connection lost")

            def down(run_id: str) -> typing.Any:
                raise TransientError("connection refused")

            flow.uow.runs.load = down  # type: ignore[method-assign]

        flow.publisher.publish = then_fail_every_load  # type: ignore[method-assign]
        with pytest.raises(RunNotSettled, match="the outbox relay publishes the event") as caught:
            perform(flow, 1, S.SUSPENDED)
        flow.uow.runs.load = load  # type: ignore[method-assign]
        flow.publisher.publish = publish  # type: ignore[method-assign]
        assert stored(flow, caught.value.run_id) == F.STATUS_UPDATED
        flow.clock.advance(60)  # past the hold on the new event
        assert relay(flow).run(until_idle=True).published == 1
        assert stored(flow, caught.value.run_id) == F.PUBLISHED

    def test_a_permanent_error_is_not_tried_again(self, flow: MemoryFlow) -> None:
        """An error that is not transient is recorded at once: one attempt, update_failed."""
        flow.users.fail_on_update = ValueError("bad data")
        before = flow.clock.now
        run = perform(flow, 1, S.SUSPENDED)
        assert run.state == F.UPDATE_FAILED
        assert flow.clock.now == before  # the orchestrator's sleep moves this clock: no wait


class TestIdempotency:
    def test_the_same_request_applies_once(self, flow: MemoryFlow) -> None:
        """A retried request with its key returns the first run: one change, one event."""
        first = perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        again = perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        assert again.id == first.id == key_run_id("req-1")
        assert again.state == F.PUBLISHED
        assert flow.users.updates == [(1, "suspended")]
        assert len(flow.publisher.sent) == 1

    def test_a_key_reused_for_another_change_is_refused(self, flow: MemoryFlow) -> None:
        """The same key with a different change raises, naming both; nothing is written."""
        perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        with pytest.raises(IdempotencyConflict, match="user 1 -> suspended; this request asks"):
            perform(flow, 2, S.ACTIVE, idempotency_key="req-1")
        assert len(flow.uow.runs.runs) == 1 and flow.users.updates == [(1, "suspended")]

    def test_a_failed_request_is_answered_the_same(self, flow: MemoryFlow) -> None:
        """A request that ended update_failed returns that run again, not a second try."""
        first = perform(flow, 3, S.ACTIVE, idempotency_key="k")
        assert perform(flow, 3, S.ACTIVE, idempotency_key="k").id == first.id
        assert len(flow.uow.runs.runs) == 1

    def test_a_racing_request_for_another_change_is_refused(self, flow: MemoryFlow) -> None:
        """A run stored under the key between the check and the write: still a conflict."""
        other = UpdateUserStatusPayload(2, S.ACTIVE)
        stored_first = flow.orchestrator._stored

        def racing(run_id: str, context: dict[str, typing.Any]) -> Steps[None]:
            flow.orchestrator._stored = stored_first  # type: ignore[method-assign]
            flow.orchestrator.perform(other, idempotency_key="req-1")  # the other request
            return (yield from settle(None))  # this request's own check saw nothing yet

        flow.orchestrator._stored = racing  # type: ignore[method-assign]
        with pytest.raises(IdempotencyConflict):
            perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        assert flow.users.updates == [(2, "active")]

    def test_a_replay_of_a_run_still_publishing_says_so(self, flow: MemoryFlow) -> None:
        """A run left in status_updated under the key: the retry raises RunNotSettled."""

        def crash(event: typing.Any) -> typing.Any:
            raise KeyboardInterrupt  # the first process dies after its commit

        publish = flow.orchestrator.publisher.publish
        flow.orchestrator.publisher.publish = crash  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        flow.orchestrator.publisher.publish = publish  # type: ignore[method-assign]
        with pytest.raises(RunNotSettled, match="another call with this idempotency key"):
            perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        assert flow.users.updates == [(1, "suspended")]

    def test_a_transient_failure_leaves_the_key_unused(self, flow: MemoryFlow) -> None:
        """The database away for every try: nothing stored, so the client's retry applies."""
        flow.users.fail_on_update = TransientError("connection refused")
        with pytest.raises(UpdateAborted, match="connection refused") as caught:
            perform(flow, 1, S.SUSPENDED, idempotency_key="req-1")
        assert caught.value.outcome.transient
        assert flow.uow.runs.runs == {}
        flow.users.fail_on_update = None
        assert perform(flow, 1, S.SUSPENDED, idempotency_key="req-1").state == F.PUBLISHED

    @pytest.mark.parametrize("key", ["", "x" * 201, 7])
    def test_a_bad_key_is_refused(self, flow: MemoryFlow, key: typing.Any) -> None:
        """An empty, too long or non-string key is one clear error."""
        with pytest.raises(ValueError, match="idempotency key must be a string of 1 to 200"):
            perform(flow, 1, S.SUSPENDED, idempotency_key=key)
        assert flow.uow.runs.runs == {}


class TestRelaySettles:
    def offline(self, flow: MemoryFlow) -> str:
        return self.offline_user(flow, 1, S.SUSPENDED)

    def offline_user(self, flow: MemoryFlow, user_id: int, status: UserStatus) -> str:
        flow.publisher.failing = True
        run_id = str(perform(flow, user_id, status).id)
        flow.publisher.failing = False
        return run_id

    def test_a_failure_after_the_publish_is_tried_again(self, flow: MemoryFlow) -> None:
        """A lost connection while recording the attempt: tried again, run and row agree."""
        run_id = self.offline(flow)
        publish = flow.publisher.publish

        def then_lose_the_database(message: OutboxMessage) -> None:
            publish(message)
            flow.uow.fail_commit = TransientError("connection lost")

        flow.publisher.publish = then_lose_the_database  # type: ignore[method-assign]
        report = relay(flow).run_once()
        assert (report.published, report.unsettled_runs) == (1, [])
        assert stored(flow, run_id) == F.PUBLISHED and outbox_status(flow) == ["published"]

    def test_a_lost_acknowledgement_is_not_recorded_twice(self, flow: MemoryFlow) -> None:
        """The settle committed but the relay saw an error: nothing is recorded again."""
        run_id = self.offline(flow)
        flow.publisher.failing = True
        attempts = flow.uow.outbox.records[next(iter(flow.uow.outbox.records))]
        commit = flow.uow.commit

        def lose_the_settle_ack() -> None:  # the settle is the commit after the publish
            if flow.publisher.attempts >= 2 and flow.uow.lose_commit_ack is None:
                flow.uow.lose_commit_ack = TransientError("ack lost")
                flow.uow.commit = commit  # type: ignore[method-assign]
            commit()

        flow.uow.commit = lose_the_settle_ack  # type: ignore[method-assign]
        report = relay(flow).run_once()
        assert report.failed == 1 and report.unsettled_runs == []
        assert attempts.attempts == 2  # the immediate attempt and this one, counted once
        assert [h.target for h in flow.uow.runs.history(run_id)][-1] == "publish_failed"
        assert len(flow.uow.runs.history(run_id)) == 3

    def test_a_database_that_stays_away_leaves_the_event_pending(self, flow: MemoryFlow) -> None:
        """Nothing is marked published while its run cannot follow; later both settle."""
        run_id = self.offline(flow)
        load = flow.uow.runs.load
        publish = flow.publisher.publish

        def down(run_id: str) -> typing.Any:
            raise TransientError("connection refused")

        def then_lose_the_database(message: OutboxMessage) -> None:
            publish(message)
            flow.uow.runs.load = down  # type: ignore[method-assign]

        flow.publisher.publish = then_lose_the_database  # type: ignore[method-assign]
        worker = relay(flow)
        report = worker.run_once()
        assert (report.published, report.errors, report.unsettled_runs) == (0, 1, [])
        assert outbox_status(flow) == ["pending"] and stored(flow, run_id) == F.PUBLISH_FAILED
        flow.uow.runs.load = load  # type: ignore[method-assign]
        flow.publisher.publish = publish  # type: ignore[method-assign]
        assert worker.run(until_idle=True).published == 1  # after the lease: a duplicate send
        assert outbox_status(flow) == ["published"] and stored(flow, run_id) == F.PUBLISHED

    def test_a_write_refused_for_good_is_recorded_for_operators(
        self, flow: MemoryFlow, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A run whose step the store refuses every time: the outbox row alone, reported,
        so the event is neither sent forever nor kept from max_attempts."""
        run_id = self.offline(flow)

        def refuse(entry: typing.Any) -> None:
            raise ValueError("history row refused")

        flow.uow.runs.append = refuse  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="fsm.relay"):
            report = relay(flow).run_once()
        assert (report.published, report.unsettled_runs) == (1, [run_id])
        assert outbox_status(flow) == ["published"]
        assert len(flow.publisher.sent) == 1
        (event_id,) = flow.uow.outbox.records
        assert [r.getMessage() for r in caplog.records if r.name == "fsm.relay"] == [
            f"relay relay-1: RUN {run_id} NEEDS AN OPERATOR: event {event_id} was recorded as "
            "Published, but the run can never move: ValueError('history row refused')"
        ]

    def test_outbox_rows_refused_too_stay_pending(
        self, flow: MemoryFlow, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The runs cannot move and the outbox rows alone are refused as well: nothing is
        recorded, an error is counted and logged for each, and the events are sent again."""
        run_ids = [self.offline(flow), self.offline_user(flow, 2, S.ACTIVE)]

        def refuse(*event_ids: str, owner: str, now: typing.Any) -> None:
            raise ValueError("outbox row refused")

        flow.uow.outbox.mark_published = refuse  # type: ignore[method-assign]
        with caplog.at_level(logging.ERROR, logger="fsm.relay"):
            report = relay(flow).run_once()
        assert (report.published, report.errors, report.unsettled_runs) == (0, 2, [])
        assert outbox_status(flow) == ["pending", "pending"]
        assert [stored(flow, run_id) for run_id in run_ids] == [F.PUBLISH_FAILED] * 2
        refused = "ValueError('outbox row refused')"
        assert [r.getMessage() for r in caplog.records if r.name == "fsm.relay"] == [
            f"relay relay-1: recording event {event_id} failed: {refused} (then {refused}); "
            "it stays pending and is tried again when its lease runs out"
            for event_id in flow.uow.outbox.records
        ]

    def test_runs_left_behind_are_finished(self, flow: MemoryFlow) -> None:
        """A run whose event is published without it (an older version's doing) is finished."""
        run_id = self.offline(flow)
        (event_id,) = flow.uow.outbox.records
        with flow.uow:
            flow.uow.outbox.mark_published(event_id, owner="old-relay", now=flow.clock())
        report = relay(flow).run(until_idle=True)
        assert (report.finished_runs, report.published) == (1, 0)
        assert stored(flow, run_id) == F.PUBLISHED

    def test_a_run_that_cannot_move_does_not_block_the_sweep(self, flow: MemoryFlow) -> None:
        """Reported once, then skipped: the next sweep reaches the runs behind it."""
        stuck, later = self.offline(flow), self.offline_user(flow, 2, S.ACTIVE)
        with flow.uow:
            for event_id in list(flow.uow.outbox.records):
                flow.uow.outbox.mark_published(event_id, owner="old-relay", now=flow.clock())
        record = flow.uow.runs.runs[stuck]
        flow.uow.runs.runs[stuck] = replace(record, state="no_such_state")
        worker = OutboxRelay(flow.uow, flow.publisher, settings=RelaySettings(batch_size=1))
        first, second = RelayReport(), RelayReport()
        worker.settle_left_behind(first)
        worker.settle_left_behind(second)
        assert (first.unsettled_runs, first.finished_runs) == ([stuck], 0)
        assert (second.unsettled_runs, second.finished_runs) == ([], 1)
        assert stored(flow, later) == F.PUBLISHED
