"""The `fsm` command line: check, run (and more) on machines named as MODULE:ATTR."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from enum import Enum
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from fsm.definition import Machine
from fsm.diagram import FORMATS, diagram
from fsm.diagram.shipped import load_config, render_shipped, stale_shipped, write_shipped
from fsm.errors import DefinitionError, FSMError, show
from fsm.runtime import Run

if TYPE_CHECKING:
    from fsm.persistence import StoredRuns


class UsageError(FSMError):
    """A user mistake on the command line: printed as one line, exit status 2.

    Commands registered through the `fsm.commands` entry point raise it (or any FSMError)
    for bad input; `main` prints it as one line, never as a traceback.
    """


def load_machine(spec: str) -> Machine[Any]:
    """The Machine named by `MODULE:ATTR`; DefinitionError if building it fails."""
    value = load_object(spec)
    if not isinstance(value, Machine):
        raise UsageError(f"{spec} is a {type(value).__name__}, not an fsm.Machine")
    return value


def load_object(spec: str) -> object:
    """What `MODULE:ATTR` names (the module imported from the current directory too)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{spec!r} is not MODULE:ATTR (for example fsm.examples:ping)")
    if os.getcwd() not in sys.path:  # find the user's own modules, as `python -m` would
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except DefinitionError:
        raise
    except ModuleNotFoundError as error:
        raise UsageError(f"cannot import module {module_name!r}: {error}") from error
    except Exception as error:  # the user's module failed while importing: say how, briefly
        raise UsageError(
            f"importing {module_name!r} failed: {type(error).__name__}: {error}"
        ) from error
    value: object = module
    for part in attr.split("."):
        if not hasattr(value, part):
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
        value = getattr(value, part)
    return value


def resolve_event(run: Run[Any], text: str) -> Hashable:
    """The trigger from the run's state that `text` names: an event, Enum member or class."""
    for trigger in run.allowed:
        if _names(trigger, text):
            return trigger
    return text  # unknown: sending it raises InvalidEvent naming the allowed ones


def _names(trigger: Hashable, text: str) -> bool:
    if isinstance(trigger, Enum):
        return text in (trigger.name, str(trigger.value), show(trigger))
    if isinstance(trigger, type):
        return text in (trigger.__name__, trigger.__qualname__)
    return str(trigger) == text


SHOWN_UNLOADABLE = 20
"""How many runs that cannot load `fsm check --db-url` lists; it counts the rest."""


def _cmd_check(args: argparse.Namespace) -> int:
    machine = load_machine(args.machine)
    print(
        f"{args.machine}: machine {machine.name!r} is valid "
        f"({len(machine.states)} states, {len(machine.transitions)} rows)"
    )
    return 0 if args.db_url is None else _check_stored(args.db_url, machine)


def _check_stored(db_url: str, machine: Machine[Any]) -> int:
    """Print the machine's stored runs by state and those it cannot load; 1 if there are any."""
    survey: Callable[[str, Machine[Any]], StoredRuns] = _storage_hook("fsm.run_surveys", "--db-url")
    stored = survey(db_url, machine)
    total = sum(stored.by_state.values())
    if not total:
        print(f"no stored runs of machine {machine.name!r}")
        return 0
    plural = "" if total == 1 else "s"
    print(f"{total} stored run{plural} of machine {machine.name!r}, by stored state:")
    width = max(len(label) for label in stored.by_state)
    for label, count in sorted(stored.by_state.items()):
        print(f"  {label:<{width}}  {count}")
    failed = stored.unloadable
    if not failed:
        print("every one loads with this definition")
        return 0
    print(f"{len(failed)} of {total} cannot load with this definition:")
    for error in failed[:SHOWN_UNLOADABLE]:
        print(f"  {error.run_id}: {error.reason}")
    if len(failed) > SHOWN_UNLOADABLE:
        print(f"  and {len(failed) - SHOWN_UNLOADABLE} more")
    return 1


