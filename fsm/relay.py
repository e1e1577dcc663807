"""The outbox relay, a generic worker: claims due messages (the oldest pending one of each
key, leased), publishes them, backs off, dead-letters, and hands each attempt's outcome to a
settle hook (`RunSettler`) that moves the run waiting for it, in the same transaction as the
message's outbox row. A flow's relay is its settle hook plus wiring (userstatus.relay).

`OutboxRelay` (threads) and `AsyncOutboxRelay` (asyncio) share every rule, written once as
Steps (fsm.drive) in `_Relay`: each is a thin wrapper driving them with run_sync or run_async."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from fsm.defaults import utc_now
from fsm.drive import Steps, run_async, run_sync, settle
from fsm.errors import FSMError
from fsm.faults import causes, describe_error, is_retryable
from fsm.outbox import (
    AsyncBatchPublisher,
    AsyncOutboxUnitOfWork,
    AsyncPublisher,
    BatchPublisher,
    DeadLettered,
    Delivery,
    LeaseLost,
    OutboxMessage,
    OutboxStores,
    OutboxUnitOfWork,
    Published,
    Publisher,
    PublishFailed,
)
from fsm.persistence import AsyncEffect, Effect
from fsm.ports import RunClaimed
from fsm.retry import STEP_RETRY, RetryPolicy, backoff, retry_steps
from fsm.stopping import Stoppable, Tally

log = logging.getLogger(__name__)
T = TypeVar("T")

LEASE_MARGIN = 5.0
"""Seconds a lease must outlast one publish attempt: the renew before it, the settle after."""


class RelaySettingsError(FSMError, ValueError):
    """Relay settings that cannot work, named with what is allowed."""


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How hard the relay tries, how long it holds a claim and how it backs off."""

    batch_size: int = 50
    lease_seconds: float = 60.0
    """A relay that dies holding a claim releases it when this runs out. The relay renews
    it just before each publish, so it must outlast one attempt: at least
    `publish_timeout` + LEASE_MARGIN."""
    publish_timeout: float = 15.0
    """The longest one publish attempt takes; for Kafka max_block_ms + delivery_timeout_ms
    (15 s at KafkaConfig's defaults; FlowApp raises it to its KafkaConfig's bound)."""
    max_attempts: int = 10
    """Attempts (the immediate one after commit included) before an event is dead-lettered."""
    max_age: timedelta = timedelta(hours=24)
    """An event this old is dead-lettered at its next failed attempt."""
    backoff_initial: float = 0.5
    backoff_multiplier: float = 2.0
    backoff_max: float = 60.0
    jitter: float = 0.2
    """Each delay is spread by up to this fraction, so relays do not retry in lockstep."""
    idle_interval: float = 1.0
    """How long to wait when nothing is due."""
    sweep_interval: float = 60.0
    """How often (seconds) to look for runs whose event is settled but which are not."""
    report_interval: float = 60.0
    """Seconds between the one-line summaries logged at INFO."""
    step_retry: RetryPolicy = STEP_RETRY
    """How a failed database step (recording an attempt, moving its run) is tried again."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive, got {value!r}"
            for name, value in (
                ("batch_size", self.batch_size),
                ("lease_seconds", self.lease_seconds),
                ("publish_timeout", self.publish_timeout),
                ("max_attempts", self.max_attempts),
                ("backoff_initial", self.backoff_initial),
                ("idle_interval", self.idle_interval),
                ("sweep_interval", self.sweep_interval),
                ("report_interval", self.report_interval),
            )
            if not value > 0
        ]
        if not 0 <= self.jitter <= 1:
            problems.append(f"jitter must be between 0 and 1, got {self.jitter!r}")
        shortest = self.publish_timeout + LEASE_MARGIN
        if not problems and self.lease_seconds < shortest:
            problems.append(
                f"lease_seconds {self.lease_seconds:g} is shorter than one publish attempt "
                f"({self.publish_timeout:g} s) plus a {LEASE_MARGIN:g} s margin; "
                f"give at least {shortest:g}"
            )
        if problems:
            raise RelaySettingsError("; ".join(problems))

    def delay(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the `attempts`-th failed attempt (exponential, with jitter)."""
        return backoff(
            attempts,
            initial=self.backoff_initial,
            maximum=self.backoff_max,
            multiplier=self.backoff_multiplier,
            jitter=self.jitter,
            rand=rand,
        )


