"""The flow's orchestrators, sync and async: they run the flow machine, one committed
transaction per step, with one set of rules."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from fsm.defaults import new_id, utc_now
from fsm.drive import Steps, run_async, run_sync, settle
from fsm.errors import FSMError
from fsm.faults import causes, describe_error, is_retryable, is_transient
from fsm.persistence import (
    AsyncPersistentMachine,
    AsyncPersistentRun,
    PersistentMachine,
    PersistentRun,
    StoredRun,
)
from fsm.ports import RunExists, RunNotFound
from fsm.retry import STEP_RETRY, RetryPolicy, retry_steps
from fsm.runtime import Rollback, Run, Transition
from userstatus.domain import UpdateUserStatusPayload, UserStatus
from userstatus.events import TOPIC, UserStatusChanged
from userstatus.flow import FlowState, machine
from userstatus.outcomes import (
    Published,
    PublishFailed,
    PublishOutcome,
    StorageError,
    UpdateOutcome,
    UserStatusUpdated,
)
from userstatus.ports import (
    AsyncEventPublisher,
    AsyncFlowUnitOfWork,
    EventPublisher,
    FlowStores,
    FlowUnitOfWork,
    StatusManager,
)

log = logging.getLogger(__name__)
H = TypeVar("H", bound=StoredRun[FlowState])
U = TypeVar("U", bound=FlowStores)
E = TypeVar("E", bound=EventPublisher | AsyncEventPublisher)

STORAGE_ERROR = "storage_error"
"""Context key: a first step that failed outside its action (its commit) or kept failing
transiently; a second start records it as update_failed. Failures inside the action are a
Rollback and take their row in the one start."""

KEY_LENGTH = 200
_KEYS = uuid.UUID("5f0b7f8e-6c1d-4a59-9a57-3d2f6f1b0c11")


def key_run_id(idempotency_key: str) -> str:
    """The run id a request's idempotency key stands for: the same in every process, so the
    runs table's primary key makes a key apply once."""
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= KEY_LENGTH:
        raise ValueError(
            f"idempotency key must be a string of 1 to {KEY_LENGTH} characters, "
            f"got {idempotency_key!r:.60}"
        )
    return "key-" + uuid.uuid5(_KEYS, idempotency_key).hex


class UpdateAborted(FSMError):
    """The update step failed in the database: its transaction is rolled back as a whole.

    perform() raises it for a request with an idempotency key whose failure was transient
    (`outcome.transient`): nothing is stored, so sending the request again may apply it."""

    def __init__(self, outcome: StorageError) -> None:
        self.outcome = outcome
        super().__init__(outcome.error)


class IdempotencyConflict(FSMError, ValueError):
    """An idempotency key already used for another change: nothing was done."""

    def __init__(self, key: str, stored: dict[str, Any], asked: dict[str, Any]) -> None:
        self.key = key
        super().__init__(
            f"idempotency key {key!r} was used for user {stored.get('user_id')} -> "
            f"{stored.get('new_status')}; this request asks user {asked['user_id']} -> "
            f"{asked['new_status']}: a different change needs a new key"
        )


class RunNotSettled(FSMError):
    """The update committed and its event is in the outbox, but the run's publish step is
    not recorded (the database kept failing, or another call with the same idempotency key
    is taking it): the outbox relay publishes the event and finishes the run if nobody
    else does. `run_id` names it."""

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        super().__init__(
            f"run {run_id}: the update committed but its publish step is not recorded "
            f"({reason}); the outbox relay publishes the event and finishes the run"
        )


