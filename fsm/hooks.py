"""After a step: what committed or failed, as a value; its log line; the hooks told of it.

A persistent runner (fsm.persistence) reports each step once its transaction has ended:
`committed` after the commit returned, `failed` after the rollback. Each logs one line
through the `fsm.steps` logger, committed steps at DEBUG and failed ones at WARNING, with
the step's fields as `extra` (`fsm_machine`, `fsm_run_id`, `fsm_source`, `fsm_trigger`,
`fsm_target`, ...) for structlog or a JSON formatter, then calls the machine's hooks and
those watching every machine (`watch_steps`). A hook's error is logged and dropped: the
step it reports has committed (or rolled back) already, and no observer may make it look
otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fsm.drive import Steps, settle
from fsm.errors import callable_name
from fsm.faults import describe_error

log = logging.getLogger("fsm.steps")


@dataclass(frozen=True, slots=True)
class StepCommitted:
    """A step whose transaction committed: one transition of the run (states and trigger
    as stored, see fsm.labels) and when it happened."""

    machine: str
    run_id: str
    seq: int
    """The transition's number in the run's history, from 1."""
    source: str
    trigger: str
    target: str
    outcome: object
    """The value that fired the row: the action's outcome or the event sent."""
    began_at: datetime
    """When the step began: its transaction opened, the previous step committed, or its
    external call started."""
    at: datetime
    """When it committed (on the machine's clock): the history row's time."""
    entered_at: datetime | None
    """When the run entered `source` (None when the store did not say)."""

    @property
    def time_in_source(self) -> timedelta | None:
        """How long the run was in `source` before this step left it."""
        return None if self.entered_at is None else self.at - self.entered_at

    def fields(self) -> dict[str, object]:
        """The log record's `extra` fields."""
        return {
            "fsm_machine": self.machine,
            "fsm_run_id": self.run_id,
            "fsm_seq": self.seq,
            "fsm_source": self.source,
            "fsm_trigger": self.trigger,
            "fsm_target": self.target,
        }


@dataclass(frozen=True, slots=True)
class StepFailed:
    """A step whose transaction rolled back (an action's or guard's error, a concurrency
    conflict, a failed commit, a refused event): nothing of it was written."""

    machine: str
    run_id: str
    source: str
    """The state the step started from (the run stays there unless another process moved
    it: the step's writes were undone)."""
    trigger: str | None
    """The trigger of the transition that failed to commit; None when the step failed
    before choosing one (its action or a guard raised, the event was refused)."""
    target: str | None
    error: BaseException
    """What the caller gets raised."""
    began_at: datetime
    at: datetime
    """When the failure was seen."""

    @classmethod
    def of(cls, step: StepCommitted, error: BaseException, at: datetime) -> StepFailed:
        """`step`, prepared but rolled back with `error` (a batch of steps that failed)."""
        return cls(
            step.machine, step.run_id, step.source, step.trigger, step.target, error,
            step.began_at, at,
        )  # fmt: skip

    def fields(self) -> dict[str, object]:
        """The log record's `extra` fields."""
        return {
            "fsm_machine": self.machine,
            "fsm_run_id": self.run_id,
            "fsm_source": self.source,
            "fsm_trigger": self.trigger,
            "fsm_target": self.target,
            "fsm_error": describe_error(self.error),
        }


CommitHook = Callable[[StepCommitted], object]
"""Called after a step commits; an async runner awaits what an `async def` one returns."""

FailureHook = Callable[[StepFailed], object]
"""Called after a step rolls back; awaited like a CommitHook."""

_watchers: list[tuple[CommitHook | None, FailureHook | None]] = []
"""Hooks told of every persistent machine's steps (see `watch_steps`)."""


def watch_steps(
    *, after_commit: CommitHook | None = None, after_failure: FailureHook | None = None
) -> Callable[[], None]:
    """Tell these hooks of every persistent machine's steps from now on, after each
    machine's own; returns the function that stops it (for instrumentation such as
    fsm.otel, which watches a whole process)."""
    watcher = (after_commit, after_failure)
    _watchers.append(watcher)

    def stop() -> None:
        if watcher in _watchers:
            _watchers.remove(watcher)

    return stop


def committed(step: StepCommitted, hooks: Iterable[CommitHook]) -> Steps[None]:
    """Log the committed step at DEBUG and call `hooks`, then the watchers' hooks."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s run %s: step %d committed: %s --%s--> %s",
            step.machine,
            step.run_id,
            step.seq,
            step.source,
            step.trigger,
            step.target,
            extra=step.fields(),
        )
    yield from _tell(step, [*hooks, *(hook for hook, _ in _watchers if hook is not None)])


def failed(step: StepFailed, hooks: Iterable[FailureHook]) -> Steps[None]:
    """Log the failed step at WARNING and call `hooks`, then the watchers' hooks."""
    fields = step.fields()
    tried = "" if step.trigger is None else f" (--{step.trigger}--> {step.target})"
    log.warning(
        "%s run %s: step from %s%s failed, rolled back: %s",
        step.machine,
        step.run_id,
        step.source,
        tried,
        fields["fsm_error"],
        extra=fields,
    )
    yield from _tell(step, [*hooks, *(hook for _, hook in _watchers if hook is not None)])


def _tell(step: StepCommitted | StepFailed, hooks: list[Callable[[Any], object]]) -> Steps[None]:
    for hook in hooks:
        try:
            yield from settle(hook(step))
        except Exception:
            log.exception(
                "%s run %s: hook %s failed (the step is %s all the same)",
                step.machine,
                step.run_id,
                callable_name(hook),
                "committed" if isinstance(step, StepCommitted) else "rolled back",
                extra=step.fields(),
            )
