"""`fsm relay` and `fsm demo`, registered through the `fsm.commands` entry point."""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fsm.cli import UsageError
from fsm.errors import FSMError
from fsm.faults import describe_error, is_retryable
from fsm.retry import RetryPolicy, retry

if TYPE_CHECKING:
    from userstatus.app import FlowApp


class CommandError(FSMError):
    """The database or the broker could not be reached: printed as one line, exit status 2."""


START_RETRY = RetryPolicy(attempts=4, initial_backoff=0.5, max_backoff=2.0, deadline=5.0)
"""How `fsm relay` tries to open the database when it starts."""


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None)  # SQLAlchemy wraps the driver's error
    if isinstance(original, BaseException):
        error = original
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


def add_kafka_arguments(parser: argparse.ArgumentParser) -> None:
    """The Kafka connection options shared by the commands (security settings included)."""
    kafka = parser.add_argument_group("Kafka")
    kafka.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("FSM_KAFKA_BOOTSTRAP_SERVERS"),
        help="host:port[,host:port] (default: $FSM_KAFKA_BOOTSTRAP_SERVERS)",
    )
    kafka.add_argument(
        "--security-protocol",
        default=os.environ.get("FSM_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (default: PLAINTEXT)",
    )
    kafka.add_argument("--sasl-mechanism", default=os.environ.get("FSM_KAFKA_SASL_MECHANISM"))
    kafka.add_argument("--sasl-username", default=os.environ.get("FSM_KAFKA_SASL_USERNAME"))
    kafka.add_argument(
        "--sasl-password",
        default=os.environ.get("FSM_KAFKA_SASL_PASSWORD"),
        help="prefer $FSM_KAFKA_SASL_PASSWORD: command lines are visible to other users",
    )
    kafka.add_argument("--ssl-cafile", default=os.environ.get("FSM_KAFKA_SSL_CAFILE"))
    kafka.add_argument("--ssl-certfile", default=os.environ.get("FSM_KAFKA_SSL_CERTFILE"))
    kafka.add_argument("--ssl-keyfile", default=os.environ.get("FSM_KAFKA_SSL_KEYFILE"))
    kafka.add_argument(
        "--request-timeout-ms", type=_bounded(int, MAX_MS), default=5_000, help="default: 5000"
    )
    kafka.add_argument(
        "--delivery-timeout-ms",
        type=_bounded(int, MAX_MS),
        default=10_000,
        help="how long one publish attempt may take (default: 10000)",
    )
    kafka.add_argument(
        "--max-block-ms",
        type=_bounded(int, MAX_MS),
        default=5_000,
        help="how long to wait for metadata or a first connection (default: 5000)",
    )


def kafka_config(args: argparse.Namespace) -> Any:
    """The KafkaConfig the options describe; UsageError naming a bad option."""
    from adapters.kafka.config import KafkaConfig, KafkaConfigError

    try:
        return KafkaConfig(
            bootstrap_servers=args.bootstrap_servers,
            security_protocol=args.security_protocol,
            sasl_mechanism=args.sasl_mechanism,
            sasl_plain_username=args.sasl_username,
            sasl_plain_password=args.sasl_password,
            ssl_cafile=args.ssl_cafile,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            request_timeout_ms=args.request_timeout_ms,
            delivery_timeout_ms=args.delivery_timeout_ms,
            max_block_ms=args.max_block_ms,
        )
    except (KafkaConfigError, ValueError, OverflowError) as error:
        raise UsageError(f"Kafka settings: {error}") from error


def relay_settings(args: argparse.Namespace) -> Any:
    """The RelaySettings the options describe; UsageError naming a bad option."""
    from fsm.relay import RelaySettings

    try:
        max_age = timedelta(hours=args.max_age_hours)
    except (ValueError, OverflowError) as error:
        raise UsageError(
            f"relay settings: --max-age-hours {args.max_age_hours!r} is out of range ({error})"
        ) from error
    try:
        return RelaySettings(
            batch_size=args.batch_size,
            lease_seconds=args.lease_seconds,
            max_attempts=args.max_attempts,
            max_age=max_age,
            idle_interval=args.idle_interval,
            report_interval=args.report_interval,
        )
    except (ValueError, OverflowError) as error:
        raise UsageError(f"relay settings: {error}") from error


def _check_db_url(url: str) -> str:
    from adapters.sqlalchemy.cli import EXAMPLE_URLS
    from adapters.sqlalchemy.engine import DatabaseUrlError, parse_url

    try:
        parse_url(url)
    except DatabaseUrlError as error:  # its message shows the URL without the password
        raise UsageError(f"--db-url {error}; {EXAMPLE_URLS}") from error
    return url


MAX_MS = 2**31 - 1
"""Kafka's timeouts are 32-bit milliseconds (about 24.8 days)."""
MAX_BATCH = 10_000
"""The most messages SqlOutbox.claim hands out at once."""
MAX_ATTEMPTS = 2**31 - 1
"""The outbox counts attempts in a 32-bit column."""
MAX_LEASE_SECONDS = 86_400.0
"""A day: a longer lease only hides a dead relay's claims for longer."""
MAX_AGE_HOURS = 87_600.0
"""Ten years."""
MAX_IDLE_SECONDS = 3_600.0
"""An hour between polls of an idle outbox."""
MAX_REPORT_SECONDS = 86_400.0
"""A day between summary lines."""
MAX_OWNER_LENGTH = 200
"""The outbox's lease_owner column."""


def _bounded(kind: type[int] | type[float], most: float) -> Any:
    """An argparse type: a finite `kind` above 0 and at most `most`, else the allowed range."""
    if kind is int:
        allowed = f"give an integer from 1 to {most}"
    else:
        allowed = f"give a number above 0 and at most {most:g}"

    def parse(text: str) -> int | float:
        shown = repr(text) if len(text) <= 30 else repr(text[:30] + "...")
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{shown} is not valid; {allowed}") from None
        if not (math.isfinite(value) and 0 < value <= most):
            raise argparse.ArgumentTypeError(f"{shown} is out of range; {allowed}")
        return value

    return parse


def _owner(text: str) -> str:
    """An argparse type: a lease owner name the outbox can store."""
    if not 0 < len(text) <= MAX_OWNER_LENGTH or "\x00" in text or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"{text[:30]!r} is not a usable name; give 1 to {MAX_OWNER_LENGTH} characters, "
            "printable ones"
        )
    return text