class _Orchestration(Generic[H, U, E]):
    """What the sync and the async orchestrator share: the settings, every rule of
    `perform` as Steps (fsm.drive), and the actions' own work. A subclass supplies the
    runner (`_runner` sets `runs`), the three calls into it as Steps, the default `sleep`
    and the actions' signatures (plain or `async def`)."""

    def __init__(
        self,
        manager: StatusManager,
        publisher: E,
        uow: U,
        *,
        topic: str = TOPIC,
        owner: str = "orchestrator",
        clock: Callable[[], datetime] = utc_now,
        ids: Callable[[], str] = new_id,
        publish_grace: timedelta = timedelta(seconds=30),
        step_retry: RetryPolicy = STEP_RETRY,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.manager = manager
        self.publisher = publisher
        self.uow = uow
        self.topic = topic
        self.owner = owner
        self.clock = clock
        self.ids = ids
        self.publish_grace = publish_grace
        self.step_retry = step_retry
        self.sleep = sleep if sleep is not None else self._default_sleep()
        self.machine = machine
        self._publishes: dict[str, PublishOutcome] = {}
        self._runner()

    # -- the runner, in the subclass's kind

    def _runner(self) -> None:
        """Set `runs`: the persistent machine of the subclass's kind on `uow`, its actions
        this object's, its listener `_settle_outbox`, its lease the publish grace."""
        raise NotImplementedError

    def _default_sleep(self) -> Callable[[float], object]:
        raise NotImplementedError

    def _started(self, context: dict[str, Any], run_id: str) -> Steps[H]:
        raise NotImplementedError

    def _loaded(self, run_id: str) -> Steps[H]:
        raise NotImplementedError

    def _advanced(self, run: H) -> Steps[H]:
        raise NotImplementedError

    # -- perform's rules

    def _perform_steps(
        self, payload: UpdateUserStatusPayload, idempotency_key: str | None
    ) -> Steps[H]:
        if not isinstance(payload, UpdateUserStatusPayload):
            raise TypeError(f"payload must be an UpdateUserStatusPayload, got {payload!r}")
        context: dict[str, Any] = {
            "user_id": payload.user_id,
            "new_status": payload.new_status.value,
            "request": new_id(),  # tells this call's run from an earlier one's
        }
        if idempotency_key is None:
            run_id = self.ids()
        else:
            run_id = key_run_id(idempotency_key)
            context["idempotency_key"] = idempotency_key
            earlier = yield from self._stored(run_id, context)
            if earlier is not None:
                log.info("run %s: idempotency key seen before; nothing done", run_id)
                return _settled(earlier)
        context["run_id"] = run_id
        try:
            handle = yield from self._first_step(run_id, context)
            if handle.context.get("request") != context["request"]:
                return _settled(handle)  # another call with this key got there first
            handle = yield from self._second_step(handle)
        finally:
            self._publishes.clear()
        self._log(handle)
        return handle

    def _first_step(self, run_id: str, context: dict[str, Any]) -> Steps[H]:
        """Store the run with its update; a failure that stays is recorded as update_failed."""
        try:
            return (yield from self._start(run_id, context))
        except (IdempotencyConflict, RunNotSettled):
            raise
        except Exception as error:
            aborted = _aborted(error)
            if aborted is not None:
                outcome = aborted.outcome
            else:
                log.error("run %s: the update step failed: %r", run_id, error)
                outcome = StorageError.of(int(context["user_id"]), error)
            if "idempotency_key" in context and _retryable(error):
                # The client will send this request again, with its key: keep the key
                # unused rather than answer every retry with this passing failure.
                raise (aborted or UpdateAborted(outcome)) from error
            log.error(
                "run %s: the update of user %s failed: %s",
                run_id,
                context["user_id"],
                outcome.error,
            )
            return (yield from self._start(run_id, context | {STORAGE_ERROR: outcome}))

    def _start(self, run_id: str, context: dict[str, Any]) -> Steps[H]:
        exists = False  # once the store said so, a failure is no longer the update's

        def attempt(number: int) -> Steps[H]:
            nonlocal exists
            try:
                return (yield from self._started(context, run_id))
            except Exception as error:
                # A lost commit acknowledgement, or step 2 failing after step 1 committed:
                # what the store holds decides.
                exists = exists or isinstance(error, RunExists)
                stored = yield from self._stored(run_id, context)
                if stored is None:
                    raise
                return stored

        try:
            return (yield from self._retry(attempt, run_id, "the update step", _retryable))
        except IdempotencyConflict:
            raise
        except Exception as error:
            if exists:
                raise RunNotSettled(run_id, describe_error(error)) from error
            raise

    def _second_step(self, handle: H) -> Steps[H]:
        """Take the publish step if the run still waits for it (its outcome is kept, so a
        step tried again never publishes twice)."""

        def attempt(number: int) -> Steps[H]:
            run = handle if number == 1 else (yield from self._loaded(handle.id))
            if run.state == FlowState.STATUS_UPDATED:
                run = yield from self._advanced(run)
            return run

        try:
            # A conflict: a relay settled the run after the hold ran out; read it again.
            return (
                yield from self._retry(attempt, handle.id, "recording the publish", is_retryable)
            )
        except Exception as error:
            log.error("run %s: the publish step could not be recorded: %r", handle.id, error)
            raise RunNotSettled(handle.id, describe_error(error)) from error

    def _retry(
        self,
        attempt: Callable[[int], Steps[H]],
        run_id: str,
        what: str,
        retry_on: Callable[[Exception], bool],
    ) -> Steps[H]:
        return retry_steps(
            attempt,
            self.step_retry,
            retry_on=retry_on,
            sleep=self.sleep,
            on_retry=lambda n, error, wait: log.warning(
                "run %s: %s failed (%s); trying again in %.2f s",
                run_id,
                what,
                describe_error(error),
                wait,
            ),
        )

    def _stored(self, run_id: str, context: dict[str, Any]) -> Steps[H | None]:
        """The stored run of this id, None if there is none; IdempotencyConflict if it is
        another change's."""
        try:
            run = yield from self._loaded(run_id)
        except RunNotFound:
            return None
        fields = ("user_id", "new_status")
        if any(run.context.get(name) != context[name] for name in fields):
            raise IdempotencyConflict(str(context.get("idempotency_key")), run.context, context)
        return run

    # -- the actions' work

    def _update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Change the user and add the event to the outbox, in the step's transaction.

        A storage failure undoes the step: a transient one is raised for perform() to try
        again; any other is a Rollback, so the table's row records it (update_failed).
        """
        failure = context.pop(STORAGE_ERROR, None)
        if isinstance(failure, StorageError):
            return failure
        payload = UpdateUserStatusPayload.parse(context["user_id"], context["new_status"])
        try:
            outcome = self.manager.update_user_status(payload)
            if isinstance(outcome, UserStatusUpdated):
                self._add_event(context, outcome)
        except Exception as error:  # the outbox's writes fail like the user's
            log.error("run %s: writing the event failed: %r", context["run_id"], error)
            outcome = StorageError.of(payload.user_id, error)
        if isinstance(outcome, StorageError):
            if outcome.transient:
                raise UpdateAborted(outcome)
            raise Rollback(outcome)
        return outcome  # updated, or nothing was written and the run records why

    def _add_event(self, context: dict[str, Any], outcome: UserStatusUpdated) -> None:
        event = UserStatusChanged(
            event_id=self.ids(),
            user_id=outcome.user_id,
            old_status=outcome.old_status,
            new_status=outcome.new_status,
            occurred_at=self.clock(),
            run_id=context["run_id"],
        )
        message = event.to_message(self.topic)
        # With no earlier event of the user pending, this process publishes it in a moment:
        # relays keep off it meanwhile (the hold), so they do not send it a second time. If
        # the process dies, they take over after the hold.
        earlier = self.uow.outbox.add(message, hold_until=event.occurred_at + self.publish_grace)
        context["event"] = event.to_json()
        context["queued_behind"] = earlier

    def _publish_steps(self, context: dict[str, Any]) -> Steps[PublishOutcome]:
        """Publish the committed event now, unless an earlier one of the user is pending.

        An external action: no transaction is open while the broker is called. The event
        id, fixed in step 1, is the call's idempotency key (consumers drop repeats of it)."""
        event = UserStatusChanged.from_json(context["event"])
        earlier = int(context.get("queued_behind", 0))
        if earlier > 0:
            # Publishing now would overtake the user's earlier event: per-user order wins,
            # the relay publishes both in order.
            return PublishFailed(
                event.event_id,
                f"{earlier} earlier event(s) of user {event.user_id} still pending; "
                "left to the relay to keep per-user order",
                attempts=0,
            )
        outcome = self._publishes.get(event.event_id)
        if outcome is None:
            # The sync or the async publisher's outcome (mypy cannot split the union).
            sent = yield from settle(self.publisher.publish(event))
            outcome = self._publishes[event.event_id] = cast(PublishOutcome, sent)
        return outcome

    def _settle(self, transition: Transition[Any]) -> None:
        """The outbox row follows the publish outcome, in the step's transaction.

        Published: it leaves the pending set. A failed attempt: it is counted, its error
        kept, and it is due for the relay at once (the hold is released).
        """
        outcome = transition.outcome
        now = self.clock()
        if isinstance(outcome, Published):
            self.uow.outbox.mark_published(outcome.event_id, owner=self.owner, now=now)
        elif isinstance(outcome, PublishFailed) and outcome.attempts > 0:
            self.uow.outbox.mark_failed(
                outcome.event_id, owner=self.owner, error=outcome.error, retry_at=now
            )

    def _log(self, run: H) -> None:
        outcome = run.outcome
        if run.state == FlowState.PUBLISHED:
            log.info("run %s: user %s updated and published", run.id, run.context["user_id"])
        elif run.state == FlowState.PUBLISH_FAILED:
            log.warning(
                "run %s: committed, publish failed (%s); the relay will retry",
                run.id,
                getattr(outcome, "error", outcome),
            )
        else:
            log.info("run %s: %s (%r)", run.id, run.state, outcome)


class UserStatusUpdateOrchestrator(
    _Orchestration[PersistentRun[FlowState], FlowUnitOfWork, EventPublisher]
):
    """Calls the status manager, then the publisher, and records every step of the run.

    Step 1 (one transaction): the manager changes the user, the event goes into the outbox,
    the run is stored with its new state and history row; all of it commits or none.
    Step 2 (after that commit): the event is published. `published` commits with the
    outbox row marked published; `publish_failed` commits with the row still pending (the
    failed attempt counted), for the relay. Until step 2 ends, or `publish_grace` passes
    if this process dies first, relays leave the new event alone. A step whose database
    work fails transiently (a lost connection, a lost commit acknowledgement) is tried
    again under `step_retry`, after reading what the store holds; the publish is never
    repeated for that. The table, not this class, decides where each outcome leads. One
    orchestrator (and its unit of work) serves one thread at a time.
    """

    def _runner(self) -> None:
        self.runs: PersistentMachine[FlowState] = PersistentMachine(
            machine,
            self.uow,
            types=[UserStatus],
            clock=self.clock,
            listeners=[self._settle_outbox],
            steps=self,  # the runs' actions call this object's update_status, publish_event
            lease=self.publish_grace,  # relays keep off the event as long (the outbox hold)
        )

    def _default_sleep(self) -> Callable[[float], object]:
        return time.sleep

    def perform(
        self, payload: UpdateUserStatusPayload, *, idempotency_key: str | None = None
    ) -> PersistentRun[FlowState]:
        """Run one status update to `published`, `publish_failed` or `update_failed`.

        Returns the stored run. With `idempotency_key`, a request already performed under
        that key returns its run (as it is now) and changes nothing; the same key with a
        different change raises IdempotencyConflict, and one whose update failed transiently
        raises UpdateAborted and stores nothing (send it again). RunNotSettled if the update
        committed but the database kept failing afterwards: the relay finishes that run.
        """
        return run_sync(self._perform_steps(payload, idempotency_key))

    def _started(self, context: dict[str, Any], run_id: str) -> Steps[PersistentRun[FlowState]]:
        return settle(self.runs.start(context, run_id=run_id))

    def _loaded(self, run_id: str) -> Steps[PersistentRun[FlowState]]:
        return settle(self.runs.load(run_id))

    def _advanced(self, run: PersistentRun[FlowState]) -> Steps[PersistentRun[FlowState]]:
        return settle(run.advance())

    # -- the actions (their return annotations are the closed families the table handles)

    def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Change the user and add the event to the outbox, in the step's transaction."""
        return self._update_status(context)

    def publish_event(self, context: dict[str, Any], key: str) -> PublishOutcome:
        """Publish the committed event now, unless an earlier one of the user is pending."""
        return run_sync(self._publish_steps(context))

    def _settle_outbox(self, run: Run[Any], transition: Transition[Any]) -> None:
        """Listener: the outbox row follows the publish outcome, in the same transaction."""
        self._settle(transition)


class AsyncUserStatusUpdateOrchestrator(
    _Orchestration[AsyncPersistentRun[FlowState], AsyncFlowUnitOfWork, AsyncEventPublisher]
):
    """UserStatusUpdateOrchestrator for asyncio: the same steps, rules and guarantees, on an
    AsyncPersistentMachine and an AsyncFlowUnitOfWork, publishing through an async
    publisher (the broker is awaited with no transaction open), waiting with `sleep`
    (asyncio.sleep). The writes of step 1 and of the publish outcome are the sync
    orchestrator's own code, run on the unit of work's session (`uow.run_sync`). One
    orchestrator (and its unit of work) serves one task at a time."""

    def _runner(self) -> None:
        self.runs: AsyncPersistentMachine[FlowState] = AsyncPersistentMachine(
            machine,
            self.uow,
            types=[UserStatus],
            clock=self.clock,
            listeners=[self._settle_outbox],
            # FlowSteps spells its actions as plain defs; an async run awaits these.
            steps=machine.bind(self),  # type: ignore[arg-type]
            lease=self.publish_grace,
        )

    def _default_sleep(self) -> Callable[[float], object]:
        return asyncio.sleep

    async def perform(
        self, payload: UpdateUserStatusPayload, *, idempotency_key: str | None = None
    ) -> AsyncPersistentRun[FlowState]:
        """See UserStatusUpdateOrchestrator.perform."""
        return await run_async(self._perform_steps(payload, idempotency_key))

    def _started(
        self, context: dict[str, Any], run_id: str
    ) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(self.runs.start(context, run_id=run_id))

    def _loaded(self, run_id: str) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(self.runs.load(run_id))

    def _advanced(self, run: AsyncPersistentRun[FlowState]) -> Steps[AsyncPersistentRun[FlowState]]:
        return settle(run.advance())

    async def update_status(self, context: dict[str, Any]) -> UpdateOutcome:
        """Change the user and add the event to the outbox, in the step's transaction."""
        return await self.uow.run_sync(lambda: self._update_status(context))

    async def publish_event(self, context: dict[str, Any], key: str) -> PublishOutcome:
        """Publish the committed event now, unless an earlier one of the user is pending."""
        return await run_async(self._publish_steps(context))

    async def _settle_outbox(self, run: Run[Any], transition: Transition[Any]) -> None:
        """Listener: the outbox row follows the publish outcome, in the same transaction."""
        await self.uow.run_sync(lambda: self._settle(transition))


def _aborted(error: BaseException) -> UpdateAborted | None:
    return next((e for e in causes(error) if isinstance(e, UpdateAborted)), None)


def _settled(run: H) -> H:
    """A run another call started, unless its publish step is still to be recorded."""
    if run.state == FlowState.STATUS_UPDATED:
        raise RunNotSettled(run.id, "another call with this idempotency key is taking it")
    return run


def _retryable(error: Exception) -> bool:
    """A step worth trying again: the database failed, not the request."""
    aborted = _aborted(error)
    return aborted.outcome.transient if aborted is not None else is_transient(error)
