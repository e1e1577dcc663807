"""`fsm db init`: create the tables on a database named by URL (registered via fsm.commands)."""

from __future__ import annotations

import argparse
from typing import Any

from fsm.cli import UsageError
from fsm.errors import FSMError

CONNECT_TIMEOUT = 10
"""Seconds before an unreachable PostgreSQL server is reported."""


class DatabaseError(FSMError):
    """The database could not be reached or refused the command."""


def register(commands: Any) -> None:
    """Add `fsm db ...` to the `fsm` command's subparsers."""
    db = commands.add_parser("db", help="manage the database of runs, users and the outbox")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the tables (runs, history, users, outbox)")
    init.add_argument(
        "--db-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default: $FSM_DB_URL, else sqlite:///fsm.sqlite3)",
    )
    init.set_defaults(handler=_cmd_init)


def _cmd_init(args: argparse.Namespace) -> int:
    # Imported here: registering `fsm db` must work without SQLAlchemy installed.
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
    except ImportError as error:
        raise UsageError(
            "fsm db needs SQLAlchemy: pip install 'fsm-orchestrator[sqlalchemy]'"
        ) from error
    from adapters.sqlalchemy.engine import create_engine, default_db_url
    from adapters.sqlalchemy.schema import init_db

    url = args.db_url or default_db_url()
    try:
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        engine = create_engine(url, **options)
    except ImportError as error:
        raise UsageError(
            f"--db-url {url!r} needs a database driver that is not installed ({error}); "
            "install it, or use sqlite:/// or postgresql+psycopg://"
        ) from error
    except (ArgumentError, NoSuchModuleError, ValueError) as error:
        raise UsageError(
            f"--db-url {url!r} is not a usable SQLAlchemy URL ({_first_line(error)}); "
            "for example sqlite:///fsm.sqlite3 or postgresql+psycopg://user@host:5432/db"
        ) from error
    try:
        created = init_db(engine)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot initialise {shown}: {_first_line(error)}") from error
    finally:
        engine.dispose()
    if created:
        print(f"{shown}: created tables {', '.join(created)}")
    else:
        print(f"{shown}: all tables exist already, nothing to do")
    return 0


def _first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None)
    if isinstance(original, BaseException):
        error = original
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