def _cmd_run(args: argparse.Namespace) -> int:
    machine = load_machine(args.machine)
    try:
        context = json.loads(args.context)
    except json.JSONDecodeError as error:
        raise UsageError(f"--context is not valid JSON: {error}") from error
    if not isinstance(context, dict):
        raise UsageError("--context must be a JSON object, for example '{\"ok\": true}'")
    run = machine.start(context)
    print(f"run {run.id} of {machine.name!r} started in {show(machine.initial.name)}")
    printed = 0
    try:
        for text in args.events:
            run.send(resolve_event(run, text))
            printed = _print_history(run, printed)
    finally:
        _print_history(run, printed)
        done = " (finished)" if run.finished else ""
        print(f"state: {show(run.state)}{done}")
    return 0


def _cmd_diagram(args: argparse.Namespace) -> int:
    if args.all:
        return _diagram_all(args)
    if args.machine is None:
        raise UsageError("give the machine as MODULE:ATTR, or --all for every shipped machine")
    if args.check or args.output_dir is not None:
        raise UsageError("--check and --output-dir go with --all")
    suffixes = {".svg": "svg", ".png": "png", ".dot": "dot", ".gv": "dot", ".mmd": "mermaid"}
    suffix = Path(args.output).suffix.lower() if args.output else ""
    output_format = args.format or suffixes.get(suffix, "mermaid")
    if output_format not in FORMATS:
        raise UsageError(f"unknown format {output_format!r}; formats: {', '.join(FORMATS)}")
    if output_format == "png" and args.output is None:
        raise UsageError("png is binary: give --output FILE")
    machine = load_machine(args.machine)
    content = diagram(machine, output_format, highlight=_diagram_highlight(args, machine))
    if args.output is None:
        text = content.decode() if isinstance(content, bytes) else content
        sys.stdout.write(text)
        return 0
    data = content.encode() if isinstance(content, str) else content
    _write(args.output, data)
    print(f"wrote {args.output} ({output_format})")
    return 0


def _diagram_highlight(args: argparse.Namespace, machine: Machine[Any]) -> Run[Any] | None:
    """The run whose path to draw: a stored one (--run), or a new one driven by --send."""
    if args.run is not None:
        if args.send is not None or args.context is not None:
            raise UsageError("--run draws a stored run: drop --send and --context")
        return _load_stored_run(args.db_url, machine, args.run)
    if args.db_url is not None:
        raise UsageError("--db-url goes with --run ID")
    if args.send is None:
        if args.context is not None:
            raise UsageError("--context goes with --send")
        return None
    try:
        context = json.loads(args.context or "{}")
    except json.JSONDecodeError as error:
        raise UsageError(f"--context is not valid JSON: {error}") from error
    if not isinstance(context, dict):
        raise UsageError("--context must be a JSON object, for example '{\"ok\": true}'")
    run = machine.start(context)
    for text in args.send:
        run.send(resolve_event(run, text))
    return run


def _load_stored_run(db_url: str | None, machine: Machine[Any], run_id: str) -> Run[Any]:
    """A stored run, through the loader a storage integration registers (fsm.run_loaders)."""
    loader: Callable[[str | None, Machine[Any], str], Run[Any]] = _storage_hook(
        "fsm.run_loaders", "--run"
    )
    return loader(db_url, machine, run_id)


def _storage_hook(group: str, option: str) -> Callable[..., Any]:
    """What a storage integration registers under the entry point `group`: fsm.run_loaders,
    `load_run(db_url, machine, run_id) -> Run`; fsm.run_surveys, `survey_runs(db_url,
    machine) -> StoredRuns`. fsm itself never imports a database library."""
    for entry in entry_points(group=group):
        try:
            hook: Callable[..., Any] = entry.load()
        except ImportError:
            continue
        return hook
    raise UsageError(
        f"{option} needs a storage integration: pip install 'fsm-orchestrator[sqlalchemy]'"
    )


def _diagram_all(args: argparse.Namespace) -> int:
    if args.machine is not None or args.format or args.output or args.send is not None or args.run:
        raise UsageError(
            "--all draws every shipped machine: drop MODULE:ATTR, --format, --output, --send, --run"
        )
    if args.context is not None:
        raise UsageError("--context goes with --send")
    config = load_config()
    directory = Path(args.output_dir) if args.output_dir is not None else config.directory
    files = render_shipped([(spec, load_machine(spec)) for spec in config.specs])
    if args.check:
        stale = stale_shipped(files, directory)
        for line in stale:
            print(f"fsm: {line}", file=sys.stderr)
        if stale:
            print("fsm: run `fsm diagram --all` and commit the result", file=sys.stderr)
            return 1
        print(f"{directory}: {len(files)} files match the definitions")
        return 0
    try:
        written = write_shipped(files, directory)
    except OSError as error:
        raise UsageError(f"cannot write into {directory}: {error.strerror or error}") from error
    print(f"{directory}: wrote {len(written)} files for {len(config.specs)} machines")
    return 0


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as file:
            file.write(data)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror or error}") from error


