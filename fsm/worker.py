"""The worker: fires runs' due timeouts and resumes runs left between steps, each under the
run's claim, so that several workers (processes, hosts) never act on one run twice."""

from __future__ import annotations

import inspect
import logging
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, Protocol

from fsm.cli import UsageError, load_object
from fsm.defaults import utc_now
from fsm.definition import Machine
from fsm.errors import FSMError
from fsm.persistence import PersistentMachine, PersistentRun, default_worker
from fsm.ports import ConcurrencyError, RunClaimed, RunNotFound, UnitOfWork
from fsm.stopping import Stoppable, Tally
from fsm.timers import timeout_of

log = logging.getLogger(__name__)


class WorkerSettingsError(FSMError, ValueError):
    """Worker settings that cannot work, named with what is allowed."""


class RunsFactory(Protocol):
    """What `fsm worker MODULE:ATTR` may name besides a Machine: the machine's runs on a
    unit of work, with the collaborators (steps=) and context types (types=) it needs."""

    def __call__(
        self, uow: UnitOfWork, *, worker: str, lease: timedelta
    ) -> PersistentMachine[Any]: ...


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How much a worker takes at once, how long it leaves runs to their own process, how
    often it looks and reports."""

    batch_size: int = 50
    """Runs looked up at once, for due timeouts and for runs to resume (each machine)."""
    grace: timedelta = timedelta(seconds=60)
    """How long a run may sit in a state with a pending action before it counts as left
    behind (its process died): longer than the process that is taking the step needs."""
    idle_interval: float = 1.0
    """Seconds to wait when nothing was due."""
    report_interval: float = 60.0
    """Seconds between the one-line summaries logged at INFO."""

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be positive, got {value!r}"
            for name, value in (
                ("batch_size", self.batch_size),
                ("idle_interval", self.idle_interval),
                ("report_interval", self.report_interval),
            )
            if not value > 0
        ]
        if self.grace < timedelta(0):
            problems.append(f"grace must not be negative, got {self.grace}")
        if problems:
            raise WorkerSettingsError("; ".join(problems))


@dataclass
class WorkerReport:
    """What a worker did, counted."""

    found: int = 0
    """Runs the lookups returned (due, or left behind)."""
    fired: int = 0
    """Timeouts fired: each a transition recorded through the timeout's row."""
    resumed: int = 0
    """Runs left behind whose pending step was taken."""
    skipped: int = 0
    """Runs another worker claimed or moved first (nothing done here)."""
    failed: int = 0
    """Runs whose step raised (logged; the run is tried again later)."""

    def add(self, other: WorkerReport) -> None:
        """Add another report's counts to this one."""
        for field in fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    def summary(self) -> str:
        """One line: `fired 3 timeouts, resumed 2 runs, skipped 1, failed 0`."""
        return (
            f"fired {self.fired} timeouts, resumed {self.resumed} runs, "
            f"skipped {self.skipped}, failed {self.failed}"
        )


Act = Callable[[PersistentMachine[Any], PersistentRun[Any]], bool]
"""What the worker does to one loaded run: False if it turned out to have nothing to do."""


