"""The example service as a real uvicorn server in a process of its own, on a random port."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from adapters.kafka.broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parents[2]
USERS = 20
KAFKA_BOUNDS = ["--request-timeout-ms", "800", "--delivery-timeout-ms", "1000"]
KAFKA_BOUNDS += ["--max-block-ms", "800"]


@dataclass
class Service:
    """A running example service: its base URL and where its log goes."""

    url: str
    log: Path


@pytest.fixture
def broker() -> Iterator[LocalBroker]:
    """A real Kafka-protocol broker (Tansu) on a free port, stopped after the test."""
    with LocalBroker() as running:
        yield running


@pytest.fixture
def service(db_url: str, broker: LocalBroker, tmp_path: Path) -> Iterator[Service]:
    """`python -m examples.service` on `db_url` and the broker, users 1..20 seeded."""
    with serving(db_url, broker, tmp_path) as running:
        yield running


@pytest.fixture
def relaying_service(db_url: str, broker: LocalBroker, tmp_path: Path) -> Iterator[Service]:
    """The service with its outbox relay running as a task (`--relay`)."""
    with serving(db_url, broker, tmp_path, "--relay") as running:
        yield running


@contextmanager
def serving(db_url: str, broker: LocalBroker, tmp_path: Path, *flags: str) -> Iterator[Service]:
    port = free_port()
    log = tmp_path / "service.log"
    command = [sys.executable, "-m", "examples.service", "--db-url", db_url]
    command += ["--bootstrap-servers", broker.bootstrap_servers, "--port", str(port)]
    command += ["--seed-users", str(USERS), *KAFKA_BOUNDS, *flags]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT, env=os.environ.copy()
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/lag", timeout=1).raise_for_status()
                break
            except httpx.HTTPError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the service did not start (exit status {process.returncode}):\n"
                        f"{log.read_text()}"
                    ) from None
                time.sleep(0.1)
        yield Service(url, log)
    finally:
        if process.poll() is not None:  # it should still be serving: say how it ended
            with log.open("a") as output:
                output.write(f"\n[the service had exited, status {process.returncode}]\n")
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
