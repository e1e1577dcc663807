"""OpenTelemetry for persistent runs and the outbox (the `otel` extra): `instrument()` enables it.

Nothing else in the engine imports this module or opentelemetry: a process that never calls
`instrument` never loads either. Only the API package is needed; spans and metrics go
wherever the process's OpenTelemetry SDK sends them (nowhere when none is configured).

- a span per step (`fsm.step MACHINE`), from the step's start to its commit, with the step's
  attributes; a failed step's span has an error status and the exception;
- `fsm.transitions` counts committed transitions by machine, source and target;
- `fsm.steps.failed` counts failed steps by machine and source;
- `fsm.state.duration` records how long each run stayed in the state a step left (seconds,
  from the run's history times);
- `instrument_outbox` adds `fsm.outbox.pending` and `fsm.outbox.oldest_age` gauges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

try:
    from opentelemetry import metrics, trace
    from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
    from opentelemetry.trace import Status, StatusCode, TracerProvider
except ImportError as missing:
    raise ImportError(
        "fsm.otel needs the OpenTelemetry API: pip install 'fsm-orchestrator[otel]'"
    ) from missing

from fsm.defaults import utc_now
from fsm.hooks import StepCommitted, StepFailed, watch_steps
from fsm.outbox import OutboxUnitOfWork

SCOPE = "fsm"
TRANSITIONS = "fsm.transitions"
FAILED_STEPS = "fsm.steps.failed"
STATE_DURATION = "fsm.state.duration"
OUTBOX_PENDING = "fsm.outbox.pending"
OUTBOX_OLDEST_AGE = "fsm.outbox.oldest_age"

STATE_BUCKETS = (0.01, 0.1, 1.0, 10.0, 60.0, 600.0, 3600.0, 6 * 3600.0, 86400.0, 7 * 86400.0)
"""Seconds: from a local action's step to a week-long wait for a timeout."""

log = logging.getLogger(__name__)


class Instrumentation:
    """The spans and step metrics of persistent runs; its `committed` and `failed` methods
    are step hooks (fsm.hooks), given to every machine by `instrument` or to one machine as
    its `after_commit` and `after_failure`."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self._transitions = meter.create_counter(
            TRANSITIONS, unit="{transition}", description="Committed transitions"
        )
        self._failed = meter.create_counter(
            FAILED_STEPS, unit="{step}", description="Steps rolled back"
        )
        self._in_state = meter.create_histogram(
            STATE_DURATION,
            unit="s",
            description="Time a run spent in a state before a step left it",
            explicit_bucket_boundaries_advisory=STATE_BUCKETS,
        )
        self.stop: Callable[[], None] = lambda: None
        """Stop watching every machine's steps (set by `instrument`)."""

    def committed(self, step: StepCommitted) -> None:
        """A step committed: its span, a transition counted, the time spent in its source."""
        span = self._tracer.start_span(
            f"fsm.step {step.machine}",
            start_time=_nanoseconds(step.began_at),
            attributes=_attributes(step.fields()),
        )
        span.end(end_time=_nanoseconds(step.at))
        machine = {"fsm.machine": step.machine}
        self._transitions.add(1, {**machine, "fsm.source": step.source, "fsm.target": step.target})
        spent = step.time_in_source
        if spent is not None:
            self._in_state.record(spent.total_seconds(), {**machine, "fsm.state": step.source})

    def failed(self, step: StepFailed) -> None:
        """A step rolled back: its span, with an error status, and a failure counted."""
        span = self._tracer.start_span(
            f"fsm.step {step.machine}",
            start_time=_nanoseconds(step.began_at),
            attributes=_attributes(step.fields()),
        )
        span.record_exception(step.error, timestamp=_nanoseconds(step.at))
        span.set_status(Status(StatusCode.ERROR, type(step.error).__name__))
        span.end(end_time=_nanoseconds(step.at))
        self._failed.add(1, {"fsm.machine": step.machine, "fsm.source": step.source})


def instrument(
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> Instrumentation:
    """Give every persistent machine's steps spans and metrics, from now on (the global
    providers unless given); call the result's `stop()` to end it."""
    instrumentation = Instrumentation(
        tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    instrumentation.stop = watch_steps(
        after_commit=instrumentation.committed, after_failure=instrumentation.failed
    )
    return instrumentation


def instrument_outbox(
    uow: OutboxUnitOfWork,
    *,
    name: str = "outbox",
    meter_provider: MeterProvider | None = None,
    clock: Callable[[], datetime] = utc_now,
) -> None:
    """Gauges of the outbox `uow` reaches: `fsm.outbox.pending` (events neither published
    nor dead) and `fsm.outbox.oldest_age` (seconds since the oldest of them was added; 0
    when none is), labelled `fsm.outbox=name`.

    The metric reader calls them from its own thread: give them a unit of work of their
    own. A read that fails is logged and reports nothing for that collection.
    """
    meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
    labels = {"fsm.outbox": name}

    def read(what: Callable[[], float]) -> Iterator[Observation]:
        try:
            with uow:
                value = what()
        except Exception as error:
            log.warning("outbox gauges of %s: reading the outbox failed: %r", name, error)
            return
        yield Observation(value, labels)

    def pending(options: CallbackOptions) -> Iterator[Observation]:
        return read(lambda: uow.outbox.counts().get("pending", 0))

    def oldest_age(options: CallbackOptions) -> Iterator[Observation]:
        def age() -> float:
            oldest = uow.outbox.oldest_pending()
            return 0.0 if oldest is None else max(0.0, (clock() - oldest).total_seconds())

        return read(age)

    meter.create_observable_gauge(
        OUTBOX_PENDING, [pending], unit="{event}", description="Outbox events pending"
    )
    meter.create_observable_gauge(
        OUTBOX_OLDEST_AGE, [oldest_age], unit="s", description="Age of the oldest pending event"
    )


def _attributes(fields: dict[str, object]) -> dict[str, str | int]:
    """Log fields as span attributes: `fsm_run_id` as `fsm.run_id`, unknown ones left out."""
    return {
        key.replace("fsm_", "fsm.", 1): value
        for key, value in fields.items()
        if isinstance(value, str | int)
    }


def _nanoseconds(at: datetime) -> int:
    return round(at.timestamp() * 1_000_000) * 1000