def register_relay(commands: Any) -> None:
    """Add `fsm relay`."""
    relay = commands.add_parser(
        "relay",
        help="publish pending outbox events (long-running; stops cleanly on SIGTERM/SIGINT)",
        description="Claim pending events of the outbox, publish them to Kafka in per-user "
        "order with backoff, and move their runs to published or dead_lettered. Several "
        "relays may run at once.",
    )
    relay.add_argument(
        "--db-url",
        default=None,
        help="SQLAlchemy URL of a database fsm db init made (default: $FSM_DB_URL; one of "
        "them is required)",
    )
    add_kafka_arguments(relay)
    tuning = relay.add_argument_group("relay")
    tuning.add_argument("--batch-size", type=_bounded(int, MAX_BATCH), default=50)
    tuning.add_argument("--lease-seconds", type=_bounded(float, MAX_LEASE_SECONDS), default=60.0)
    tuning.add_argument("--max-attempts", type=_bounded(int, MAX_ATTEMPTS), default=10)
    tuning.add_argument("--max-age-hours", type=_bounded(float, MAX_AGE_HOURS), default=24.0)
    tuning.add_argument("--idle-interval", type=_bounded(float, MAX_IDLE_SECONDS), default=1.0)
    tuning.add_argument(
        "--report-interval",
        type=_bounded(float, MAX_REPORT_SECONDS),
        default=60.0,
        help="seconds between one-line summaries",
    )
    tuning.add_argument(
        "--until-idle",
        action="store_true",
        help="exit once nothing is pending and no run is left behind (for jobs)",
    )
    tuning.add_argument(
        "--owner", type=_owner, default=None, help="the name this relay leases events under"
    )
    tuning.add_argument(
        "--worker",
        action="store_true",
        help="also run a worker for the flow's runs in this process (fsm worker "
        "userstatus.relay:flow_runs): it resumes runs left between steps; both stop on SIGTERM",
    )
    tuning.add_argument(
        "--worker-grace-seconds",
        type=_bounded(float, MAX_LEASE_SECONDS),
        default=60.0,
        help="with --worker: how long a run may wait for its pending step before it is resumed",
    )
    relay.set_defaults(handler=_cmd_relay)


