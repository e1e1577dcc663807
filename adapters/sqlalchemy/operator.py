"""`fsm runs` and `fsm outbox` for operators (registered via the `fsm.commands` entry point):
list and show stored runs, send a run an event or cancel it through its machine's table,
list the outbox and re-drive dead-lettered events. A table for people, --json for scripts."""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from adapters.sqlalchemy.cli import DatabaseError, first_line, open_engine
from adapters.sqlalchemy.ops import db_url
from fsm.cli import UsageError, resolve_event
from fsm.defaults import utc_now
from fsm.errors import show
from fsm.labels import state_label, trigger_label

if TYPE_CHECKING:
    from sqlalchemy import Select

    from adapters.sqlalchemy.outbox import OutboxEntry
    from adapters.sqlalchemy.uow import SqlUnitOfWork
    from fsm.persistence import PersistentMachine, PersistentRun
    from fsm.ports import HistoryRecord, RunRecord

MAX_LIMIT = 10_000
"""The most rows one listing returns (what the stores accept)."""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d{1,6})([smhd])")
SHOWN_ERROR = 60
"""Characters of an outbox error a table shows (--json has all of it)."""


def duration(text: str) -> timedelta:
    """An argparse type: `30s`, `30m`, `2h`, `7d` as a timedelta."""
    found = _DURATION.fullmatch(text.strip())
    if found is None or int(found[1]) == 0:
        raise argparse.ArgumentTypeError(
            f"{text[:30]!r} is not a duration; give a positive whole number and a unit, "
            "s, m, h or d (e.g. 30m, 2h, 7d)"
        )
    return timedelta(seconds=int(found[1]) * UNITS[found[2]])


def limit(text: str) -> int:
    """An argparse type: how many rows, 1 to MAX_LIMIT."""
    if not text.isdigit() or not 0 < int(text) <= MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"{text[:30]!r} is not a usable limit; give a whole number from 1 to {MAX_LIMIT}"
        )
    return int(text)


def _common(parser: argparse.ArgumentParser, *, machine: str | None = None) -> None:
    parser.add_argument("--db-url", default=None, help="default: $FSM_DB_URL (one is required)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    if machine is not None:
        parser.add_argument("--machine", metavar="MODULE:ATTR", required=True, help=machine)


DEFINITION = (
    "the run's machine: a Machine, or a function (uow, *, worker, lease) -> "
    "PersistentMachine as for fsm worker (e.g. userstatus.relay:flow_runs)"
)


def register_runs(commands: Any) -> None:
    """Add `fsm runs list|show|send|cancel`."""
    runs = commands.add_parser("runs", help="list, show, send events to and cancel stored runs")
    actions = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")
    listing = actions.add_parser(
        "list",
        help="stored runs, least recently changed first",
        description="Stored runs, least recently changed first, filtered as asked.",
    )
    _common(listing)
    listing.add_argument(
        "--machine",
        metavar="NAME|MODULE:ATTR",
        help="only this machine's runs; MODULE:ATTR gives its definition (--stuck needs it)",
    )
    listing.add_argument("--state", help="only runs in this state (its stored name)")
    listing.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help="only runs unchanged for longer than this (30m, 2h, 7d)",
    )
    listing.add_argument(
        "--stuck",
        action="store_true",
        help="only what a worker would act on now: runs in a state with a pending action "
        "unchanged for longer than --grace and held by no live claim, and runs whose "
        "timeout is due (needs --machine MODULE:ATTR)",
    )
    listing.add_argument(
        "--grace",
        type=duration,
        default=timedelta(seconds=60),
        metavar="DURATION",
        help="with --stuck: how long a step may take (default 60s, the worker's)",
    )
    listing.add_argument("--limit", type=limit, default=100, help="at most this many (100)")
    listing.set_defaults(handler=_cmd_list)

    shown = actions.add_parser("show", help="one run: its context, history and path")
    _common(shown)
    shown.add_argument("id", help="the run's id")
    shown.add_argument(
        "--machine", metavar="MODULE:ATTR", help="named in the diagram command line shown"
    )
    shown.set_defaults(handler=_cmd_show)

    send = actions.add_parser(
        "send", help="send a run an event through its machine's table (one step)"
    )
    _common(send, machine=DEFINITION)
    send.add_argument("id", help="the run's id")
    send.add_argument("event", help="the event (a trigger of a row from the run's state)")
    send.set_defaults(handler=_cmd_send)

    cancel = actions.add_parser(
        "cancel", help="send a run its machine's cancel trigger (Machine(..., cancel=...))"
    )
    _common(cancel, machine=DEFINITION)
    cancel.add_argument("id", help="the run's id")
    cancel.set_defaults(handler=_cmd_cancel)


