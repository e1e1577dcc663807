"""Persistent runs: a step (action effect, transition, history row) commits in one transaction.

Sync and async runners keep one set of rules. `PersistentMachine` (on a UnitOfWork) and
`AsyncPersistentMachine` (on an AsyncUnitOfWork) derive from `StoredMachine`, and their
runs from `StoredRun`, which hold every rule once as Steps computations (fsm.drive): what
commits when (a step per transaction, the run's creation with its first step), what a
Rollback outcome undoes and redoes, how an external step is claimed, called with no
transaction open, recorded under the claim and given back after a failed call, which
error a failed step raises and why, and reloading after any failure. The unit of work's
calls return values (sync) or awaitables (async); the rules pass each through `settle`,
so the sync classes drive them with `run_sync` and the async ones with `run_async`, and
each public method of theirs is one line. The only per-kind code is how a transaction is
opened and closed (`with` or `async with`) and which Run is built (Run or AsyncRun's).
"""

from __future__ import annotations

import os
import socket
import weakref
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from fsm.codec import Codec, DecodeError, EncodeError
from fsm.defaults import new_id, utc_now
from fsm.drive import Steps, call, run_async, run_sync, settle
from fsm.errors import CallbackError, FSMError, RestoreError, show
from fsm.hooks import CommitHook, FailureHook, StepCommitted, StepFailed, committed, failed
from fsm.labels import former_labels, trigger_label
from fsm.labels import state_label as state_label  # its home before fsm.labels: still named here
from fsm.ports import (
    AsyncUnitOfWork,
    ConcurrencyError,
    HistoryRecord,
    RunClaimed,
    RunHead,
    RunMove,
    RunNotFound,
    RunRecord,
    UnitOfWork,
)
from fsm.runtime import RunHandle, Transition, fired_without_run, runs_observed
from fsm.timers import due_at

if TYPE_CHECKING:
    from fsm.definition import Binding, Machine, P
    from fsm.runtime import AsyncListener, Listener, Run

S = TypeVar("S", bound=Hashable)
R = TypeVar("R")
U = TypeVar("U", UnitOfWork, AsyncUnitOfWork)
H = TypeVar("H", bound="StoredRun[Any]")

Effect = Callable[[UnitOfWork], object]
"""Writes to commit in the same transaction as an event's transition."""

AsyncEffect = Callable[[AsyncUnitOfWork], object]
"""An Effect of an async runner: an `async def` one is awaited."""


def default_worker() -> str:
    """A worker's name in run claims: host, process and a suffix unique to the caller."""
    return f"{socket.gethostname()}-{os.getpid()}-{new_id()[:8]}"


@dataclass(frozen=True, slots=True)
class StoredRuns:
    """A machine's stored runs read with its current definition (see `PersistentMachine.survey`)."""

    by_state: Mapping[str, int]
    """How many runs are stored under each state label, spelled as stored."""
    unloadable: tuple[RestoreError, ...]
    """The error of each run that cannot load with this definition (`.run_id`, `.reason`)."""