class Worker(Stoppable):
    """A long-lived worker over the stored runs of some machines.

    Each round, for each machine: the runs whose timeout is due (`RunStore.find_due`) are
    claimed and sent their timeout's trigger; then the runs sitting in a state with a
    pending action for longer than `grace` (`PersistentMachine.resumable_states`) are
    claimed and advanced. A claim is the external step's (claimed_by, claimed_until, with
    the version check): of several workers, one wins each run; one that dies holding it
    leaves it to the others once the machine's `lease` runs out. `stop()` (or SIGTERM and
    SIGINT through `install_signal_handlers`) finishes the run in hand, then returns.
    """

    def __init__(
        self,
        runs: Iterable[PersistentMachine[Any]] | Mapping[str, PersistentMachine[Any]],
        *,
        settings: WorkerSettings | None = None,
        name: str | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
        rand: Callable[[], float] = random.random,
    ) -> None:
        machines = list(runs.values() if isinstance(runs, Mapping) else runs)
        names = [pm.machine.name for pm in machines]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise WorkerSettingsError(f"machine {twice[0]!r} is given twice; give each once")
        self.runs = tuple(machines)
        self.settings = settings or WorkerSettings()
        self._name = name or default_worker()
        self.clock = clock
        self.rand = rand
        Stoppable.__init__(self)
        self.sleep = sleep if sleep is not None else self.wait

    KIND, ITEM = "worker", "run"

    @property
    def name(self) -> str:
        """The worker's name in its log lines."""
        return self._name

    def run_once(self) -> WorkerReport:
        """One round over every machine: due timeouts first, then runs left behind."""
        report = WorkerReport()
        for runs in self.runs:
            self._each(runs, self._due(runs), _fire, report)
            self._each(runs, self._left_behind(runs), _resume, report)
        return report

    def run(self, *, until_idle: bool = False, max_seconds: float | None = None) -> WorkerReport:
        """Work until stopped; with `until_idle`, also return once a round finds nothing.

        `max_seconds` bounds the time on the worker's clock (for demos and tests). A
        one-line summary is logged every `report_interval` and when it returns."""
        started = self.clock()
        tally = Tally(self, WorkerReport, self.settings.report_interval, started, log)
        total = tally.total
        while not self.stopping:
            report = self.run_once()
            now = self.clock()
            tally.add(report, now)
            if until_idle and report.found == 0:
                break
            if max_seconds is not None and (now - started).total_seconds() > max_seconds:
                break
            if report.found == 0:
                self.sleep(self.settings.idle_interval)
        log.info("worker %s: stopped; %s", self.name, total.summary())
        return total

    def _due(self, runs: PersistentMachine[Any]) -> list[str]:
        with runs.uow as uow:
            return uow.runs.find_due(runs.machine.name, runs.clock(), self.settings.batch_size)

    def _left_behind(self, runs: PersistentMachine[Any]) -> list[str]:
        states = runs.resumable_states
        if not states:
            return []
        now = runs.clock()
        with runs.uow as uow:
            return uow.runs.find(
                runs.machine.name,
                states=states,
                finished=False,
                updated_before=now - self.settings.grace,
                claimable_at=now,
                limit=self.settings.batch_size,
            )

    def _each(
        self, runs: PersistentMachine[Any], found: list[str], act: Act, report: WorkerReport
    ) -> None:
        """`act` on each run found, in a random order (workers that found the same runs
        spread over them instead of racing for the first)."""
        report.found += len(found)
        found.sort(key=lambda _: self.rand())
        for run_id in found:
            if self.stopping:
                return
            try:
                done = act(runs, runs.load(run_id))
            except (ConcurrencyError, RunClaimed, RunNotFound):
                report.skipped += 1  # another worker (or a request) moved it first
                continue
            except Exception as error:
                report.failed += 1
                log.warning(
                    "worker %s: run %s of %r failed: %s",
                    self.name,
                    run_id,
                    runs.machine.name,
                    error,
                )
                continue
            if not done:
                report.skipped += 1
            elif act is _fire:
                report.fired += 1
            else:
                report.resumed += 1


def _fire(runs: PersistentMachine[Any], run: PersistentRun[Any]) -> bool:
    """Send a due run its timeout's trigger, under its claim."""
    timeout = timeout_of(runs.machine.state(run.state))
    due = run.due_at
    if timeout is None or due is None or due > runs.clock() or run.finished:
        return False  # it moved on since the lookup
    if not run.claim():
        return False
    run.send(timeout.trigger)
    return True


def _resume(runs: PersistentMachine[Any], run: PersistentRun[Any]) -> bool:
    """Take a left-behind run's pending step, under its claim."""
    if run.finished or runs.machine.state(run.state).action is None:
        return False  # it moved on since the lookup
    if not run.claim():
        return False
    run.advance()
    return True


def runs_of(spec: str, uow: UnitOfWork, *, worker: str, lease: timedelta) -> PersistentMachine[Any]:
    """The runs `MODULE:ATTR` names on `uow`: a Machine's (its actions need no collaborators),
    or what a RunsFactory there builds; UsageError naming what it is otherwise."""
    value = load_object(spec)
    if isinstance(value, Machine):
        return PersistentMachine(value, uow, worker=worker, lease=lease)
    wanted = (
        f"{spec} is a {type(value).__name__}; give an fsm.Machine or a function of "
        "(uow, *, worker, lease) returning a PersistentMachine"
    )
    try:
        inspect.signature(value).bind(uow, worker=worker, lease=lease)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise UsageError(wanted) from None
    runs = value(uow, worker=worker, lease=lease)  # type: ignore[operator]
    if not isinstance(runs, PersistentMachine):
        raise UsageError(f"{wanted}; it gave a {type(runs).__name__}")
    return runs
