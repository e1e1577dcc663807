"""An updating process of the fault campaign: random status updates through the real flow.

Run as `python -m tests.campaign.updater --db-url URL --bootstrap-servers HOST:PORT ...`.
Each loop picks a user (now and then one that does not exist) and a target status (legal
or not), and calls `FlowApp.orchestrator().perform(...)`. It writes one JSON line per
attempt (before `perform`) and per result to `--journal`, so the campaign can count what
a process killed with -9 attempted. It stops on SIGTERM after the update in hand, or by
itself after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import threading
import time
from collections.abc import Sequence
from typing import IO, Any

from adapters.kafka.config import KafkaConfig
from adapters.kafka.retry import RetryPolicy
from userstatus.app import FlowApp
from userstatus.domain import UpdateUserStatusPayload, UserStatus

MISSING_USER = 999_999
"""A user id the campaign never creates: its updates end in update_failed."""

TARGETS = (UserStatus.ACTIVE, UserStatus.SUSPENDED, UserStatus.PENDING_VERIFICATION)
"""Targets other than closed; pending_verification is never a legal target."""


def kafka_config(bootstrap_servers: str) -> KafkaConfig:
    """Short bounds, so an immediate publish to a stopped broker fails in under 2 s."""
    return KafkaConfig(
        bootstrap_servers=bootstrap_servers,
        client_id="campaign-updater",
        request_timeout_ms=800,
        delivery_timeout_ms=1_000,
        max_block_ms=800,
    )


def pick(rng: random.Random, users: int, close_weight: float) -> UpdateUserStatusPayload:
    """A random update: mostly active/suspended flips, some illegal, some closing, a missing
    user now and then. Only the last quarter of the users is ever closed (a closed user
    takes no change), so most keep changing for the whole campaign."""
    user_id = MISSING_USER if rng.random() < 0.03 else rng.randint(1, users)
    if rng.random() < close_weight:
        return UpdateUserStatusPayload(rng.randint(users - users // 4, users), UserStatus.CLOSED)
    status = rng.choices(TARGETS, weights=(45, 45, 10))[0]
    return UpdateUserStatusPayload(user_id, status)


def main(argv: Sequence[str] | None = None) -> int:
    """Perform random updates until SIGTERM or `--max-seconds`; exit 0."""
    parser = argparse.ArgumentParser(prog="python -m tests.campaign.updater")
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--close-weight", type=float, default=0.01)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--max-seconds", type=float, default=3_600.0)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    rng = random.Random(args.seed)
    app = FlowApp.connect(
        args.db_url, kafka_config(args.bootstrap_servers), retry=RetryPolicy(attempts=1)
    )
    deadline = time.monotonic() + args.max_seconds
    try:
        with open(args.journal, "a", encoding="utf-8") as journal:
            orchestrator = app.orchestrator()
            while not stop.is_set() and time.monotonic() < deadline:
                payload = pick(rng, args.users, args.close_weight)
                _write(journal, {"attempt": payload.user_id, "to": payload.new_status.value})
                try:
                    run = orchestrator.perform(payload)
                except Exception as error:  # a dropped connection: record it, go on
                    _write(journal, {"error": f"{type(error).__name__}: {error}"[:300]})
                    orchestrator = app.orchestrator()  # a fresh unit of work
                    stop.wait(0.1)
                    continue
                _write(journal, {"run": run.id, "state": str(run.state.value)})
    finally:
        app.close()
    return 0


def _write(journal: IO[str], record: dict[str, Any]) -> None:
    journal.write(json.dumps(record) + "\n")
    journal.flush()


if __name__ == "__main__":
    raise SystemExit(main())