class StoredMachine(Generic[S, U, H]):
    """What PersistentMachine and AsyncPersistentMachine share: the definition read for
    storage, the settings, and the rules of starting, loading and surveying runs, as Steps.

    A local step is one action's database effect plus the transition its outcome fires plus
    the history row, committed together through the unit of work (an event sent from
    outside is a step too). Saving checks the run's version, so when two processes advance
    the same run one wins and the other gets ConcurrencyError with nothing of its step
    written. The actions reach the same transaction through the unit of work.

    An external step (`State(..., external=True)`) takes three parts: a transaction that
    claims the run for `worker` until `lease` from now (RunClaimed if another worker's
    claim has not run out; nothing is called then; the step that enters the state claims
    it in its own transaction, so a run moving straight on needs none), the action called
    with no transaction
    open and the step's idempotency key, and a transaction that records its outcome if the
    run was not claimed by anyone else meanwhile (ConcurrencyError otherwise). A worker that
    dies mid-call leaves the claim to run out; then any worker takes the step again, with
    the same key. `lease` is the longest an external call is given.

    `listeners` are called after each transition inside the step's transaction, before it
    commits: what they write through the unit of work commits with the step, and if one
    raises the step rolls back. `after_commit` hooks are called once a step has committed,
    and `after_failure` hooks once one has rolled back, each with what happened (see
    fsm.hooks, which also logs each step); they never change the step. `types` are the
    dataclasses and Enums the context may hold beyond the machine's own outcome and state
    types (see fsm.codec.Codec.for_machine).
    """

    def __init__(
        self,
        machine: Machine[S, P],
        uow: U,
        *,
        types: Iterable[type] = (),
        codec: Codec | None = None,
        clock: Callable[[], datetime] = utc_now,
        listeners: Sequence[AsyncListener[S]] = (),
        steps: P | Binding | None = None,
        worker: str | None = None,
        lease: timedelta = timedelta(seconds=30),
        after_commit: Iterable[CommitHook] = (),
        after_failure: Iterable[FailureHook] = (),
    ) -> None:
        if lease <= timedelta(0):
            raise ValueError(f"lease must be positive, got {lease}")
        self.machine = machine
        self.uow: U = uow
        self.worker = worker if worker is not None else default_worker()
        """Who this machine's claims name (unique per instance by default)."""
        self.lease = lease
        self.steps = machine.bind(steps) if steps is not None else None
        """The run's collaborators, checked here once (see Machine.bind); without them,
        stored runs can be loaded and read, and a step action refuses to run."""
        self.codec = codec if codec is not None else Codec.for_machine(machine, types)
        self.clock = clock
        self._listeners = tuple(listeners)
        self.after_commit = tuple(after_commit)
        self.after_failure = tuple(after_failure)
        self._states: dict[str, S] = {}
        for state in machine.states:
            label = state_label(state.name)
            if label in self._states:
                raise FSMError(
                    f"machine {machine.name!r}: states {show(self._states[label])} and "
                    f"{show(state.name)} would be stored under the same name {label!r}"
                )
            self._states[label] = state.name
        # Former labels load as the state they name now (validation sees to it that none
        # stands for two states); an Enum name that is another state's label is that state.
        self._aliases: dict[str, S] = {
            old: state.name
            for state in machine.states
            for old in former_labels(state)
            if old not in self._states
        }
        self._renamed = {old: trigger_label(new) for old, new in machine.aliases.items()}
        """Former trigger labels, read in the history as the trigger's current label."""
        self._triggers: dict[tuple[str, str, str], Hashable] = {}
        for row in machine.transitions:
            key = (state_label(row.source), trigger_label(row.trigger), state_label(row.target))
            known = self._triggers.setdefault(key, row.trigger)
            if known != row.trigger:
                raise FSMError(
                    f"machine {machine.name!r}: triggers {show(known)} and {show(row.trigger)} "
                    f"from {show(row.source)} to {show(row.target)} would be stored under "
                    f"the same name {key[1]!r}"
                )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.machine.name!r}>"

    @property
    def resumable_states(self) -> tuple[str, ...]:
        """Stored labels of the non-final states with an action: a run stored in one of them
        has a step left to take by itself (its process stopped between two steps). Each
        label is followed by the state's former labels (aliases=, an Enum state's name)."""
        states = self.machine.states
        return self.labels(s.name for s in states if s.action is not None and not s.final)

    def labels(self, states: Iterable[Hashable]) -> tuple[str, ...]:
        """The stored labels of `states`, each followed by the state's former labels (what
        `RunStore.find(states=...)` needs to see runs stored under either)."""
        labels: list[str] = []
        for name in states:
            labels.append(state_label(name))
            labels.extend(old for old, named in self._aliases.items() if named == name)
        return tuple(labels)

    # -- what differs between the sync and the async runner ---------------------------------

    def _handle(self, version: int, seq: int) -> H:
        """A new handle of this runner's kind."""
        raise NotImplementedError

    def _new_run(self, context: Mapping[str, Any] | None, run_id: str | None) -> Run[S]:
        """A run of this runner's kind in the initial state, with its listeners and steps."""
        raise NotImplementedError

    def _rebuilt(self, run_id: str, state: S, context: dict[str, Any], path: list[Any]) -> Run[S]:
        """A stored run of this runner's kind, rebuilt (see Machine.restore)."""
        raise NotImplementedError

    def _open(self) -> object:
        """Open the unit of work's transaction (or an awaitable doing so)."""
        raise NotImplementedError

    def _close(self, error: BaseException | None) -> object:
        """Commit the transaction, or roll it back after `error` (or an awaitable doing so)."""
        raise NotImplementedError

    # -- the rules, once, as Steps ----------------------------------------------------------

    def _transaction(self, body: Callable[[], Steps[R]]) -> Steps[R]:
        """`body` in a transaction of its own: it commits, or rolls back if body raised."""
        yield from settle(self._open())
        try:
            result = yield from body()
        except BaseException as error:
            yield from settle(self._close(error))
            raise
        yield from settle(self._close(None))
        return result

    def _start_steps(
        self,
        context: Mapping[str, Any] | None,
        run_id: str | None,
        effect: Callable[[Any], object] | None,
    ) -> Steps[H]:
        """Store a new run with its first step, and follow its actions (see `start`)."""
        handle = self._handle(1, 0)
        run = self._new_run(context, run_id)
        handle._adopt(run)
        now = self.clock()
        handle._entered = now
        handle._due = due_at(self.machine, run.state, now)
        record = handle._record(created=True, now=now)
        handle._committed = record.context

        def create() -> Steps[None]:
            yield from call(self.uow.runs.create, record)
            if effect is not None:
                yield from call(effect, self.uow)

        def first_steps() -> Steps[None]:
            handle._redo = create
            yield from create()
            yield from run.advance_steps()

        yield from handle._steps(first_steps)
        return handle

    def _send_many_steps(
        self,
        events: Sequence[tuple[str, object]],
        effect: Callable[[Any], object] | None,
        *,
        handles: bool,
    ) -> Steps[list[H]]:
        """Each run its event, one step each, all in one transaction (see send_many). Without
        `handles`, a run whose step depends on its state alone is moved from its head, its
        context and history not read (see send_all)."""
        name = "send_many" if handles else "send_all"
        ids = [run_id for run_id, _ in events]
        twice = sorted(run_id for run_id, n in Counter(ids).items() if n > 1)
        if twice:
            raise FSMError(f"{name} takes one event per run; given twice: {twice}")
        staged: list[tuple[RunRecord, HistoryRecord, StepCommitted]] = []
        moves: dict[str, tuple[RunMove, StepCommitted]] = {}
        told: list[StepCommitted] = []

        def body() -> Steps[list[H]]:
            runs = self.uow.runs
            rest = events
            if not handles and not self._listeners and not runs_observed():
                heads: list[RunHead] = yield from call(runs.heads, ids)
                sent = dict(events)
                for head in heads:
                    move = self._fixed(head, sent[head.id])
                    if move is not None:
                        moves[head.id] = move
                rest = [pair for pair in events if pair[0] not in moves]
            records: list[RunRecord] = (
                (yield from call(runs.load_many, [run_id for run_id, _ in rest])) if rest else []
            )
            found = {record.id: record for record in records}
            moved: list[H] = []
            for run_id, event in events:
                if run_id in moves:
                    told.append(moves[run_id][1])
                    continue
                if run_id not in found:
                    raise RunNotFound(run_id)
                history: list[HistoryRecord] = yield from call(runs.history, run_id)
                handle = self._handle(0, 0)
                handle._read(found[run_id], history)
                handle._staged = staged
                handle._active = True
                try:
                    yield from handle.run.fire_steps(event)
                finally:
                    handle._active = False
                    handle._staged = None
                told.append(staged[-1][2])
                if handle.run.pending:
                    raise FSMError(
                        f"{name} moves each run one step, and run {run_id}'s event leads "
                        f"to {show(handle.run.state)}, which has an action: send it alone"
                    )
                moved.append(handle)
            written = [(record, entry) for record, entry, _ in staged]
            yield from call(runs.write_many, written, [move for move, _ in moves.values()])
            if effect is not None:
                yield from call(effect, self.uow)
            return moved

        try:
            moved: list[H] = yield from self._transaction(body)
        except BaseException as error:
            for step in told:
                yield from failed(StepFailed.of(step, error, self.clock()), self.after_failure)
            raise
        for step in told:
            yield from committed(step, self.after_commit)
        return moved

    def _fixed(self, head: RunHead, event: object) -> tuple[RunMove, StepCommitted] | None:
        """The step `event` takes the run at `head` when its state alone decides it (one
        unguarded row into a state with no action); None when its Run must take it."""
        state = self._states.get(head.state, self._aliases.get(head.state))
        if head.machine != self.machine.name or state is None:
            return None  # not this machine's, or a state it does not know: restore says so
        row = self.machine.fixed_row(state, event)
        if row is None:
            return None
        now = self.clock()
        transition = Transition(row.source, row.trigger, row.target, event)
        try:
            entry, step = self._record_of(
                head.id, head.seq + 1, transition, now, now, head.entered_at
            )
        except EncodeError:
            return None  # its Run refuses it, as send_many does
        final = self.machine.state(row.target).final
        move = RunMove(entry, head.version, final, due_at(self.machine, row.target, now))
        fired_without_run(self.machine, row)
        return move, step

    def _record_of(
        self,
        run_id: str,
        seq: int,
        transition: Transition[S],
        now: datetime,
        began: datetime,
        entered: datetime | None,
    ) -> tuple[HistoryRecord, StepCommitted]:
        """A step's history row (its outcome encoded, refused if it cannot be stored), and
        what the hooks are told of it once it commits."""
        entry = HistoryRecord(
            run_id=run_id,
            seq=seq,
            source=state_label(transition.source),
            trigger=trigger_label(transition.trigger),
            target=state_label(transition.target),
            outcome=self.codec.encode(
                transition.outcome, where=f"run {run_id}: the outcome {transition.outcome!r}"
            ),
            at=now,
        )
        step = StepCommitted(
            machine=self.machine.name,
            run_id=run_id,
            seq=seq,
            source=entry.source,
            trigger=entry.trigger,
            target=entry.target,
            outcome=transition.outcome,
            began_at=began,
            at=now,
            entered_at=entered,
        )
        return entry, step

    def _load_steps(self, run_id: str) -> Steps[H]:
        handle = self._handle(0, 0)
        yield from handle._reload_steps(run_id)
        return handle

    def _survey_steps(self, runs: Iterable[tuple[str, str]]) -> Steps[StoredRuns]:
        by_state: Counter[str] = Counter()
        unloadable: list[RestoreError] = []
        for run_id, label in runs:
            by_state[label] += 1
            try:
                yield from self._load_steps(run_id)
            except RestoreError as error:
                unloadable.append(error)
        return StoredRuns(dict(by_state), tuple(unloadable))

    # -- stored form ------------------------------------------------------------------------

    def _state(self, label: str, run_id: str, where: str) -> S:
        state = self._states.get(label, self._aliases.get(label))
        if state is None:
            known = ", ".join(sorted(self._states))
            raise DecodeError(
                f"unknown state {label!r}; the machine's states: {known}; if it was renamed, "
                f"add aliases=({label!r},) to the state it became",
                machine=self.machine.name,
                run_id=run_id,
                where=where,
            )
        return state

    def _no_row(self, entry: HistoryRecord, source: S, target: S) -> str:
        """Why a history row's trigger is unknown, and what would fix it."""
        ends = (state_label(source), state_label(target))
        now = [show(t) for (src, _, dst), t in self._triggers.items() if (src, dst) == ends]
        fix = (
            f"if {entry.trigger!r} was renamed, add aliases={{{entry.trigger!r}: "
            f"{' or '.join(now)}}} to the Machine"
            if now
            else f"no row leads from {show(source)} to {show(target)} now"
        )
        return f"no row {entry.source} --{entry.trigger}--> {entry.target} in the table; {fix}"

    def _restore(self, record: RunRecord, history: Sequence[HistoryRecord]) -> Run[S]:
        name, run_id = self.machine.name, record.id
        if record.machine != name:
            raise RestoreError(
                f"the stored run belongs to machine {record.machine!r}", machine=name, run_id=run_id
            )
        state = self._state(record.state, run_id, "state")
        context = self.codec.decode(record.context, machine=name, run_id=run_id, where="context")
        if not isinstance(context, dict):
            raise DecodeError(
                "the context is not an object", machine=name, run_id=run_id, where="context"
            )
        path: list[tuple[S, Hashable, S, object]] = []
        for number, entry in enumerate(history, 1):
            where = f"history step {entry.seq}"
            if entry.seq != number:
                raise DecodeError(
                    f"expected step {number}: the history has a gap or a duplicate",
                    machine=name,
                    run_id=run_id,
                    where=where,
                )
            source = self._state(entry.source, run_id, f"{where} source")
            target = self._state(entry.target, run_id, f"{where} target")
            label = self._renamed.get(entry.trigger, entry.trigger)
            trigger = self._triggers.get((state_label(source), label, state_label(target)))
            if trigger is None:
                raise DecodeError(
                    self._no_row(entry, source, target),
                    machine=name,
                    run_id=run_id,
                    where=where,
                )
            outcome = self.codec.decode(
                entry.outcome, machine=name, run_id=run_id, where=f"{where} outcome"
            )
            path.append((source, trigger, target, outcome))
        if path and path[-1][2] != state:
            raise DecodeError(
                f"the history ends in {state_label(path[-1][2])!r} but the run is in "
                f"{record.state!r}",
                machine=name,
                run_id=run_id,
                where="state",
            )
        return self._rebuilt(run_id, state, context, path)


