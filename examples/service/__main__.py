"""`python -m examples.service`: serve the example on uvicorn (flags, or the environment)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from fsm.cli import UsageError
from fsm.relay import RelaySettings
from userstatus.cli import add_kafka_arguments, first_line, kafka_config


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.service",
        description="The reference flow behind an ASGI service (docs/service.md).",
    )
    parser.add_argument(
        "--db-url",
        default=os.environ.get("FSM_DB_URL"),
        help="SQLAlchemy URL; its tables are created on start (default: $FSM_DB_URL)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed-users", type=int, default=0, help="add users 1..N, active")
    parser.add_argument(
        "--relay",
        action="store_true",
        help="also run the outbox relay as a task of the service (fsm relay's rules, async)",
    )
    add_kafka_arguments(parser)
    args = parser.parse_args(argv)
    try:
        if not args.db_url:
            raise UsageError("no database: give --db-url or set FSM_DB_URL")
        if not args.bootstrap_servers:
            raise UsageError(
                "no brokers: give --bootstrap-servers or set FSM_KAFKA_BOOTSTRAP_SERVERS"
            )
        if args.seed_users < 0:
            raise UsageError(f"--seed-users must be 0 or more, got {args.seed_users}")
        kafka = kafka_config(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    import uvicorn

    from examples.service.app import create_app, prepare_database

    try:  # before serving: a database that cannot be reached is one line, not a traceback
        prepare_database(args.db_url, args.seed_users)
    except Exception as error:
        print(f"error: database {args.db_url.split('@')[-1]}: {first_line(error)}", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    relay = RelaySettings() if args.relay else None  # AsyncFlowApp.relay adds Kafka's bound
    app = create_app(args.db_url, kafka, seed_users=args.seed_users, relay=relay)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
