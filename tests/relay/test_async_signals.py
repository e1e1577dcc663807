"""AsyncOutboxRelay.install_signal_handlers: a real process running the async relay stops
cleanly on SIGTERM or SIGINT, through its event loop, and the handlers from before are back."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from adapters.kafka import KafkaConfig
from adapters.memory import AsyncFakePublisher
from adapters.sqlalchemy import create_async_engine, create_engine, init_db
from userstatus.app import AsyncFlowApp
from userstatus.relay import AsyncOutboxRelay
from userstatus.sql import FLOW_TABLES

ROOT = Path(__file__).resolve().parents[2]
SIGNALS = (signal.SIGTERM, signal.SIGINT)

# The relay idles 60 s between claims: only a stop that cuts the sleep short ends it in time.
PROGRAM = """
import asyncio, logging, signal, sys

from adapters.kafka import KafkaConfig
from adapters.memory import AsyncFakePublisher
from adapters.sqlalchemy import create_async_engine, create_engine, init_db
from fsm.relay import RelaySettings
from userstatus.app import AsyncFlowApp
from userstatus.sql import FLOW_TABLES

url = sys.argv[1]
engine = create_engine(url)
init_db(engine, extra=FLOW_TABLES)
engine.dispose()


async def main() -> None:
    app = AsyncFlowApp(
        create_async_engine(url), KafkaConfig(), relay_settings=RelaySettings(idle_interval=60)
    )
    relay = app.relay(AsyncFakePublisher(), owner="r1")
    before = signal.getsignal(signal.SIGINT)
    relay.install_signal_handlers()
    asyncio.get_running_loop().call_soon(lambda: print("ready", flush=True))  # run() has begun
    try:
        report = await relay.run()
    finally:
        await app.close()
    restored = (
        signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
        and signal.getsignal(signal.SIGINT) is before
    )
    print("stopped", report.claimed, "restored" if restored else "not restored", flush=True)


logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
asyncio.run(main())
"""


class TestSignalsInAProcess:
    @pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
    def test_a_signal_stops_the_relay_through_its_loop(
        self, tmp_path: Path, signum: signal.Signals
    ) -> None:
        """The signal stops the idle relay at once, run() returns normally (exit 0), the
        stop is logged, and SIGTERM and SIGINT have their handlers from before again."""
        url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        process = subprocess.Popen(
            [sys.executable, "-c", PROGRAM, url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "ready\n"
            time.sleep(0.3)  # into the relay's idle sleep
            sent = time.monotonic()
            process.send_signal(signum)
            out, err = process.communicate(timeout=30)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        assert process.returncode == 0, err
        assert time.monotonic() - sent < 20, "the signal did not cut the idle sleep short"
        assert out == "stopped 0 restored\n", err
        assert f"relay r1: signal {int(signum)}, stopping after the event in hand" in err


class TestSignalsInTheLoop:
    @pytest.fixture
    async def relay(self, tmp_path: Path) -> AsyncIterator[AsyncOutboxRelay]:
        """An async relay on SQLite; SIGTERM's and SIGINT's handlers put back after the test."""
        url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        engine = create_engine(url)
        init_db(engine, extra=FLOW_TABLES)
        engine.dispose()
        app = AsyncFlowApp(create_async_engine(url), KafkaConfig())
        saved = {sig: signal.getsignal(sig) for sig in SIGNALS}
        try:
            yield app.relay(AsyncFakePublisher(), owner="r1")
        finally:
            loop = asyncio.get_running_loop()
            for sig, handler in saved.items():
                loop.remove_signal_handler(sig)
                signal.signal(sig, handler)
            await app.close()

    async def test_the_handlers_are_the_running_loops(self, relay: AsyncOutboxRelay) -> None:
        """Both signals are registered with the running loop (add_signal_handler)."""
        loop = asyncio.get_running_loop()
        relay.install_signal_handlers()
        assert loop.remove_signal_handler(signal.SIGTERM)
        assert loop.remove_signal_handler(signal.SIGINT)

    async def test_stop_removes_them(self, relay: AsyncOutboxRelay) -> None:
        """After stop() the loop handles neither signal and the handlers from before are back."""
        loop = asyncio.get_running_loop()
        before = {sig: signal.getsignal(sig) for sig in SIGNALS}
        relay.install_signal_handlers()
        relay.stop()
        assert not loop.remove_signal_handler(signal.SIGTERM)
        assert not loop.remove_signal_handler(signal.SIGINT)
        assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before

    async def test_run_returning_removes_them(self, relay: AsyncOutboxRelay) -> None:
        """A run that ends by itself (until_idle) removes them too."""
        loop = asyncio.get_running_loop()
        relay.install_signal_handlers()
        await relay.run(until_idle=True)
        assert not loop.remove_signal_handler(signal.SIGTERM)
        assert not loop.remove_signal_handler(signal.SIGINT)

    @pytest.mark.parametrize("signum", SIGNALS)
    async def test_a_signal_stops_the_relay_in_the_loop(
        self, relay: AsyncOutboxRelay, signum: signal.Signals, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The loop's handler stops the relay, naming the signal, and hands it back."""
        caplog.set_level(logging.INFO, logger="fsm.stopping")
        relay.install_signal_handlers()
        signal.raise_signal(signum)
        for _ in range(100):  # the loop runs the handler on one of its next turns
            if relay.stopping:
                break
            await asyncio.sleep(0.01)
        assert relay.stopping
        assert f"relay r1: signal {int(signum)}, stopping after the event in hand" in caplog.text
        assert not asyncio.get_running_loop().remove_signal_handler(signum)

    async def test_stop_from_another_thread_removes_them_through_the_loop(
        self, relay: AsyncOutboxRelay
    ) -> None:
        """stop() called from another thread (an operator's) leaves the removal to the loop."""
        loop = asyncio.get_running_loop()
        before = {sig: signal.getsignal(sig) for sig in SIGNALS}
        relay.install_signal_handlers()
        await asyncio.to_thread(relay.stop)
        await asyncio.sleep(0)  # the loop's turn: the callback stop() handed it
        assert not loop.remove_signal_handler(signal.SIGTERM)
        assert not loop.remove_signal_handler(signal.SIGINT)
        assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before

    def test_outside_a_running_loop_it_refuses(self, tmp_path: Path) -> None:
        """Called with no loop running, it raises RuntimeError and installs nothing."""
        url = f"sqlite:///{tmp_path / 'relay.sqlite3'}"
        app = AsyncFlowApp(create_async_engine(url), KafkaConfig())
        relay = app.relay(AsyncFakePublisher(), owner="r1")
        before = signal.getsignal(signal.SIGTERM)
        with pytest.raises(RuntimeError, match="no running event loop"):
            relay.install_signal_handlers()
        assert signal.getsignal(signal.SIGTERM) is before
        asyncio.run(app.close())
