"""fsm.otel read back through the OpenTelemetry SDK (in-memory span exporter and metric
reader): spans, transitions counted, time in each state, and the outbox gauges."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlalchemy import Engine

from adapters.sqlalchemy import TABLES, SqlUnitOfWork
from fsm import CallbackError, PersistentMachine
from fsm.examples import payment, ping
from fsm.otel import (
    FAILED_STEPS,
    OUTBOX_OLDEST_AGE,
    OUTBOX_PENDING,
    STATE_DURATION,
    TRANSITIONS,
    Instrumentation,
    instrument,
    instrument_outbox,
)
from fsm.outbox import OutboxMessage
from tests.clock import T0, Clock
from tests.observe.support import Gateway


@dataclass
class Telemetry:
    """The SDK's in-memory ends: finished spans, and metrics read on demand."""

    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    meters: MeterProvider

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self, name: str) -> list[Any]:
        """The data points of metric `name` as collected now."""
        data = self.reader.get_metrics_data()
        if data is None:  # nothing was recorded at all
            return []
        return [
            point
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name == name
            for point in metric.data.data_points
        ]

    def described(self) -> dict[str, tuple[str | None, str | None]]:
        """The unit and description of each metric collected now, by name."""
        data = self.reader.get_metrics_data()
        return {
            metric.name: (metric.unit, metric.description)
            for resource in (data.resource_metrics if data is not None else [])
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }

    def by_attributes(self, name: str, *keys: str) -> dict[tuple[Any, ...], Any]:
        """Metric `name`'s points by the values of `keys` in their attributes."""
        return {tuple(point.attributes[k] for k in keys): point for point in self.points(name)}


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """An SDK tracer and meter provider with in-memory ends; fsm.otel instrumented on them."""
    spans = InMemorySpanExporter()
    tracers = TracerProvider()
    tracers.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meters = MeterProvider(metric_readers=[reader])
    instrumentation = instrument(tracer_provider=tracers, meter_provider=meters)
    try:
        yield Telemetry(spans, reader, meters)
    finally:
        instrumentation.stop()
        meters.shutdown()
        tracers.shutdown()


def nanoseconds(seconds: float) -> int:
    """The OpenTelemetry timestamp `seconds` after T0."""
    return int((T0 + timedelta(seconds=seconds)).timestamp()) * 10**9


def pings_run(engine: Engine, clock: Clock, waits: tuple[float, float]) -> str:
    """A ping run on `clock`: idle for waits[0] seconds, busy for waits[1], then done."""
    machine = PersistentMachine(ping, SqlUnitOfWork(engine, clock=clock), clock=clock)
    run = machine.start()
    clock.advance(waits[0])
    run.send("start")
    clock.advance(waits[1])
    run.send("finish")
    return run.id


class TestSteps:
    """A span per step, transitions counted, time in each state recorded."""

    def test_spans_of_committed_steps(self, engine: Engine, telemetry: Telemetry) -> None:
        """Each committed step is one span with the step's attributes and times."""
        clock = Clock()
        run_id = pings_run(engine, clock, (5, 2))
        first, second = telemetry.finished()
        assert first.name == "fsm.step ping"
        assert first.instrumentation_scope is not None
        assert first.instrumentation_scope.name == "fsm"
        assert dict(first.attributes or {}) == {
            "fsm.machine": "ping",
            "fsm.run_id": run_id,
            "fsm.seq": 1,
            "fsm.source": "idle",
            "fsm.trigger": "start",
            "fsm.target": "busy",
        }
        assert first.start_time == first.end_time == nanoseconds(5)
        assert first.status.status_code is StatusCode.UNSET
        assert (second.attributes or {})["fsm.target"] == "done"

    def test_transitions_counted(self, engine: Engine, telemetry: Telemetry) -> None:
        """fsm.transitions counts committed transitions by machine, source and target."""
        for _ in range(3):
            pings_run(engine, Clock(), (1, 1))
        counted = telemetry.by_attributes(TRANSITIONS, "fsm.machine", "fsm.source", "fsm.target")
        assert {key: point.value for key, point in counted.items()} == {
            ("ping", "idle", "busy"): 3,
            ("ping", "busy", "done"): 3,
        }

    def test_time_in_each_state(self, engine: Engine, telemetry: Telemetry) -> None:
        """fsm.state.duration records, per state, how long runs stayed before leaving it."""
        pings_run(engine, Clock(), (5, 120))
        pings_run(engine, Clock(), (15, 4000))
        spent = telemetry.by_attributes(STATE_DURATION, "fsm.machine", "fsm.state")
        idle, busy = spent[("ping", "idle")], spent[("ping", "busy")]
        assert (idle.count, idle.sum, idle.min, idle.max) == (2, 20, 5, 15)
        assert (busy.count, busy.sum) == (2, 4120)
        assert list(busy.explicit_bounds)[:5] == [0.01, 0.1, 1.0, 10.0, 60.0]
        assert ("ping", "done") not in spent  # a final state is never left
        described = telemetry.described()
        assert described[TRANSITIONS] == ("{transition}", "Committed transitions")
        assert described[STATE_DURATION] == (
            "s",
            "Time a run spent in a state before a step left it",
        )

    def test_failed_step(self, engine: Engine, telemetry: Telemetry) -> None:
        """A failed step's span has an error status and the exception; it is counted as
        failed, never as a transition."""
        clock = Clock()
        machine = PersistentMachine(
            payment, SqlUnitOfWork(engine, clock=clock), steps=Gateway(down=True), clock=clock
        )
        with pytest.raises(CallbackError):
            machine.start(run_id="p-1")
        (span,) = telemetry.finished()
        assert span.name == "fsm.step payment"
        assert (span.status.status_code, span.status.description) == (
            StatusCode.ERROR,
            "CallbackError",
        )
        assert span.start_time == span.end_time == span.events[0].timestamp == nanoseconds(0)
        assert (span.events[0].attributes or {})["exception.type"] == "fsm.errors.CallbackError"
        assert (span.attributes or {})["fsm.source"] == "created"
        assert "fsm.trigger" not in (span.attributes or {})
        assert [event.name for event in span.events] == ["exception"]
        assert telemetry.points(TRANSITIONS) == []
        (failed,) = telemetry.points(FAILED_STEPS)
        assert (failed.value, dict(failed.attributes)) == (
            1,
            {"fsm.machine": "payment", "fsm.source": "created"},
        )
        assert telemetry.described()[FAILED_STEPS] == ("{step}", "Steps rolled back")

    def test_stop(self, engine: Engine, telemetry: Telemetry) -> None:
        """After stop(), instrument's hooks are told nothing more."""
        spans = InMemorySpanExporter()
        tracers = TracerProvider()
        tracers.add_span_processor(SimpleSpanProcessor(spans))
        instrument(tracer_provider=tracers, meter_provider=telemetry.meters).stop()
        Instrumentation(tracer_provider=tracers).stop()  # never watching: nothing to stop
        pings_run(engine, Clock(), (1, 1))
        assert (len(spans.get_finished_spans()), len(telemetry.finished())) == (0, 2)


