"""`fsm relay` and `fsm worker` log a one-line summary every report interval (Tally)."""

from __future__ import annotations

import pytest

from adapters.memory import FakePublisher, InMemoryUnitOfWork
from fsm.outbox import OutboxMessage
from fsm.relay import OutboxRelay, RelaySettings, RelaySettingsError
from tests.clock import T0, Clock


class TestRelaySummary:
    """The relay's summary line, on its own clock."""

    def test_a_summary_every_report_interval(self, caplog: pytest.LogCaptureFixture) -> None:
        """Each report interval one INFO line counts what the relay did since the last."""
        caplog.set_level("INFO", logger="fsm.relay")
        clock, uow = Clock(), InMemoryUnitOfWork()
        with uow:
            for n in range(2):
                uow.outbox.add(OutboxMessage(f"e-{n}", "topic", f"k-{n}", b"{}", created_at=T0))
        relay = OutboxRelay(
            uow,
            FakePublisher(),
            owner="r1",
            settings=RelaySettings(idle_interval=10, report_interval=30),
            clock=clock,
            sleep=clock.sleep,
        )
        relay.run(max_seconds=65)
        lines = [r.getMessage() for r in caplog.records if "(last" in r.getMessage()]
        assert lines == [
            "relay r1: published 2, failed 0, dead-lettered 0, claimed 2, errors 0 (last 30 s)",
            "relay r1: published 0, failed 0, dead-lettered 0, claimed 0, errors 0 (last 30 s)",
        ]

    def test_report_interval_is_checked(self) -> None:
        """A report interval that is not positive is refused, named."""
        with pytest.raises(RelaySettingsError, match="report_interval must be positive, got 0"):
            RelaySettings(report_interval=0)