@dataclass
class RelayReport:
    """What the relay did, counted."""

    claimed: int = 0
    published: int = 0
    failed: int = 0
    dead: int = 0
    errors: int = 0
    lost: int = 0
    """Claims skipped because their lease had run out before the publish."""
    released: int = 0
    """Claims handed back unprocessed when the relay stopped."""
    finished_runs: int = 0
    """Runs left behind with a settled event, finished (see settle_left_behind)."""
    dead_events: list[str] = field(default_factory=list)
    unsettled_runs: list[str] = field(default_factory=list)
    """Runs whose event was recorded but which could not be moved: for operators."""

    def summary(self) -> str:
        """One line: `published 3, failed 1, dead-lettered 0, claimed 4, errors 0`."""
        return (
            f"published {self.published}, failed {self.failed}, dead-lettered {self.dead}, "
            f"claimed {self.claimed}, errors {self.errors}"
        )

    def add(self, other: RelayReport) -> None:
        """Add another report's counts to this one."""
        self.claimed += other.claimed
        self.published += other.published
        self.failed += other.failed
        self.dead += other.dead
        self.errors += other.errors
        self.lost += other.lost
        self.released += other.released
        self.finished_runs += other.finished_runs
        self.dead_events += other.dead_events
        self.unsettled_runs += other.unsettled_runs


def _claimed(error: BaseException) -> bool:
    """Whether `error` is, or was caused by, another worker's claim on the run."""
    return any(isinstance(cause, RunClaimed) for cause in causes(error))


def default_owner() -> str:
    """A relay's name in leases: host, process and a thread-unique suffix."""
    return f"relay-{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 100000}"


class RunSettler(Protocol):
    """What a relay does with an attempt's outcome besides the outbox row: the flow's part."""

    machine: str
    """The machine whose runs wait for the messages (for runs left behind, see
    OutboxUnitOfWork.left_behind)."""
    parked: Collection[str]
    """Stored labels of the states whose runs wait for an operator, not for the relay (a
    dead-lettered event's run, see fsm.outbox.redrivable): never taken as left behind."""

    def settle(self, message: OutboxMessage, outcome: Delivery, effect: Effect) -> bool:
        """Move the run `message.run_id` by `outcome`, running `effect(uow)` (the outbox row)
        in that step's transaction; False when no unfinished run waits for the message (the
        relay then records the outbox row alone). A retryable error is tried again."""
        ...

    def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        """Finish a run left behind whose message the outbox settled without it."""
        ...

    def settle_many(self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: Effect) -> None:
        """Move each message's run by its outcome, all in one transaction with `effect(uow)`
        (the outbox rows). All or nothing: it raises, with nothing written, if any run
        cannot take its outcome in one step; the relay then settles each alone."""
        ...


class AsyncRunSettler(Protocol):
    """RunSettler for asyncio (AsyncOutboxRelay): the same calls, awaited; `effect(uow)`
    returns an awaitable, which the settler's async runner awaits in the step's transaction."""

    machine: str
    parked: Collection[str]

    async def settle(self, message: OutboxMessage, outcome: Delivery, effect: AsyncEffect) -> bool:
        """See RunSettler.settle."""
        ...

    async def finish(self, run_id: str, outcome: Published | DeadLettered) -> None:
        """See RunSettler.finish."""
        ...

    async def settle_many(
        self, pairs: Sequence[tuple[OutboxMessage, Delivery]], effect: AsyncEffect
    ) -> None:
        """See RunSettler.settle_many."""
        ...