def register_outbox(commands: Any) -> None:
    """Add `fsm outbox list|redrive`."""
    outbox = commands.add_parser("outbox", help="list outbox events, re-drive dead letters")
    actions = outbox.add_subparsers(dest="outbox_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="outbox events, oldest first")
    _common(listing)
    listing.add_argument("--dead", action="store_true", help="only dead-lettered events")
    listing.add_argument("--limit", type=limit, default=100, help="at most this many (100)")
    listing.set_defaults(handler=_cmd_outbox_list)

    redrive = actions.add_parser(
        "redrive",
        help="send dead-lettered events back to pending, their runs back to the relay",
        description="Each event goes back to pending with its attempts counted from 0, and "
        "its run takes its machine's Redriven row (recorded in its history) in the same "
        "transaction; the relay then publishes it. Everything is checked before anything is "
        "written.",
    )
    _common(redrive)
    redrive.add_argument("event_id", nargs="?", help="the dead event's id")
    redrive.add_argument("--all-dead", action="store_true", help="every dead-lettered event")
    redrive.add_argument("--machine", metavar="MODULE:ATTR", help=DEFINITION)
    redrive.set_defaults(handler=_cmd_redrive)


# -- reading -------------------------------------------------------------------------------


@contextmanager
def _database(args: argparse.Namespace) -> Iterator[tuple[SqlUnitOfWork, str]]:
    """A unit of work on --db-url's database (made by fsm db init), and the URL to show;
    a database error is one line."""
    engine, shown = open_engine(db_url(args))
    from sqlalchemy.exc import SQLAlchemyError

    from adapters.sqlalchemy.schema import require_tables
    from adapters.sqlalchemy.uow import SqlUnitOfWork

    try:
        require_tables(engine)
        yield SqlUnitOfWork(engine), shown
    except SQLAlchemyError as error:
        raise DatabaseError(f"cannot use {shown}: {first_line(error)}") from error
    finally:
        engine.dispose()


def _cmd_list(args: argparse.Namespace) -> int:
    from sqlalchemy import func, select

    if args.stuck and (args.machine is None or ":" not in args.machine):
        raise UsageError("--stuck needs the definition: give --machine MODULE:ATTR")
    now = utc_now()
    with _database(args) as (uow, _):
        query = _filtered(args, uow, now)
        with uow:
            records = list(uow.session.execute(query))
            total = uow.session.scalar(select(func.count()).select_from(uow.tables.runs))
    found = [
        _record_json(row) | {"idle_seconds": int((now - row.updated_at).total_seconds())}
        for row in records
    ]
    if args.json:
        return _print_json({"runs": found})
    if not found:
        print(f"no runs match ({total} stored)")
        return 0
    _print_table(
        ["ID", "MACHINE", "STATE", "IDLE", "UPDATED", "NOTE"],
        [
            [
                row.id,
                row.machine,
                row.state,
                _age(row.updated_at, now),
                _at(row.updated_at),
                _note(row, now),
            ]
            for row in records
        ],
    )
    return 0


def _filtered(args: argparse.Namespace, uow: SqlUnitOfWork, now: datetime) -> Select[Any]:
    """The runs `fsm runs list` asks for, least recently changed first; UsageError naming
    the known ones for a machine or state that is not."""
    from sqlalchemy import select

    runs = uow.tables.runs
    query = select(runs).order_by(runs.c.updated_at, runs.c.id).limit(args.limit)
    stored: PersistentMachine[Any] | None = None
    if args.machine is not None:
        if ":" in args.machine:
            stored = _runs(args.machine, uow)
        else:
            with uow:
                names = uow.session.scalars(select(runs.c.machine).distinct())
                _known("machine", args.machine, names)
        name = stored.machine.name if stored is not None else args.machine
        query = query.where(runs.c.machine == name)
    if args.state is not None:
        asked: Sequence[str] = [args.state]
        if stored is not None:
            by_label = {state_label(s.name): s.name for s in stored.machine.states}
            _known("state", args.state, by_label)
            asked = stored.labels([by_label[args.state]])  # with its former labels
        else:
            states = select(runs.c.state).distinct()
            if args.machine is not None:
                states = states.where(runs.c.machine == args.machine)
            with uow:
                _known("state", args.state, uow.session.scalars(states))
        query = query.where(runs.c.state.in_(asked))
    if args.older_than is not None:
        query = query.where(runs.c.updated_at < now - args.older_than)
    if stored is not None and args.stuck:
        query = query.where(runs.c.id.in_(_stuck(stored, args.grace, now, args.limit)))
    return query


def _stuck(stored: PersistentMachine[Any], grace: timedelta, now: datetime, limit: int) -> set[str]:
    """What a worker would act on now (the worker's own lookups): runs left in a state with
    a pending action past `grace`, held by no live claim, and runs whose timeout is due."""
    name = stored.machine.name
    with stored.uow as uow:
        left = uow.runs.find(
            name,
            states=stored.resumable_states,
            finished=False,
            updated_before=now - grace,
            claimable_at=now,
            limit=limit,
        )
        return {*left, *uow.runs.find_due(name, now, limit)}


def _known(what: str, value: str, known: Any) -> None:
    """UsageError naming the known values unless `value` is one of them."""
    values = sorted(set(known))
    if value not in values:
        listed = ", ".join(values) or "none"
        raise UsageError(f"--{what} {value!r}: no such {what}; known: {listed}")


def _note(row: Any, now: datetime) -> str:
    if row.finished:
        return "finished"
    if row.claimed_by is not None and row.claimed_until is not None:
        if row.claimed_until > now:
            return f"claimed by {row.claimed_by} until {_time(row.claimed_until)}"
        return f"claim of {row.claimed_by} ran out"
    if row.due_at is not None:
        return f"timeout {'overdue' if row.due_at <= now else 'due'} {_time(row.due_at)}"
    return ""


def _cmd_show(args: argparse.Namespace) -> int:
    with _database(args) as (uow, shown), uow:
        record = uow.runs.load(args.id)
        history = uow.runs.history(args.id)
    spec = args.machine or _shipped_spec(record.machine)
    draw = f"fsm diagram {spec} --run {record.id} --db-url {shown} -o {record.id}.svg"
    path = [history[0].source, *(h.target for h in history)] if history else [record.state]
    if args.json:
        return _print_json(
            {
                "run": _record_json(record),
                "context": record.context,
                "history": [_step_json(h) for h in history],
                "path": path,
                "diagram": draw,
            }
        )
    claim = "no"
    if record.claimed_by is not None:
        claim = f"by {record.claimed_by} until {_time(record.claimed_until)}"
    _print_table(
        [],
        [
            ["run", f"{record.id} of machine {record.machine!r}"],
            ["state", f"{record.state}{' (finished)' if record.finished else ''}"],
            ["version", str(record.version)],
            ["created", _at(record.created_at)],
            ["updated", _at(record.updated_at)],
            ["claimed", claim],
            ["timeout due", _time(record.due_at) or "no"],
        ],
    )
    print("context:")
    for line in json.dumps(record.context, indent=2, sort_keys=True).splitlines():
        print(f"  {line}")
    print("history:")
    _print_table(
        ["SEQ", "AT", "SOURCE", "TRIGGER", "TARGET", "OUTCOME"],
        [
            [str(h.seq), _at(h.at), h.source, h.trigger, h.target, _short(h.outcome)]
            for h in history
        ],
        indent="  ",
    )
    print(f"path: {' -> '.join(path)}")
    print(f"draw: {draw}")
    return 0


def _shipped_spec(name: str) -> str:
    """The MODULE:ATTR of the shipped machine called `name` ([tool.fsm] diagrams), else a
    placeholder for it."""
    from fsm.cli import load_machine
    from fsm.diagram.shipped import load_config
    from fsm.errors import FSMError

    try:
        return next(s for s in load_config().specs if load_machine(s).name == name)
    except (FSMError, StopIteration):  # not shipped here, or not loadable: the reader knows
        return "MODULE:ATTR"


def _record_json(record: RunRecord | Any) -> dict[str, Any]:
    """A run as stored (a RunRecord, or a row of the runs table: the same names)."""
    return {
        "id": record.id,
        "machine": record.machine,
        "state": record.state,
        "finished": record.finished,
        "version": record.version,
        "created_at": _time(record.created_at),
        "updated_at": _time(record.updated_at),
        "claimed_by": record.claimed_by,
        "claimed_until": _time(record.claimed_until),
        "attempt": record.attempt,
        "due_at": _time(record.due_at),
    }


def _step_json(step: HistoryRecord) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "at": _time(step.at),
        "source": step.source,
        "trigger": step.trigger,
        "target": step.target,
        "outcome": step.outcome,
    }