def _print_history(run: Run[Any], printed: int) -> int:
    history = run.history
    for step in history[printed:]:
        print(f"  {show(step.source)} --{show(step.trigger)}--> {show(step.target)}")
    return len(history)


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad command line reported like any other mistake: one line, exit 2.

    Subcommand parsers (those of entry points included) are of this class too.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fsm", description="Check, run and inspect explicit state machines.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a machine; list every problem")
    check.add_argument("machine", help="the machine as MODULE:ATTR, e.g. fsm.examples:ping")
    check.add_argument(
        "--db-url",
        help="also read this database's stored runs of the machine: count them by state and "
        "list those that cannot load with this definition (exit 1 if any)",
    )
    check.set_defaults(handler=_cmd_check)

    run = commands.add_parser("run", help="start a run, send events, print the path taken")
    run.add_argument("machine", help="the machine as MODULE:ATTR")
    run.add_argument("events", nargs="*", help="events to send in order")
    run.add_argument("--context", default="{}", help="the run's context as a JSON object")
    run.set_defaults(handler=_cmd_run)

    diagram = commands.add_parser(
        "diagram", help="draw a machine as SVG, PNG, DOT or Mermaid; --all for the shipped ones"
    )
    diagram.add_argument("machine", nargs="?", help="the machine as MODULE:ATTR")
    diagram.add_argument(
        "--format", help="svg, png, dot or mermaid (default: from --output's suffix, else mermaid)"
    )
    diagram.add_argument(
        "-o", "--output", help="the file to write (default: stdout, text formats only)"
    )
    diagram.add_argument(
        "--send",
        nargs="*",
        metavar="EVENT",
        help="highlight the path of a new run that is sent these events (none: just started)",
    )
    diagram.add_argument("--context", help="with --send: the run's context as a JSON object")
    diagram.add_argument("--run", metavar="ID", help="draw the path of this stored run")
    diagram.add_argument(
        "--db-url",
        help="with --run: the database (default: $FSM_DB_URL, else sqlite:///fsm.sqlite3)",
    )
    diagram.add_argument(
        "--all", action="store_true", help="draw every machine of [tool.fsm] diagrams in pyproject"
    )
    diagram.add_argument("--output-dir", help="with --all: where to write (default: diagrams/)")
    diagram.add_argument(
        "--check", action="store_true", help="with --all: fail if a committed diagram is stale"
    )
    diagram.set_defaults(handler=_cmd_diagram)

    # Integrations add their own commands (demo, relay, db) without fsm importing them.
    for entry in entry_points(group="fsm.commands"):
        try:
            register: Callable[[Any], None] = entry.load()
        except ImportError as error:  # its extra is not installed: say so when it is used
            _unavailable(commands, entry.name, error)
        else:
            register(commands)
    return parser


def _unavailable(commands: Any, name: str, error: ImportError) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise UsageError(f"command {name!r} is not available: {error}; install its extra")

    # No option prefix: argparse's REMAINDER takes no option first ("fsm relay --bootstrap
    # ..." said "unrecognized arguments: --bootstrap"), so every word goes to `rest`.
    parser = commands.add_parser(
        name, help=f"(not available: {error})", prefix_chars="\0", add_help=False
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fsm` command; returns the exit status."""
    if not logging.getLogger().handlers:
        # A failed step is the command's own one-line error; its WARNING record would print
        # a second line through logging's last resort. Commands that log (fsm relay, fsm
        # worker) configure logging first, and then it goes where they send it.
        logging.getLogger("fsm.steps").addHandler(logging.NullHandler())
    try:
        args = build_parser().parse_args(argv)
        handler: Callable[[argparse.Namespace], int] = args.handler
        return handler(args)
    except DefinitionError as error:
        print(f"fsm: {error}", file=sys.stderr)
        return 1
    except FSMError as error:
        print(f"fsm: error: {error}", file=sys.stderr)
        return 2