class StoredRun(RunHandle[S]):
    """What PersistentRun and AsyncPersistentRun share: a stored run, the version it was
    read at, and the rules of its steps, as Steps.

    After any failure the run is reloaded from the store (what committed is the truth), so
    the in-memory context never keeps an effect whose transaction rolled back.
    """

    __slots__ = (
        "__weakref__",
        "_active",
        "_attempt",
        "_began",
        "_claim",
        "_claimed_in_step",
        "_committed",
        "_committing",
        "_due",
        "_entered",
        "_owner",
        "_redo",
        "_run",
        "_seq",
        "_staged",
        "_stale",
        "version",
    )

    def __init__(self, owner: StoredMachine[S, Any, Any], version: int, seq: int) -> None:
        self._owner = owner
        self._run: Run[S] | None = None
        self.version = version
        """The stored version this handle last read or wrote."""
        self._claim: tuple[str | None, datetime | None, int] = (None, None, 0)
        """The stored claim as last read or written: worker, until when, attempt."""
        self._claimed_in_step = False
        """The step just committed entered an external state and claimed the run for its
        call in the same write (see _commit_step)."""
        self._seq = seq
        self._committed: dict[str, object] = {}
        """The context as last read or written (encoded): what a rollback returns to."""
        self._redo: Callable[[], Steps[None]] | None = None
        """What the first step did before its action (create the run, the caller's effect),
        done again after a rollback: the run's creation commits with its first step."""
        self._active = False
        self._stale = False
        self._due: datetime | None = None
        """When the current state's timeout is due, as last read or written."""
        self._entered: datetime | None = None
        """When the run entered its current state, as last read or written."""
        self._began = owner.clock()
        """When the step under way began (see StepCommitted.began_at)."""
        self._attempt: StepCommitted | None = None
        """The step being committed, until its commit returned."""
        self._committing = False
        """True while the commit of `_attempt` is under way (its writes were accepted)."""
        self._staged: list[tuple[RunRecord, HistoryRecord, StepCommitted]] | None = None
        """Where a step is kept to be written with other runs' (send_many), if it is."""

    def __repr__(self) -> str:
        run = self._run
        where = show(run.state) if run is not None else "?"
        return (
            f"<{type(self).__name__} {self.id} of {self._owner.machine.name!r} in {where} "
            f"v{self.version}>"
        )

    @property
    def run(self) -> Run[S]:
        """The in-memory run (read it; change it only through this handle)."""
        if self._run is None:
            raise FSMError("this run was never stored")
        return self._run

    # -- the rules, once, as Steps ----------------------------------------------------------

    def _send_steps(self, event: object, effect: Callable[[Any], object] | None) -> Steps[Self]:
        """Send `event` and follow the actions it leads to, committing each step (see send)."""

        def deliver() -> Steps[None]:
            if effect is not None:
                yield from call(effect, self._owner.uow)
            # self.run as the step reads it: a stale handle reads the run again first
            yield from self.run.send_steps(event)

        return self._steps(deliver)

    def _advance_steps(self) -> Steps[Self]:
        # Not self.run.advance_steps: a stale handle's step reads the run again first.
        return self._steps(lambda: self.run.advance_steps())

    def _reload_steps(self, run_id: str | None = None) -> Steps[Self]:
        """Read the run again from the store, dropping whatever this handle held."""
        owner = self._owner
        run_id = run_id if run_id is not None else self.id

        def read() -> Steps[tuple[RunRecord, list[HistoryRecord]]]:
            record: RunRecord = yield from settle(owner.uow.runs.load(run_id))
            history: list[HistoryRecord] = yield from settle(owner.uow.runs.history(run_id))
            return record, history

        record, history = yield from owner._transaction(read)
        self._read(record, history)
        return self

    def _read(self, record: RunRecord, history: Sequence[HistoryRecord]) -> None:
        """Hold the run as stored, dropping whatever this handle held."""
        self._adopt(self._owner._restore(record, history))
        self._committed = record.context
        self._claim = (record.claimed_by, record.claimed_until, record.attempt)
        self._due = record.due_at
        self._entered = history[-1].at if history else record.created_at
        self.version = record.version
        self._seq = len(history)
        self._stale = False
        self._claimed_in_step = False

    def _adopt(self, run: Run[S]) -> None:
        self._run = run
        # The run reaches back weakly: no reference cycle, so a dropped handle and its run
        # are freed at once, not left for the cyclic collector (a relay's batches piled up).
        run.rollback_hook = _weakly(self._rollback)
        run.commit_hook = _weakly(self._commit_step)
        run.hold_external = True  # external actions are called by _external, not in a step

    def _steps(self, act: Callable[[], Steps[object]]) -> Steps[Self]:
        """`act` in a step's transaction, then each external step it leads to, each followed
        by the local steps after it."""
        yield from self._step(act)
        while self.run.external and (yield from self._claim_run()):
            yield from self._external()
        return self

    def _external(self) -> Steps[None]:
        """Call the claimed run's external action with no transaction open; record its
        outcome (and the local steps after it) in a new transaction that checks the claim."""
        run = self.run
        began = self._owner.clock()
        try:
            outcome = yield from run.call_steps()
        except BaseException as error:
            yield from self._recover()  # what committed is the truth: drop the call's changes
            yield from self._release()
            yield from self._failed(error, began)
            raise

        def record() -> Steps[None]:
            yield from run.fire_steps(outcome, outcome=True)
            yield from run.advance_steps()

        yield from self._step(record, began)

    def _claim_run(self) -> Steps[bool]:
        """Commit this worker's claim on the run for its external step: True once it holds,
        False when the run turned out to have moved on; RunClaimed if another worker's
        claim has not run out (nothing is written then)."""
        if self._claimed_in_step:  # the step that entered the state claimed it already
            self._claimed_in_step = False
            return True
        for fresh in (self._stale, True):
            if fresh:
                yield from self._reload_steps()  # someone moved or claimed the run since
                if not self.run.external:
                    return False
            try:
                yield from self._take_claim(self._claim[2] + 1)
            except ConcurrencyError:
                if fresh:
                    raise
                continue
            except RunClaimed:
                raise
            except BaseException:
                yield from self._recover()
                raise
            return True
        raise AssertionError("unreachable")  # pragma: no cover

    def _claim_steps(self) -> Steps[bool]:
        """Commit this worker's claim on the run as last read, for a worker about to act on
        it (fire its timeout, resume it): True once it holds; False, with nothing written,
        when another worker's claim has not run out or the run changed since it was read.
        The next step recorded gives the claim up; a worker that dies holding it leaves it
        to run out (the machine's `lease`)."""
        try:
            yield from self._take_claim(self._claim[2])
        except (ConcurrencyError, RunClaimed):
            yield from self._recover()
            return False
        return True

    @property
    def due_at(self) -> datetime | None:
        """When the current state's timeout is due (None: it has none), as last read."""
        return self._due

    def _take_claim(self, attempt: int) -> Steps[None]:
        """Save this worker's claim until `lease` from now, with `attempt`; RunClaimed if
        another worker's claim has not run out, ConcurrencyError if the run moved."""
        owner = self._owner
        now = owner.clock()
        worker, until, held = self._claim
        if worker not in (None, owner.worker) and until is not None and until > now:
            raise RunClaimed(self.id, worker, until, held)
        claim = replace(
            self._record(created=False, now=now),
            claimed_by=owner.worker,
            claimed_until=now + owner.lease,
            attempt=attempt,
        )
        self.version = yield from owner._transaction(lambda: self._save(claim))
        self._claim = (claim.claimed_by, claim.claimed_until, claim.attempt)

    def _release(self) -> Steps[None]:
        """Give this worker's claim back after a failed call, so the step can be tried again
        at once (if the store is away, the claim runs out by itself)."""
        if self._stale or self._claim[0] != self._owner.worker:
            return
        try:
            self.version = yield from self._owner._transaction(
                lambda: self._save(self._record(created=False))
            )
        except Exception:
            self._stale = True
        else:
            self._claim = (None, None, 0)

    def _save(self, record: RunRecord) -> Steps[int]:
        version: int = yield from settle(self._owner.uow.runs.save(record))
        return version

    def _step(self, act: Callable[[], Steps[object]], began: datetime | None = None) -> Steps[None]:
        if self._stale:
            yield from self._reload_steps()
        self._began = began if began is not None else self._owner.clock()

        def active() -> Steps[None]:
            self._active = True
            try:
                yield from act()
            finally:
                self._active = False

        try:
            yield from self._owner._transaction(active)
        except BaseException as error:
            read_at = self.version
            yield from self._recover()
            shown, cause = self._explain(error, read_at)
            stored = self._stored_anyway()
            if stored is not None:
                yield from committed(stored, self._owner.after_commit)
            else:
                yield from self._failed(shown, self._began)
            if shown is error:
                raise
            raise shown from cause

    def _explain(
        self, error: BaseException, read_at: int
    ) -> tuple[BaseException, BaseException | None]:
        """The error to raise for a failed step, and the cause to chain to it."""
        shown, cause = error, error.__cause__
        if isinstance(error, CallbackError):
            if error.kind == "listener" and error.name == "_commit_step":
                shown, cause = error.error, None  # our own save failed: that error is the news
            elif isinstance(error.error, ConcurrencyError):
                shown, cause = error.error, error  # a repository in the action found it stale
        if (
            isinstance(shown, ConcurrencyError)
            and shown.entity != "run"
            and not self._stale
            and self.version != read_at
        ):
            # The action tripped over a record another process changed while advancing this
            # very run: say so in the run's terms.
            return ConcurrencyError("run", self.id, expected=read_at, found=self.version), shown
        return shown, cause

    def _stored_anyway(self) -> StepCommitted | None:
        """After a failed step and a reload: the step, when its commit failed but the store
        has it all the same (the commit happened, its acknowledgement was lost)."""
        attempt, committing = self._attempt, self._committing
        self._committing = False
        if (
            attempt is None
            or not committing
            or self._stale
            or (self._seq, self._entered) != (attempt.seq, attempt.at)
            or state_label(self.run.state) != attempt.target
        ):
            return None
        self._attempt = None
        return attempt

    def _failed(self, error: BaseException, began: datetime) -> Steps[None]:
        """Log the step that just rolled back and tell the machine's failure hooks."""
        owner, attempt, at = self._owner, self._attempt, self._owner.clock()
        self._attempt = None
        step = (
            StepFailed(owner.machine.name, self.id, state_label(self.run.state), None, None,
                       error, began, at)
            if attempt is None
            else StepFailed.of(attempt, error, at)
        )  # fmt: skip
        yield from failed(step, owner.after_failure)

    def _recover(self) -> Steps[None]:
        try:
            yield from self._reload_steps()
        except Exception:  # the store is unreachable too: reload before the next step
            self._stale = True

    def _commit_step(self, run: Run[S], transition: Transition[S]) -> Steps[None]:
        """The run's commit hook: store each transition and commit the step it ends."""
        if not self._active:
            raise FSMError(
                f"run {run.id} is persistent: send events through its "
                f"{type(self).__name__}, not through the in-memory Run"
            )
        owner = self._owner
        now = owner.clock()
        # Encode everything before writing anything: a value that cannot be stored is refused.
        self._due = due_at(owner.machine, transition.target, now)
        record = self._record(created=False, now=now)
        # A step entering an external state claims the run for its call in the same write:
        # one commit fewer than a claim of its own (see _claim_run).
        claimed = run.external and self._staged is None
        if claimed:
            record = replace(
                record, claimed_by=owner.worker, claimed_until=now + owner.lease, attempt=1
            )
        entry, step = owner._record_of(
            run.id, self._seq + 1, transition, now, self._began, self._entered
        )
        uow = owner.uow
        staged = self._staged
        if staged is not None:  # written with the batch's other steps (send_many)
            staged.append((record, entry, step))
            new_version = record.version + 1
        else:
            self._attempt = step
            new_version = yield from settle(uow.runs.write(record, entry))
            self._committing = True
            yield from call(uow.commit)
            self._attempt, self._committing = None, False
        self.version = new_version
        self._seq += 1
        self._committed = record.context
        self._claim = (record.claimed_by, record.claimed_until, record.attempt)
        self._claimed_in_step = claimed
        self._redo = None
        self._entered = self._began = now
        if staged is None:  # a batch's steps are told once the batch committed
            yield from committed(step, owner.after_commit)

    def _rollback(self) -> Steps[None]:
        """An action raised Rollback: drop the step's writes and its context changes; the
        block goes on in a fresh transaction, where its outcome's transition commits."""
        owner, run = self._owner, self.run
        yield from call(owner.uow.rollback)
        if self._redo is not None:
            yield from self._redo()
        context = owner.codec.decode(
            self._committed, machine=owner.machine.name, run_id=run.id, where="context"
        )
        run.context.clear()
        run.context.update(context if isinstance(context, dict) else {})

    def _record(self, *, created: bool, now: datetime | None = None) -> RunRecord:
        owner, run = self._owner, self.run
        now = now if now is not None else owner.clock()
        return RunRecord(
            id=run.id,
            machine=owner.machine.name,
            state=state_label(run.state),
            context=owner.codec.encode(run.context, where=f"run {run.id}: context"),
            version=self.version,
            finished=run.finished,
            created_at=now if created else None,
            updated_at=now,
            due_at=self._due,
        )