# -- moving runs ---------------------------------------------------------------------------


def _runs(spec: str, uow: SqlUnitOfWork) -> PersistentMachine[Any]:
    """The runs of the machine `spec` names (as fsm worker takes it), moved by an operator."""
    from fsm.persistence import default_worker
    from fsm.worker import runs_of

    return runs_of(spec, uow, worker=f"operator-{default_worker()}", lease=timedelta(seconds=30))


def _operated(runs: PersistentMachine[Any], run_id: str) -> PersistentRun[Any]:
    """The stored run `run_id` of `runs`' machine, held by no live claim: refused (one
    line, nothing written) if it is another machine's or a worker holds it."""
    from fsm.ports import ConcurrencyError, RunClaimed

    with runs.uow as uow:
        record = uow.runs.load(run_id)
    if record.machine != runs.machine.name:
        raise UsageError(
            f"run {run_id} belongs to machine {record.machine!r}, not {runs.machine.name!r}; "
            "give that machine's definition as --machine"
        )
    until = record.claimed_until
    if record.claimed_by is not None and until is not None and until > utc_now():
        raise RunClaimed(run_id, record.claimed_by, until, record.attempt)
    run = runs.load(run_id)
    if run.version != record.version:  # it moved between the two reads: look again
        raise ConcurrencyError("run", run_id, expected=record.version, found=run.version)
    return run


