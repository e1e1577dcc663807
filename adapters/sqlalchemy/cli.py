"""`fsm db init`, and the stored-run hooks of `fsm diagram --run` and `fsm check --db-url`
(registered via entry points)."""

from __future__ import annotations

import argparse
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from fsm.cli import UsageError
from fsm.errors import FSMError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from fsm import Machine, Run
    from fsm.persistence import StoredRuns

CONNECT_TIMEOUT = 10
"""Seconds before an unreachable PostgreSQL server is reported."""
EXAMPLE_URLS = "for example sqlite:///fsm.sqlite3 or postgresql+psycopg://user@host:5432/db"


class DatabaseError(FSMError):
    """The database could not be reached or refused the command."""


def register(commands: Any) -> None:
    """Add `fsm db ...` to the `fsm` command's subparsers."""
    db = commands.add_parser("db", help="manage the database of runs and the outbox")
    actions = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    init = actions.add_parser("init", help="create the tables (runs, run_history, outbox)")
    init.add_argument(
        "--with",
        dest="extra",
        action="append",
        default=[],
        metavar="NAME",
        help="also create the tables of NAME (one of: "
        f"{', '.join(sorted(_table_sets())) or 'none installed'}), e.g. userstatus for the "
        "reference flow's users",
    )
    init.add_argument(
        "--db-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db "
        "(default: $FSM_DB_URL, else sqlite:///fsm.sqlite3)",
    )
    init.set_defaults(handler=_cmd_init)


def _cmd_init(args: argparse.Namespace) -> int:
    engine, shown = open_engine(args.db_url)  # first: it says what to install if SQLAlchemy is not
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sqlalchemy.schema import all_tables, init_db
    from adapters.sqlalchemy.tables import TABLES

    known = _table_sets()
    unknown = [name for name in args.extra if name not in known]
    if unknown:
        engine.dispose()
        allowed = ", ".join(sorted(known)) or "none installed"
        raise UsageError(f"--with {unknown[0]!r}: no such set of tables; known: {allowed}")
    extra = {name: known[name]() for name in args.extra}
    try:
        created = init_db(engine, extra=extra)
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot initialise {shown}: {first_line(error)}") from error
    finally:
        engine.dispose()
    names = {table.fullname for table in all_tables(TABLES, extra)}
    tables = [name for name in created if name in names]
    columns = [name for name in created if name not in names]
    done = [f"created tables {', '.join(tables)}"] if tables else []
    done += [f"added columns {', '.join(columns)}"] if columns else []
    print(f"{shown}: {'; '.join(done) or 'all tables exist already, nothing to do'}")
    return 0


def load_run(db_url: str | None, machine: Machine[Any], run_id: str) -> Run[Any]:
    """A stored run of `machine`, for `fsm diagram --run ID --db-url URL` (fsm.run_loaders)."""
    engine, shown = open_engine(db_url)  # first: it says what to install if SQLAlchemy is not
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sqlalchemy.uow import SqlUnitOfWork
    from fsm.persistence import PersistentMachine

    try:
        return PersistentMachine(machine, SqlUnitOfWork(engine)).load(run_id).run
    except SQLAlchemyError as error:
        raise DatabaseError(
            f"cannot read run {run_id} from {shown}: {first_line(error)}"
        ) from error
    finally:
        engine.dispose()


def _table_sets() -> dict[str, Any]:
    """Flows' own tables by name (entry points `fsm.tables`): name -> load() of a MetaData."""
    return {entry.name: entry.load for entry in entry_points(group="fsm.tables")}


def survey_runs(db_url: str, machine: Machine[Any]) -> StoredRuns:
    """The stored runs of `machine` read with its definition, for `fsm check --db-url URL`
    (fsm.run_surveys); SchemaMissing if the tables are not there."""
    engine, shown = open_engine(db_url)  # first: it says what to install if SQLAlchemy is not
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sqlalchemy.schema import require_tables
    from adapters.sqlalchemy.tables import TABLES
    from adapters.sqlalchemy.uow import SqlUnitOfWork
    from fsm.persistence import PersistentMachine

    try:
        require_tables(engine)
        runs_table = TABLES.runs
        query = (
            select(runs_table.c.id, runs_table.c.state)
            .where(runs_table.c.machine == machine.name)
            .order_by(runs_table.c.id)
        )
        with engine.connect() as connection:  # read them all first: SQLite has one writer
            runs = [(run_id, state) for run_id, state in connection.execute(query)]
        return PersistentMachine(machine, SqlUnitOfWork(engine)).survey(runs)
    except SQLAlchemyError as error:
        raise DatabaseError(
            f"cannot read the runs of {machine.name!r} from {shown}: {first_line(error)}"
        ) from error
    finally:
        engine.dispose()


def open_engine(db_url: str | None) -> tuple[Engine, str]:
    """An engine for `db_url` (default: $FSM_DB_URL, else SQLite) and the URL to show."""
    # Imported here: registering `fsm db` must work without SQLAlchemy installed.
    try:
        from sqlalchemy.exc import ArgumentError
    except ImportError as error:
        raise UsageError(
            "this command needs SQLAlchemy: pip install 'fsm-orchestrator[sqlalchemy]'"
        ) from error
    from adapters.sqlalchemy.engine import (
        DatabaseUrlError,
        create_engine,
        default_db_url,
        parse_url,
        shown_url,
    )

    url = db_url or default_db_url()
    shown = shown_url(url)  # the URL itself never goes into a message: it may hold a password
    try:
        parsed = parse_url(url)
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "postgresql":
            options["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        engine = create_engine(url, **options)
    except DatabaseUrlError as error:
        raise UsageError(f"--db-url {error}; {EXAMPLE_URLS}") from error
    except (ArgumentError, ValueError) as error:
        raise UsageError(
            f"--db-url {shown!r} is not a usable SQLAlchemy URL ({first_line(error)}); "
            f"{EXAMPLE_URLS}"
        ) from error
    return engine, shown


def first_line(error: BaseException) -> str:
    original = getattr(error, "orig", None)
    if isinstance(original, BaseException):
        error = original
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__
