"""Stoppable: SIGTERM and SIGINT stop a loop after the item in hand, and say so in the log."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import pytest

from fsm.stopping import Stoppable


class Poller(Stoppable):
    """A loop as the relay and the worker are: a kind, a name, an item."""

    KIND = "poller"
    ITEM = "page"

    @property
    def name(self) -> str:
        return "p1"


@pytest.fixture
def handlers() -> Iterator[None]:
    """Whatever handles SIGTERM and SIGINT before the test handles them after it."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


class TestSignals:
    """install_signal_handlers makes both signals a clean stop."""

    @pytest.mark.usefixtures("handlers")
    def test_a_signal_stops_the_loop_and_is_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """SIGTERM (as the OS delivers it, a number) sets `stopping` and logs one INFO line."""
        caplog.set_level("INFO", logger="fsm.stopping")
        poller = Poller()
        poller.install_signal_handlers()
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler)
        assert signal.getsignal(signal.SIGINT) is handler
        handler(int(signal.SIGTERM), None)
        assert poller.stopping
        assert caplog.messages == [
            f"poller p1: signal {int(signal.SIGTERM)}, stopping after the page in hand"
        ]
