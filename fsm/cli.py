"""The `fsm` command line: check, run (and more) on machines named as MODULE:ATTR."""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Callable, Hashable, Sequence
from enum import Enum
from importlib.metadata import entry_points
from typing import Any

from fsm.definition import Machine
from fsm.errors import DefinitionError, FSMError, show
from fsm.runtime import Run


class UsageError(FSMError):
    """A user mistake on the command line: printed as one line, exit status 2.

    Commands registered through the `fsm.commands` entry point raise it (or any FSMError)
    for bad input; `main` prints it as one line, never as a traceback.
    """


def load_machine(spec: str) -> Machine[Any]:
    """The Machine named by `MODULE:ATTR`; DefinitionError if building it fails."""
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
    if not isinstance(value, Machine):
        raise UsageError(f"{spec} is a {type(value).__name__}, not an fsm.Machine")
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


def _cmd_check(args: argparse.Namespace) -> int:
    machine = load_machine(args.machine)
    print(
        f"{args.machine}: machine {machine.name!r} is valid "
        f"({len(machine.states)} states, {len(machine.transitions)} rows)"
    )
    return 0


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


def _print_history(run: Run[Any], printed: int) -> int:
    history = run.history
    for step in history[printed:]:
        print(f"  {show(step.source)} --{show(step.trigger)}--> {show(step.target)}")
    return len(history)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsm", description="Check, run and inspect explicit state machines."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="validate a machine; list every problem")
    check.add_argument("machine", help="the machine as MODULE:ATTR, e.g. fsm.examples:ping")
    check.set_defaults(handler=_cmd_check)

    run = commands.add_parser("run", help="start a run, send events, print the path taken")
    run.add_argument("machine", help="the machine as MODULE:ATTR")
    run.add_argument("events", nargs="*", help="events to send in order")
    run.add_argument("--context", default="{}", help="the run's context as a JSON object")
    run.set_defaults(handler=_cmd_run)

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

    parser = commands.add_parser(name, help=f"(not available: {error})")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(handler=handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `fsm` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except DefinitionError as error:
        print(f"fsm: {error}", file=sys.stderr)
        return 1
    except FSMError as error:
        print(f"fsm: error: {error}", file=sys.stderr)
        return 2