def _weakly(method: Callable[..., R]) -> Callable[..., R]:
    """`method` of a handle, holding the handle weakly; named as `method` (see _explain)."""
    held = weakref.WeakMethod(method)

    def call(*args: Any) -> R:
        bound = held()
        if bound is None:
            raise FSMError(
                "this run's handle is gone: send events through its handle (load the run "
                "again), not through the in-memory Run"
            )
        return bound(*args)

    call.__name__ = call.__qualname__ = method.__name__
    return call


# -- the sync runner ----------------------------------------------------------------------


class PersistentMachine(StoredMachine[S, UnitOfWork, "PersistentRun[S]"]):
    """Runs of `machine` kept in a store: started, resumed and advanced one transaction per
    step (the rules: see StoredMachine). One PersistentMachine (and its unit of work)
    serves one thread at a time; a machine with `async def` callables is refused when a
    run is created (AsyncRequired): use AsyncPersistentMachine."""

    def start(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        effect: Effect | None = None,
    ) -> PersistentRun[S]:
        """Store a new run and follow its actions, committing each step.

        The run's creation commits with its first step; if that step fails nothing is
        stored at all, `effect(uow)` included: the caller's own writes (the payment row the
        run is about, say) commit with the run's creation or not at all. A context that
        cannot be encoded is refused before any write.
        """
        return run_sync(self._start_steps(context, run_id, effect))

    def load(self, run_id: str) -> PersistentRun[S]:
        """The stored run, rebuilt; its actions do not run again. See `PersistentRun.advance`."""
        return run_sync(self._load_steps(run_id))

    def resume(self, run_id: str) -> PersistentRun[S]:
        """Load a run and follow its pending actions (after a crash, or in another process)."""
        return self.load(run_id).advance()

    def send(self, run_id: str, event: object, *, effect: Effect | None = None) -> PersistentRun[S]:
        """Load a run and send it `event`, committing each step that follows (see `effect`)."""
        return self.load(run_id).send(event, effect=effect)

    def send_many(
        self, events: Sequence[tuple[str, object]], *, effect: Effect | None = None
    ) -> list[PersistentRun[S]]:
        """Send each run (run id, event) its event, every step in one transaction with
        `effect(uow)`, in a few statements for all of them: a relay settling a batch.

        Each run takes exactly the row its event fires; an event leading to a state with
        an action is refused (send it alone). All or nothing: a run not stored, changed
        by someone else since (ConcurrencyError), refusing its event, or any failed
        write, and nothing of any of them is written; the caller may then send them one
        at a time to find out which. Listeners are called as in `send`.
        """
        return run_sync(self._send_many_steps(events, effect, handles=True))

    def send_all(
        self, events: Sequence[tuple[str, object]], *, effect: Effect | None = None
    ) -> None:
        """send_many, returning nothing: what a relay settling a batch calls. A run whose
        step its state alone decides (its event fires one unguarded row into a state with
        no action, and no listener or observer is to be given the run: see
        fsm.runtime.observe) is moved from its head, its context and history neither read
        nor decoded; the others are restored and sent their event as by send_many, in the
        same transaction, with the same rules and errors. What only a restore checks (the
        stored context decodes, the history is one path of the table) is left to the
        run's next load."""
        run_sync(self._send_many_steps(events, effect, handles=False))

    def survey(self, runs: Iterable[tuple[str, str]]) -> StoredRuns:
        """Load each of `runs`, given as (run id, stored state label), with this definition,
        before a deploy that changes it: the runs by stored state, and why each run that
        cannot load cannot. Nothing is run or written."""
        return run_sync(self._survey_steps(runs))

    def _handle(self, version: int, seq: int) -> PersistentRun[S]:
        return PersistentRun(self, version, seq)

    def _new_run(self, context: Mapping[str, Any] | None, run_id: str | None) -> Run[S]:
        # An async listener is refused here, naming it (see Machine.refuse_async).
        listeners: Sequence[Listener[S]] = self._listeners  # type: ignore[assignment]
        return self.machine.create(context, run_id=run_id, listeners=listeners, steps=self.steps)

    def _rebuilt(self, run_id: str, state: S, context: dict[str, Any], path: list[Any]) -> Run[S]:
        listeners: Sequence[Listener[S]] = self._listeners  # type: ignore[assignment]
        return self.machine.restore(
            run_id, state, context, path, listeners=listeners, steps=self.steps
        )

    def _open(self) -> object:
        return self.uow.__enter__()

    def _close(self, error: BaseException | None) -> object:
        kind = type(error) if error is not None else None
        self.uow.__exit__(kind, error, error.__traceback__ if error else None)
        return None