class TestOutboxGauges:
    """fsm.outbox.pending and fsm.outbox.oldest_age read the outbox when collected."""

    def test_pending_and_oldest_age(self, engine: Engine, telemetry: Telemetry) -> None:
        """Pending events and the age of the oldest, read from the database each time."""
        clock = Clock()
        uow = SqlUnitOfWork(engine, clock=clock)
        instrument_outbox(uow, name="payments", meter_provider=telemetry.meters, clock=clock)
        assert [p.value for p in telemetry.points(OUTBOX_PENDING)] == [0]
        assert [p.value for p in telemetry.points(OUTBOX_OLDEST_AGE)] == [0.0]
        with uow:
            for number, minutes in enumerate((0, 3, 5)):
                uow.outbox.add(
                    OutboxMessage(
                        f"e-{number}",
                        "topic",
                        f"k-{number}",
                        b"{}",
                        created_at=T0 + timedelta(minutes=minutes),
                    )
                )
        clock.advance(600)
        (pending,) = telemetry.points(OUTBOX_PENDING)
        assert (pending.value, dict(pending.attributes)) == (3, {"fsm.outbox": "payments"})
        assert [p.value for p in telemetry.points(OUTBOX_OLDEST_AGE)] == [600.0]
        with uow:
            uow.outbox.mark_published("e-0", owner="relay", now=clock())
            uow.outbox.mark_dead("e-1", owner="relay", error="gave up", now=clock())
        assert [p.value for p in telemetry.points(OUTBOX_PENDING)] == [1]
        assert [p.value for p in telemetry.points(OUTBOX_OLDEST_AGE)] == [300.0]
        assert telemetry.described() == {
            OUTBOX_PENDING: ("{event}", "Outbox events pending"),
            OUTBOX_OLDEST_AGE: ("s", "Age of the oldest pending event"),
        }

    def test_an_event_newer_than_the_clock(self, engine: Engine, telemetry: Telemetry) -> None:
        """An event stamped after the gauge's clock (clocks apart) is 0 s old, not less."""
        clock = Clock()
        uow = SqlUnitOfWork(engine, clock=clock)
        instrument_outbox(uow, meter_provider=telemetry.meters, clock=clock)
        with uow:
            uow.outbox.add(
                OutboxMessage("e-0", "topic", "k", b"{}", created_at=T0 + timedelta(seconds=30))
            )
        assert [p.value for p in telemetry.points(OUTBOX_OLDEST_AGE)] == [0.0]

    def test_unreadable_outbox(
        self, engine: Engine, telemetry: Telemetry, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A failed read reports nothing for that collection and logs why."""
        uow = SqlUnitOfWork(engine)
        instrument_outbox(uow, meter_provider=telemetry.meters)
        TABLES.outbox.drop(engine)
        assert telemetry.points(OUTBOX_PENDING) == []
        for record in caplog.records:  # one a gauge
            message = record.getMessage()
            assert message.startswith("outbox gauges of outbox: reading the outbox failed: ")
            assert "Error(" in message  # and the error itself, named