def _cmd_send(args: argparse.Namespace) -> int:
    def event(runs: PersistentMachine[Any], run: PersistentRun[Any]) -> object:
        trigger = resolve_event(run.run, args.event)
        if isinstance(trigger, type):
            # An outcome says what an action or the relay found; an operator's is made up.
            sendable = [show(t) for t in run.run.allowed if not isinstance(t, type)]
            raise UsageError(
                f"{trigger.__name__} is an outcome: actions and the relay report those, "
                f"operators do not; events to send from {state_label(run.state)!r}: "
                f"{', '.join(sendable) or 'none'}"
            )
        return trigger

    return _move(args, event)


def _cmd_cancel(args: argparse.Namespace) -> int:
    def cancel(runs: PersistentMachine[Any], run: PersistentRun[Any]) -> object:
        trigger = runs.machine.cancel
        if trigger is None:
            raise UsageError(
                f"machine {runs.machine.name!r} declares no cancel trigger (Machine(..., "
                "cancel=TRIGGER)); nothing was sent"
            )
        return trigger

    return _move(args, cancel)


def _move(
    args: argparse.Namespace,
    event_of: Callable[[PersistentMachine[Any], PersistentRun[Any]], object],
) -> int:
    """Send the run the event `event_of` picks, one step under its version; print the
    transitions it took."""
    with _database(args) as (uow, _):
        runs = _runs(args.machine, uow)
        run = _operated(runs, args.id)
        event = event_of(runs, run)
        before = len(run.run.history)
        run.send(event)
        steps = [
            {
                "source": state_label(t.source),
                "trigger": trigger_label(t.trigger),
                "target": state_label(t.target),
            }
            for t in run.run.history[before:]
        ]
    if args.json:
        return _print_json(
            {
                "run": run.id,
                "state": state_label(run.state),
                "finished": run.finished,
                "steps": steps,
            }
        )
    for step in steps:
        print(f"run {run.id}: {step['source']} --{step['trigger']}--> {step['target']}")
    print(f"run {run.id}: now in {state_label(run.state)}{' (finished)' if run.finished else ''}")
    return 0


# -- the outbox ----------------------------------------------------------------------------


def _cmd_outbox_list(args: argparse.Namespace) -> int:
    with _database(args) as (uow, _), uow:
        entries = uow.outbox.entries(status="dead" if args.dead else None, limit=args.limit)
        counts = uow.outbox.counts()
    if args.json:
        return _print_json({"events": [_entry_json(e) for e in entries], "counts": counts})
    if not entries:
        print(f"no {'dead-lettered ' if args.dead else ''}events ({_counts(counts)})")
        return 0
    _print_table(
        ["EVENT", "STATUS", "ATTEMPTS", "RUN", "KEY", "TOPIC", "CREATED", "LAST ERROR"],
        [
            [
                e.message.event_id,
                e.status,
                str(e.message.attempts),
                e.message.run_id or "",
                e.message.key,
                e.message.topic,
                _at(e.message.created_at),
                _short(e.last_error or ""),
            ]
            for e in entries
        ],
    )
    print(_counts(counts))
    return 0


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {status}" for status, n in counts.items())