class PersistentRun(StoredRun[S]):
    """A stored run and the version it was read at; `send` and `advance` commit per step."""

    __slots__ = ()

    def send(self, event: object, *, effect: Effect | None = None) -> PersistentRun[S]:
        """Send `event` and follow the actions it leads to, committing each step.

        `effect(uow)`, if given, runs first in the event's own transaction, so its writes
        commit with the transition or not at all (a relay marking the outbox message
        published as it moves the run to its published state, say).
        """
        return run_sync(self._send_steps(event, effect))

    def advance(self) -> PersistentRun[S]:
        """Follow the current state's pending actions, committing each step."""
        return run_sync(self._advance_steps())

    def reload(self, run_id: str | None = None) -> PersistentRun[S]:
        """Read the run again from the store, dropping whatever this handle held."""
        return run_sync(self._reload_steps(run_id))

    def claim(self) -> bool:
        """Claim the run for a worker about to act on it (see StoredRun._claim_steps)."""
        return run_sync(self._claim_steps())


# -- the async runner ---------------------------------------------------------------------


class AsyncPersistentMachine(StoredMachine[S, AsyncUnitOfWork, "AsyncPersistentRun[S]"]):
    """PersistentMachine for asyncio, on an AsyncUnitOfWork: the same rules and guarantees
    (see StoredMachine); `async def` actions, guards, listeners and effects are awaited,
    plain ones called. An external action runs with no transaction open, as in a sync run.
    One AsyncPersistentMachine (and its unit of work) serves one task at a time."""

    async def start(
        self,
        context: Mapping[str, Any] | None = None,
        *,
        run_id: str | None = None,
        effect: AsyncEffect | None = None,
    ) -> AsyncPersistentRun[S]:
        """Store a new run and follow its actions, committing each step (see
        PersistentMachine.start)."""
        return await run_async(self._start_steps(context, run_id, effect))

    async def load(self, run_id: str) -> AsyncPersistentRun[S]:
        """The stored run, rebuilt; its actions do not run again."""
        return await run_async(self._load_steps(run_id))

    async def resume(self, run_id: str) -> AsyncPersistentRun[S]:
        """Load a run and follow its pending actions (after a crash, or in another task)."""
        return await (await self.load(run_id)).advance()

    async def send(
        self, run_id: str, event: object, *, effect: AsyncEffect | None = None
    ) -> AsyncPersistentRun[S]:
        """Load a run and send it `event`, committing each step that follows."""
        return await (await self.load(run_id)).send(event, effect=effect)

    async def send_many(
        self, events: Sequence[tuple[str, object]], *, effect: AsyncEffect | None = None
    ) -> list[AsyncPersistentRun[S]]:
        """See PersistentMachine.send_many."""
        return await run_async(self._send_many_steps(events, effect, handles=True))

    async def send_all(
        self, events: Sequence[tuple[str, object]], *, effect: AsyncEffect | None = None
    ) -> None:
        """See PersistentMachine.send_all."""
        await run_async(self._send_many_steps(events, effect, handles=False))

    async def survey(self, runs: Iterable[tuple[str, str]]) -> StoredRuns:
        """See PersistentMachine.survey."""
        return await run_async(self._survey_steps(runs))

    def _handle(self, version: int, seq: int) -> AsyncPersistentRun[S]:
        return AsyncPersistentRun(self, version, seq)

    def _new_run(self, context: Mapping[str, Any] | None, run_id: str | None) -> Run[S]:
        created = self.machine.create_async(
            context, run_id=run_id, listeners=self._listeners, steps=self.steps
        )
        return created.run

    def _rebuilt(self, run_id: str, state: S, context: dict[str, Any], path: list[Any]) -> Run[S]:
        restored = self.machine.restore_async(
            run_id, state, context, path, listeners=self._listeners, steps=self.steps
        )
        return restored.run

    def _open(self) -> object:
        return self.uow.__aenter__()

    def _close(self, error: BaseException | None) -> object:
        kind = type(error) if error is not None else None
        return self.uow.__aexit__(kind, error, error.__traceback__ if error else None)


class AsyncPersistentRun(StoredRun[S]):
    """A stored run moved with `await`; `send` and `advance` commit per step."""

    __slots__ = ()

    async def send(
        self, event: object, *, effect: AsyncEffect | None = None
    ) -> AsyncPersistentRun[S]:
        """Send `event` and follow the actions it leads to (see PersistentRun.send)."""
        return await run_async(self._send_steps(event, effect))

    async def advance(self) -> AsyncPersistentRun[S]:
        """Follow the current state's pending actions, committing each step."""
        return await run_async(self._advance_steps())

    async def reload(self, run_id: str | None = None) -> AsyncPersistentRun[S]:
        """Read the run again from the store, dropping whatever this handle held."""
        return await run_async(self._reload_steps(run_id))