class _Relay(Stoppable):
    """What OutboxRelay and AsyncOutboxRelay share: every rule of the relay, once, as Steps.

    The unit of work's, the publisher's and the settle hook's calls return values (sync) or
    awaitables (async); the rules pass each through `settle`, so OutboxRelay drives them
    with run_sync and AsyncOutboxRelay with run_async. The only per-kind code is how a
    transaction is opened, reached and closed (`_open`, `_within`, `_close`).
    """

    KIND, ITEM = "relay", "event"

    uow: OutboxUnitOfWork | AsyncOutboxUnitOfWork
    publisher: Publisher | AsyncPublisher
    settler: RunSettler | AsyncRunSettler | None
    sleep: Callable[[float], object]
    """How the relay waits: between idle claims, before a database step is tried again."""

    def __init__(
        self,
        *,
        settings: RelaySettings | None,
        owner: str | None,
        clock: Callable[[], datetime],
        rand: Callable[[], float],
    ) -> None:
        self.settings = settings or RelaySettings()
        self.owner = owner or default_owner()
        self.clock = clock
        self.rand = rand
        Stoppable.__init__(self)
        self._stuck: set[str] = set()
        """Runs left behind that can never move: reported once, then skipped."""
        self._behind = False
        """Whether the last sweep found runs left behind, or this relay has left one since:
        the run loop sweeps again after `idle_interval` rather than `sweep_interval`."""

    @property
    def name(self) -> str:
        """The relay's name in its log lines: its owner."""
        return self.owner

    # -- what differs between the sync and the async relay ---------------------------------

    def _open(self) -> object:
        """Open the unit of work's transaction (or an awaitable doing so)."""
        raise NotImplementedError

    def _within(self, work: Callable[[OutboxStores], T]) -> T | Awaitable[T]:
        """`work(uow)` in the open transaction (or an awaitable doing so)."""
        raise NotImplementedError

    def _close(self, error: BaseException | None) -> object:
        """Commit the transaction, or roll it back after `error` (or an awaitable doing so)."""
        raise NotImplementedError

    # -- the rules, once, as Steps -----------------------------------------------------------

    def _transaction(self, work: Callable[[OutboxStores], T]) -> Steps[T]:
        """`work(uow)` in a transaction of its own: it commits, or rolls back if work raised."""
        yield from settle(self._open())
        try:
            result: T = yield from settle(self._within(work))
        except BaseException as error:
            yield from settle(self._close(error))
            raise
        yield from settle(self._close(None))
        return result

    def _pending_steps(self) -> Steps[int]:
        counts = yield from self._transaction(lambda uow: uow.outbox.counts())
        return counts.get("pending", 0)

    def _idle(self) -> Steps[bool]:
        try:
            return (yield from self._pending_steps()) == 0
        except Exception as error:  # the database is away: keep trying, as for claims
            log.error("relay %s: counting pending events failed: %r", self.owner, error)
            return False

    def _run_once_steps(self) -> Steps[RelayReport]:
        """Claim one batch and work through it; stops early if asked to."""
        report = RelayReport()
        try:  # committed at once, so other relays see the leases
            claimed = yield from self._transaction(
                lambda uow: uow.outbox.claim(
                    owner=self.owner,
                    limit=self.settings.batch_size,
                    lease_seconds=self.settings.lease_seconds,
                    now=self.clock(),
                )
            )
        except Exception as error:
            log.error("relay %s: claiming failed: %r", self.owner, error)
            report.errors += 1
            return report
        report.claimed = len(claimed)
        if isinstance(self.publisher, BatchPublisher | AsyncBatchPublisher) and not self.stopping:
            # At most one message per key: send them all, then wait for every answer. The
            # leases were taken a moment ago, for at least one attempt: nothing to renew.
            answers: list[Exception | None] = (
                (yield from settle(self.publisher.publish_batch(claimed))) if claimed else []
            )
            outcomes = [
                (message, self._outcome(message, answer))
                for message, answer in zip(claimed, answers, strict=True)
            ]
            published = [pair for pair in outcomes if isinstance(pair[1], Published)]
            if (yield from self._settle_published(published, report)):
                outcomes = [pair for pair in outcomes if not isinstance(pair[1], Published)]
            for message, outcome in outcomes:
                yield from self._settle(message, outcome, report)
        else:
            for index, message in enumerate(claimed):
                if self.stopping:
                    yield from self._release(claimed[index:], report)
                    break
                if (yield from self._renew(message, report)):
                    outcome = yield from self._attempt_steps(message)
                    yield from self._settle(message, outcome, report)
        if claimed:
            log.info(
                "relay %s: claimed %d, published %d, failed %d, dead-lettered %d",
                self.owner,
                report.claimed,
                report.published,
                report.failed,
                report.dead,
            )
        return report

    def _run_steps(self, until_idle: bool, max_seconds: float | None) -> Steps[RelayReport]:
        """Work until stopped (see OutboxRelay.run)."""
        started = swept = self.clock()
        tally = Tally(self, RelayReport, self.settings.report_interval, started, log)
        total = tally.total
        self._behind = (yield from self._left_behind_steps(total)) != 0
        while not self.stopping:
            report = yield from self._run_once_steps()
            idle = until_idle and report.claimed == 0 and (yield from self._idle())
            # Drained means every run is final too: a run left behind that cannot move yet
            # (another worker holds it) keeps the relay sweeping, once per idle interval,
            # until it moves.
            every = self.settings.idle_interval if self._behind else self.settings.sweep_interval
            if idle or (self.clock() - swept).total_seconds() >= every:
                swept = self.clock()
                self._behind = (yield from self._left_behind_steps(report)) != 0
                idle = idle and not self._behind
            tally.add(report, self.clock())
            if idle:
                break
            if max_seconds is not None and (self.clock() - started).total_seconds() > max_seconds:
                log.warning("relay %s: gave up waiting after %.0f s", self.owner, max_seconds)
                break
            if report.claimed == 0:
                yield from settle(self.sleep(self.settings.idle_interval))
        return total

    def _renew(self, message: OutboxMessage, report: RelayReport) -> Steps[bool]:
        """Extend the lease on `message` for one attempt; False when it is no longer this
        relay's (skip it: another relay publishes it in order) or the renewal failed."""
        try:
            held = yield from self._still_held(message)
        except Exception as error:
            report.errors += 1
            log.error(
                "relay %s: renewing the lease on event %s failed: %r; skipped",
                self.owner,
                message.event_id,
                error,
            )
            return False
        if not held:
            report.lost += 1
            log.warning(
                "relay %s: the lease on event %s ran out before its publish; skipped "
                "(another relay publishes it in order)",
                self.owner,
                message.event_id,
            )
        return held

    def _release(self, messages: list[OutboxMessage], report: RelayReport) -> Steps[None]:
        """Hand back claims not worked on, so other relays need not wait out the lease."""
        ids = [m.event_id for m in messages]
        try:
            report.released += yield from self._transaction(
                lambda uow: uow.outbox.release(ids, owner=self.owner)
            )
        except Exception as error:  # they come back when the lease runs out
            log.error("relay %s: releasing %d claims failed: %r", self.owner, len(messages), error)

    def _attempt_steps(self, message: OutboxMessage) -> Steps[Delivery]:
        """Publish one claimed event once; say what came of it."""
        try:
            yield from settle(self.publisher.publish(message))
        except Exception as error:  # any failure is an attempt that failed, never a crash
            return self._outcome(message, error)
        return Published(message.event_id)

    def _outcome(self, message: OutboxMessage, error: Exception | None) -> Delivery:
        """What an attempt came to: published, failed, or dead (attempts or age exhausted)."""
        if error is None:
            return Published(message.event_id)
        attempts = message.attempts + 1
        age = self.clock() - (message.created_at or self.clock())
        if attempts >= self.settings.max_attempts or age >= self.settings.max_age:
            return DeadLettered(
                message.event_id,
                f"{error} (gave up after {attempts} attempts, event age {age})",
                attempts,
            )
        return PublishFailed(message.event_id, str(error), attempts)

    def _settle(
        self, message: OutboxMessage, outcome: Delivery, report: RelayReport
    ) -> Steps[None]:
        """Record the attempt in the outbox and move the run, in one transaction.

        A failure is tried again under `step_retry`; before each new try the lease says
        whether the last one committed after all (its acknowledgement lost): a recorded
        attempt leaves the pending set or gives up the lease. If it keeps failing, nothing
        is recorded: the event stays pending and is published again (a duplicate consumers
        drop) once the lease runs out. A final outcome whose run another worker holds is
        recorded in the outbox alone, the run left to the left-behind sweep. Only a run
        that can never move (corrupt, another machine's, in a state that takes no such
        outcome) gets the outbox row recorded alone and is reported for operators.
        """

        def attempt(number: int) -> Steps[None]:
            if number > 1 and not (yield from self._still_held(message)):
                return  # the last try committed after all, or another relay has it now
            if not (yield from self._advance_run(message, outcome)):
                # no run waits for it: the outbox alone
                yield from self._transaction(lambda uow: self._mark(uow, message, outcome))

        try:
            yield from retry_steps(
                attempt,
                self.settings.step_retry,
                retry_on=is_retryable,
                sleep=self.sleep,
                on_retry=lambda n, error, wait: log.warning(
                    "relay %s: recording event %s failed (%s); trying again in %.2f s",
                    self.owner,
                    message.event_id,
                    describe_error(error),
                    wait,
                ),
            )
        except LeaseLost as error:
            report.lost += 1
            log.warning("relay %s: %s", self.owner, error)
            return
        except Exception as error:
            if isinstance(outcome, Published | DeadLettered) and _claimed(error):
                # Another worker holds the run for an external step of its own (the process
                # that committed it, recording that this event was queued behind an earlier
                # one): the outcome is final, so it is recorded now (left pending, the event
                # would be sent again after the lease) and the left-behind sweep moves the
                # run once the claim is over.
                if not (yield from self._mark_alone(message, outcome, error, report, later=True)):
                    return
            elif is_retryable(error):  # the database stayed away: record nothing
                report.errors += 1
                log.error(
                    "relay %s: recording event %s failed: %r; it stays pending and is "
                    "published again when its lease runs out",
                    self.owner,
                    message.event_id,
                    error,
                )
                return
            # The run can never move this way (corrupt, another machine's, a state that
            # takes no such outcome, a write refused for good): the outbox row alone.
            elif not (yield from self._mark_alone(message, outcome, error, report)):
                return
        if isinstance(outcome, Published):
            report.published += 1
        elif isinstance(outcome, DeadLettered):
            report.dead += 1
            report.dead_events.append(message.event_id)
            log.error(
                "relay %s: DEAD-LETTERED event %s of run %s (key %s): %s",
                self.owner,
                message.event_id,
                message.run_id,
                message.key,
                outcome.error,
            )
        else:
            report.failed += 1
            log.warning(
                "relay %s: event %s attempt %d failed: %s",
                self.owner,
                message.event_id,
                outcome.attempts,
                outcome.error,
            )

    def _settle_published(
        self, pairs: list[tuple[OutboxMessage, Delivery]], report: RelayReport
    ) -> Steps[bool]:
        """Record a batch's published events and move their runs in one transaction, in a
        few statements for all of them. False, with nothing written, when that failed (a
        run moved meanwhile, or already finished, the database away): each is then
        settled alone, with `_settle`'s retries and checks."""
        if len(pairs) < 2:
            return False
        ids = [message.event_id for message, _ in pairs]

        def mark(uow: OutboxStores) -> None:
            uow.outbox.mark_published(*ids, owner=self.owner, now=self.clock())

        waiting = [pair for pair in pairs if pair[0].run_id is not None]
        try:
            if self.settler is not None and waiting:
                yield from settle(self.settler.settle_many(waiting, lambda _: self._within(mark)))
            else:
                yield from self._transaction(mark)
        except Exception as error:
            log.info(
                "relay %s: settling %d published events at once failed (%s); settling each alone",
                self.owner,
                len(pairs),
                describe_error(error),
            )
            return False
        report.published += len(pairs)
        return True

    def _still_held(self, message: OutboxMessage) -> Steps[bool]:
        """True while the event is pending and leased to this relay (renewing the lease)."""
        renewed = yield from self._transaction(
            lambda uow: uow.outbox.renew(
                message.event_id,
                owner=self.owner,
                lease_seconds=self.settings.lease_seconds,
                now=self.clock(),
            )
        )
        return bool(renewed)

    def _mark_alone(
        self,
        message: OutboxMessage,
        outcome: Delivery,
        error: Exception,
        report: RelayReport,
        *,
        later: bool = False,
    ) -> Steps[bool]:
        """Record the outcome in the outbox without the run; False if even that failed.
        `later`: the run is moved by the left-behind sweep, else it needs an operator."""
        try:
            yield from self._transaction(lambda uow: self._mark(uow, message, outcome))
        except Exception as second:
            report.errors += 1
            log.error(
                "relay %s: recording event %s failed: %r (then %r); it stays pending and "
                "is tried again when its lease runs out",
                self.owner,
                message.event_id,
                error,
                second,
            )
            return False
        if later:
            self._behind = True
            log.info(
                "relay %s: event %s recorded as %s; its run %s is moved by the left-behind "
                "sweep (%s)",
                self.owner,
                message.event_id,
                type(outcome).__name__,
                message.run_id,
                describe_error(error),
            )
            return True
        self._stuck.add(str(message.run_id))  # reported once: the sweep skips it
        report.unsettled_runs.append(str(message.run_id))
        log.error(
            "relay %s: RUN %s NEEDS AN OPERATOR: event %s was recorded as %s, but the run "
            "can never move: %r",
            self.owner,
            message.run_id,
            message.event_id,
            type(outcome).__name__,
            error,
        )
        return True

    def _advance_run(self, message: OutboxMessage, outcome: Delivery) -> Steps[bool]:
        """Hand the outcome to the settle hook, the outbox row changing in the same
        transaction; False when no unfinished run waits for it."""
        if message.run_id is None or self.settler is None:
            return False
        moved: bool = yield from settle(
            self.settler.settle(
                message, outcome, lambda _: self._within(lambda u: self._mark(u, message, outcome))
            )
        )
        return moved

    def _left_behind_steps(self, report: RelayReport) -> Steps[int]:
        """Finish unfinished runs whose event the outbox settled without them (an operator,
        an older version after a database error, or this relay while another worker held
        the run, left them so); how many were found (-1: the search failed)."""
        settler = self.settler
        if settler is None:
            return 0
        try:
            found = yield from self._transaction(
                lambda uow: uow.left_behind(
                    settler.machine,
                    limit=self.settings.batch_size,
                    skip=self._stuck,
                    parked=settler.parked,
                )
            )
        except Exception as error:
            report.errors += 1
            log.error("relay %s: looking for runs left behind failed: %r", self.owner, error)
            return -1
        for entry in found:
            outcome: Published | DeadLettered = (
                Published(entry.event_id)
                if entry.status == "published"
                else DeadLettered(entry.event_id, entry.error or "dead-lettered", entry.attempts)
            )
            try:
                yield from settle(settler.finish(entry.run_id, outcome))
            except Exception as error:
                if _claimed(error):  # its holder records its step, or the claim runs out
                    log.info(
                        "relay %s: run %s left behind is held: %s",
                        self.owner,
                        entry.run_id,
                        describe_error(error),
                    )
                    continue
                report.errors += 1
                if not is_retryable(error):  # it will fail so every time: stop asking
                    self._stuck.add(entry.run_id)
                    report.unsettled_runs.append(entry.run_id)
                log.error(
                    "relay %s: run %s (event %s %s) could not be finished: %r",
                    self.owner,
                    entry.run_id,
                    entry.event_id,
                    entry.status,
                    error,
                )
                continue
            report.finished_runs += 1
            log.warning(
                "relay %s: finished run %s left behind (its event %s is %s)",
                self.owner,
                entry.run_id,
                entry.event_id,
                entry.status,
            )
        return len(found)

    def _mark(self, uow: OutboxStores, message: OutboxMessage, outcome: Delivery) -> None:
        now = self.clock()
        outbox = uow.outbox
        if isinstance(outcome, Published):
            outbox.mark_published(message.event_id, owner=self.owner, now=now)
        elif isinstance(outcome, DeadLettered):
            outbox.mark_dead(message.event_id, owner=self.owner, error=outcome.error, now=now)
        else:
            delay = self.settings.delay(outcome.attempts, self.rand)
            outbox.mark_failed(
                message.event_id,
                owner=self.owner,
                error=outcome.error,
                retry_at=now + timedelta(seconds=delay),
            )


