"""`fsm worker` on a database (registered via the `fsm.commands` entry point): fires due
timeouts and resumes runs left between steps, for the machines named as MODULE:ATTR."""

from __future__ import annotations

import argparse
import logging
import os
from datetime import timedelta
from typing import Any

from adapters.sqlalchemy.cli import DatabaseError, first_line, open_engine
from fsm.cli import UsageError

MAX_SECONDS = 86_400.0
"""A day: the most any of the worker's intervals may be."""


def _positive(kind: type[int] | type[float]) -> Any:
    """An argparse type: a finite `kind` above 0 and at most MAX_SECONDS."""

    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:30]!r} is not a number") from None
        if not 0 < value <= MAX_SECONDS:
            raise argparse.ArgumentTypeError(
                f"{text[:30]!r} is out of range; give a number above 0 and at most {MAX_SECONDS:g}"
            )
        return value

    return parse


def db_url(args: argparse.Namespace) -> str:
    """--db-url, else $FSM_DB_URL; no default: a long-running worker or an operator's
    command on a database nobody meant would quietly do nothing."""
    url: str | None = args.db_url or os.environ.get("FSM_DB_URL")
    if not url:
        raise UsageError("give --db-url (or set $FSM_DB_URL): the database fsm db init made")
    return url


def register_worker(commands: Any) -> None:
    """Add `fsm worker`."""
    worker = commands.add_parser(
        "worker",
        help="fire due timeouts and resume runs left between steps (long-running; stops "
        "cleanly on SIGTERM/SIGINT)",
        description="For each machine, claim the runs whose timeout is due and send them its "
        "trigger, and claim the runs left in a state with a pending action for longer than "
        "the grace and take that step. Several workers may run at once.",
    )
    worker.add_argument(
        "machines",
        nargs="+",
        metavar="MODULE:ATTR",
        help="a Machine, or a function (uow, *, worker, lease) -> PersistentMachine for a "
        "machine whose actions need collaborators or whose context holds its own types",
    )
    worker.add_argument("--db-url", default=None, help="default: $FSM_DB_URL (one is required)")
    worker.add_argument("--batch-size", type=_positive(int), default=50)
    worker.add_argument(
        "--grace-seconds",
        type=_positive(float),
        default=60.0,
        help="how long a run may wait in a state with a pending action before it is resumed",
    )
    worker.add_argument(
        "--lease-seconds",
        type=_positive(float),
        default=30.0,
        help="how long a claim lasts: a worker that dies holding one leaves it that long",
    )
    worker.add_argument("--idle-interval", type=_positive(float), default=1.0)
    worker.add_argument(
        "--report-interval", type=_positive(float), default=60.0, help="seconds between summaries"
    )
    worker.add_argument("--name", default=None, help="the name this worker claims runs under")
    worker.add_argument(
        "--until-idle", action="store_true", help="exit once a round finds nothing (for jobs)"
    )
    worker.set_defaults(handler=_cmd_worker)


def _cmd_worker(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sqlalchemy.schema import require_tables
    from adapters.sqlalchemy.uow import SqlUnitOfWork
    from fsm.persistence import default_worker
    from fsm.worker import Worker, WorkerSettings, runs_of

    engine, shown = open_engine(db_url(args))
    try:
        require_tables(engine)
        name = args.name or default_worker()
        lease = timedelta(seconds=args.lease_seconds)
        runs = [
            runs_of(spec, SqlUnitOfWork(engine), worker=name, lease=lease) for spec in args.machines
        ]
        settings = WorkerSettings(
            batch_size=args.batch_size,
            grace=timedelta(seconds=args.grace_seconds),
            idle_interval=args.idle_interval,
            report_interval=args.report_interval,
        )
        worker = Worker(runs, settings=settings, name=name)
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        worker.install_signal_handlers()
        machines = ", ".join(pm.machine.name for pm in runs)
        logging.info("worker %s: started on %s for %s", name, shown, machines)
        worker.run(until_idle=args.until_idle)
        return 0
    except SQLAlchemyError as error:
        raise DatabaseError(f"the worker cannot use {shown}: {first_line(error)}") from error
    finally:
        engine.dispose()