def _entry_json(entry: OutboxEntry) -> dict[str, Any]:
    message = entry.message
    return {
        "event_id": message.event_id,
        "status": entry.status,
        "attempts": message.attempts,
        "run_id": message.run_id,
        "key": message.key,
        "topic": message.topic,
        "bytes": len(message.value),
        "created_at": _time(message.created_at),
        "next_attempt_at": _time(entry.next_attempt_at),
        "last_error": entry.last_error,
        "published_at": _time(entry.published_at),
        "dead_at": _time(entry.dead_at),
    }


def _cmd_redrive(args: argparse.Namespace) -> int:
    from fsm.outbox import Redriven, redrivable

    if (args.event_id is None) == (not args.all_dead):
        raise UsageError("give one dead event's id, or --all-dead")
    with _database(args) as (uow, _):
        with uow:
            if args.all_dead:
                entries = uow.outbox.entries(status="dead", limit=MAX_LIMIT)
            else:
                entry = uow.outbox.get(args.event_id)
                if entry is None:
                    raise UsageError(f"no outbox event has id {args.event_id!r}")
                if entry.status != "dead":
                    raise UsageError(
                        f"event {args.event_id} is {entry.status}; only dead-lettered events "
                        "are re-driven"
                    )
                entries = [entry]
        runs = _runs(args.machine, uow) if args.machine is not None else None
        # Check every event's run first: nothing is written unless all of them can move.
        plan: list[tuple[str, PersistentRun[Any] | None]] = []
        for entry in entries:
            run_id = entry.message.run_id
            if run_id is None:
                plan.append((entry.message.event_id, None))
                continue
            if runs is None:
                raise UsageError(
                    f"event {entry.message.event_id} waits for run {run_id}: give its "
                    "machine's definition as --machine MODULE:ATTR"
                )
            run = _operated(runs, run_id)
            if not redrivable(runs.machine):
                raise UsageError(
                    f"machine {runs.machine.name!r} has no Redriven row; add one from the "
                    "state its DeadLettered row leads to (fsm.outbox.Redriven)"
                )
            if Redriven not in run.run.allowed:
                raise UsageError(
                    f"run {run_id} of event {entry.message.event_id} is in "
                    f"{show(run.state)}, which has no Redriven row (those that have: "
                    f"{', '.join(show(s) for s in redrivable(runs.machine))})"
                )
            plan.append((entry.message.event_id, run))
        done = [_redrive(uow, event_id, run) for event_id, run in plan]
    if args.json:
        return _print_json({"redriven": done})
    if not done:
        print("no dead-lettered events")
    for item in done:
        moved = f"; run {item['run']}: {item['source']} -> {item['target']}" if item["run"] else ""
        print(f"event {item['event_id']}: dead -> pending{moved}")
    return 0


def _redrive(uow: SqlUnitOfWork, event_id: str, run: PersistentRun[Any] | None) -> dict[str, Any]:
    """The event back to pending and its run through the Redriven row, in one transaction."""
    from fsm.outbox import Redriven

    def back(_: object) -> None:
        uow.outbox.redrive(event_id, now=utc_now())

    if run is None:
        with uow:
            back(uow)
        return {"event_id": event_id, "run": None, "source": None, "target": None}
    source = state_label(run.state)
    run.send(Redriven(event_id), effect=back)
    return {"event_id": event_id, "run": run.id, "source": source, "target": state_label(run.state)}


# -- output --------------------------------------------------------------------------------


def _print_json(document: dict[str, Any]) -> int:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))
    return 0


def _print_table(headers: list[str], rows: list[list[str]], *, indent: str = "") -> None:
    """Columns aligned to their widest cell; the last column is not padded."""
    lines = [headers, *rows] if headers else rows
    if not lines:
        return
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    for line in lines:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=False)]
        print(indent + "  ".join([*cells, line[-1]]).rstrip())


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _at(value: datetime | None) -> str:
    return _time(value) or ""


def _age(since: datetime, now: datetime) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`: the two largest units."""
    seconds = max(0, int((now - since).total_seconds()))
    parts: list[str] = []
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size or (unit == "s" and not parts):
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return " ".join(parts[:2])


def _short(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= SHOWN_ERROR else text[: SHOWN_ERROR - 1] + "…"