class OutboxRelay(_Relay):
    """A long-lived worker: claim due events, publish, settle the outbox and the run.

    Claims follow the Outbox contract (only the oldest pending event of each key, leased),
    so several relays keep per-user order. Each attempt's outcome is recorded in one
    transaction: the outbox row (published, failed with its next attempt time, or dead)
    and the run's transition. Just before each publish the relay renews that event's
    lease; if the lease ran out meanwhile (another relay may have it) the event is
    skipped, so a slow relay never re-sends an old event after a newer one of its key.
    `stop()` (or SIGTERM/SIGINT through `install_signal_handlers`) lets the event in hand
    finish and releases the rest of the batch, so other relays take it at once.
    """

    def __init__(
        self,
        uow: OutboxUnitOfWork,
        publisher: Publisher,
        *,
        settler: RunSettler | None = None,
        settings: RelaySettings | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(settings=settings, owner=owner, clock=clock, rand=rand)
        self.uow: OutboxUnitOfWork = uow
        self.publisher: Publisher = publisher
        self.sleep = sleep if sleep is not None else self.wait
        self.settler: RunSettler | None = settler
        """Moves the runs waiting for the messages; None: messages alone (no runs)."""

    def pending(self) -> int:
        """How many events are neither published nor dead."""
        return run_sync(self._pending_steps())

    def run_once(self) -> RelayReport:
        """Claim one batch and work through it; stops early if asked to."""
        return run_sync(self._run_once_steps())

    def run(self, *, until_idle: bool = False, max_seconds: float | None = None) -> RelayReport:
        """Work until stopped; with `until_idle`, also return once nothing is pending and
        no run is left behind (but those that can never move).

        `max_seconds` bounds the time on the relay's clock (for demos and tests). A one-line
        summary is logged every `report_interval`.
        """
        return run_sync(self._run_steps(until_idle, max_seconds))

    def attempt(self, message: OutboxMessage) -> Delivery:
        """Publish one claimed event once; say what came of it."""
        return run_sync(self._attempt_steps(message))

    def settle_left_behind(self, report: RelayReport) -> None:
        """Finish unfinished runs whose event the outbox settled without them (an operator,
        or an older version after a database error, left them so); counted in `report`."""
        run_sync(self._left_behind_steps(report))

    def _open(self) -> object:
        return self.uow.__enter__()

    def _within(self, work: Callable[[OutboxStores], T]) -> T:
        return work(self.uow)

    def _close(self, error: BaseException | None) -> object:
        kind = type(error) if error is not None else None
        self.uow.__exit__(kind, error, error.__traceback__ if error else None)
        return None


class AsyncOutboxRelay(_Relay):
    """OutboxRelay for asyncio, with the same rules (see OutboxRelay): a task in a service's
    loop. The outbox is reached through the unit of work's `run_sync`, the publisher and the
    settle hook are awaited, and no call blocks the loop. `stop()` (from the loop, or any
    thread) lets the event in hand finish, releases the rest of the batch and cuts the idle
    sleep short; cancelling the task instead leaves the claims to run out. A program of its
    own makes SIGTERM and SIGINT a stop with `install_signal_handlers()` (through the loop's
    add_signal_handler). One relay (and its unit of work) serves one task.
    """

    def __init__(
        self,
        uow: AsyncOutboxUnitOfWork,
        publisher: AsyncPublisher,
        *,
        settler: AsyncRunSettler | None = None,
        settings: RelaySettings | None = None,
        owner: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        super().__init__(settings=settings, owner=owner, clock=clock, rand=rand)
        self.uow: AsyncOutboxUnitOfWork = uow
        self.publisher: AsyncPublisher = publisher
        self.sleep = sleep if sleep is not None else self.pause
        self.settler: AsyncRunSettler | None = settler
        self._woken = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._signals_before: dict[int, object] = {}

    async def pending(self) -> int:
        """How many events are neither published nor dead."""
        return await run_async(self._pending_steps())

    async def run_once(self) -> RelayReport:
        """Claim one batch and work through it; stops early if asked to."""
        return await run_async(self._run_once_steps())

    async def run(
        self, *, until_idle: bool = False, max_seconds: float | None = None
    ) -> RelayReport:
        """Work until stopped (see OutboxRelay.run); signal handlers installed by
        install_signal_handlers are removed when it returns."""
        try:
            return await run_async(self._run_steps(until_idle, max_seconds))
        finally:
            self._remove_signal_handlers()

    async def attempt(self, message: OutboxMessage) -> Delivery:
        """Publish one claimed event once; say what came of it."""
        return await run_async(self._attempt_steps(message))

    async def settle_left_behind(self, report: RelayReport) -> None:
        """See OutboxRelay.settle_left_behind."""
        await run_async(self._left_behind_steps(report))

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if stop() is called meanwhile (the default `sleep`)."""
        self._loop = asyncio.get_running_loop()
        if self.stopping:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._woken.wait(), seconds)

    def stop(self) -> None:
        """Finish the event in hand, then return from run() (its sleep cut short); the
        signal handlers, if installed, are removed."""
        super().stop()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._woken.set)
        signalled = self._signal_loop
        if signalled is not None and not signalled.is_closed():
            if _running_loop() is signalled:
                self._remove_signal_handlers()
            else:
                signalled.call_soon_threadsafe(self._remove_signal_handlers)

    def install_signal_handlers(self) -> None:
        """Stop cleanly on SIGTERM and SIGINT, through the running loop: its
        add_signal_handler runs the stop as a callback of the loop, not inside whatever the
        main thread was doing. Call it in the loop (in the main thread). Once the relay
        stops, or run() returns, the handlers from before are back: a second signal does
        what it did before (SIGTERM ends the process, SIGINT interrupts asyncio.run)."""
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._signals_before.setdefault(signum, signal.getsignal(signum))
            loop.add_signal_handler(signum, self._signalled, int(signum))
        self._signal_loop = loop

    def _remove_signal_handlers(self) -> None:
        """Hand SIGTERM and SIGINT back to their handlers from before (in the loop's thread)."""
        loop, self._signal_loop = self._signal_loop, None
        before, self._signals_before = self._signals_before, {}
        if loop is None or loop.is_closed():
            return
        for signum, handler in before.items():
            loop.remove_signal_handler(signum)
            # None: a handler not set from Python, which cannot be put back
            if callable(handler) or isinstance(handler, int):
                signal.signal(signum, handler)

    def _open(self) -> object:
        return self.uow.__aenter__()

    def _within(self, work: Callable[[OutboxStores], T]) -> Awaitable[T]:
        uow = self.uow
        return uow.run_sync(lambda: work(uow))

    def _close(self, error: BaseException | None) -> object:
        kind = type(error) if error is not None else None
        return self.uow.__aexit__(kind, error, error.__traceback__ if error else None)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