def _cmd_relay(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from userstatus.app import FlowApp

    if not args.bootstrap_servers:
        raise UsageError("give --bootstrap-servers (or set $FSM_KAFKA_BOOTSTRAP_SERVERS)")
    config = kafka_config(args)
    settings = relay_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # kafka-python logs every refused connection; the relay's own line per failed attempt
    # already names the cause.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    # No default: a long-running worker on a database nobody meant would quietly do nothing.
    db_url = args.db_url or os.environ.get("FSM_DB_URL")
    if not db_url:
        raise UsageError("give --db-url (or set $FSM_DB_URL): the database fsm db init made")
    db_url = _check_db_url(db_url)
    try:
        # A dropped connection at start (a database restarting) is tried again for a few
        # seconds, as the relay does once it runs; a database that stays away is the error.
        app = retry(
            lambda _: FlowApp.connect(db_url, config, users=False, relay_settings=settings),
            START_RETRY,
            retry_on=is_retryable,
            on_retry=lambda n, error, wait: logging.warning(
                "relay: opening the database failed (%s); trying again in %.1f s",
                describe_error(error),
                wait,
            ),
        )
    except SQLAlchemyError as error:
        raise CommandError(f"cannot open the database: {first_line(error)}") from error
    try:
        relay = app.relay(owner=args.owner)
        relay.install_signal_handlers()
        logging.info("relay %s: started on %s", relay.owner, config.bootstrap_servers)
        with _beside(app, relay.owner, args.worker_grace_seconds) if args.worker else nullcontext():
            report = relay.run(until_idle=args.until_idle)
        logging.info(
            "relay %s: stopped; published %d, failed %d, dead-lettered %d, pending %d",
            relay.owner,
            report.published,
            report.failed,
            report.dead,
            relay.pending(),
        )
        if report.unsettled_runs:
            logging.error(
                "relay %s: %d run(s) need an operator: %s",
                relay.owner,
                len(report.unsettled_runs),
                ", ".join(report.unsettled_runs),
            )
        # A long-running relay stopped by a signal did its job; dead letters are in its log.
        return 1 if args.until_idle and (report.dead or report.unsettled_runs) else 0
    finally:
        app.close()


@contextmanager
def _beside(app: FlowApp, name: str, grace_seconds: float) -> Iterator[None]:
    """A worker for the flow's runs in a thread of its own while the block runs (the relay,
    in the main thread, takes the signals); stopped and joined when the block ends."""
    from fsm.worker import Worker, WorkerSettings
    from userstatus.relay import flow_runs

    runs = flow_runs(app.unit_of_work(), worker=name, clock=app.clock)
    worker = Worker(
        [runs], settings=WorkerSettings(grace=timedelta(seconds=grace_seconds)), name=name
    )

    def work() -> None:
        try:
            worker.run()
        except Exception as error:  # the database went away for good: the relay goes on
            logging.error("worker %s: stopped by %r", name, error)

    thread = threading.Thread(target=work, name="fsm-worker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        worker.stop()
        thread.join()


def register_demo(commands: Any) -> None:
    """Add `fsm demo`."""
    demo = commands.add_parser(
        "demo",
        help="the reference flow end to end: updates, a broker outage, recovery, the audit",
        description="Create users, update their statuses, take the broker down in the middle, "
        "bring it back, let the relay publish what is pending, then consume UserUpdateTopic "
        "as the audit service would and report what arrived. Embedded by default (a SQLite "
        "file and a local broker).",
    )
    demo.add_argument("--db-url", default=None, help="SQLAlchemy URL (default: a new SQLite file)")
    add_kafka_arguments(demo)
    demo.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    demo.set_defaults(handler=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.kafka.broker import BrokerError
    from userstatus.demo import DemoOptions, demo_ok, format_summary, quiet_library_logs, run_demo

    quiet_library_logs()
    logging.basicConfig(level=logging.CRITICAL)  # the demo's own lines tell the story
    options = DemoOptions(
        db_url=_check_db_url(args.db_url) if args.db_url else None,
        kafka=kafka_config(args) if args.bootstrap_servers else None,
        # With --json, stdout carries only the JSON object; progress goes to stderr.
        progress=(lambda line: print(line, file=sys.stderr, flush=True))
        if args.json
        else (lambda line: print(line, flush=True)),
    )
    try:
        summary = run_demo(options)
    except (SQLAlchemyError, BrokerError) as error:
        raise CommandError(f"the demo cannot run: {first_line(error)}") from error
    if args.json:
        print(json.dumps(summary, sort_keys=True))
    else:
        print(format_summary(summary))
    return 0 if demo_ok(summary) else 1
