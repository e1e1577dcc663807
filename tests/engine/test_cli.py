"""The `fsm check` and `fsm run` commands, called through main(argv)."""

from __future__ import annotations

import re
import subprocess
import sys
from enum import Enum
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import fsm.cli
from fsm import Machine, State
from fsm.cli import build_parser, main


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of `fsm ARGV...`."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class TestCheck:
    """`fsm check MODULE:ATTR`."""

    def test_valid_machine(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A valid machine exits 0 with a one-line summary."""
        code, out, _ = run_cli(capsys, "check", "fsm.examples:ping")
        assert (
            code == 0 and out == "fsm.examples:ping: machine 'ping' is valid (3 states, 3 rows)\n"
        )

    def test_invalid_machine_lists_every_problem(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad machine exits 1 and lists all its problems."""
        code, _, err = run_cli(capsys, "check", "tests.engine.broken_machine:broken")
        assert code == 1
        assert "machine 'broken' has 3 problems:" in err
        assert "state 'b' is not final" in err and "final state 'c' has outgoing rows" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("spec", "message"),
        [
            ("fsm.examples", "is not MODULE:ATTR"),
            ("no.such.module:x", "cannot import module 'no.such.module'"),
            ("fsm.examples:nothing", "has no attribute 'nothing'"),
            ("fsm.examples:Updated", "is a type, not an fsm.Machine"),
            ("fsm.examples:ping:x", "module 'fsm.examples' has no attribute 'ping:x'"),
        ],
    )
    def test_bad_spec(self, capsys: pytest.CaptureFixture[str], spec: str, message: str) -> None:
        """A bad MODULE:ATTR gives one line and exit 2."""
        code, _, err = run_cli(capsys, "check", spec)
        assert code == 2 and message in err and err.count("\n") == 1

    def test_the_user_s_own_module_in_the_current_folder(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A module of the current folder is found, as `python -m` finds it; a dotted ATTR is
        followed; a module that fails while importing is named with its error."""
        (tmp_path / "my_flows.py").write_text(
            "from fsm.examples import ping\n\n\nclass Flows:\n    ping = ping\n"
        )
        (tmp_path / "my_broken.py").write_text("raise ValueError('boom')\n")
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))  # the folder added goes afterwards
        try:
            assert run_cli(capsys, "check", "my_flows:Flows.ping") == (
                0,
                "my_flows:Flows.ping: machine 'ping' is valid (3 states, 3 rows)\n",
                "",
            )
            assert run_cli(capsys, "check", "my_broken:machine")[::2] == (
                2,
                "fsm: error: importing 'my_broken' failed: ValueError: boom\n",
            )
        finally:
            sys.modules.pop("my_flows", None)


class Light(Enum):
    """Enum events, named on the command line by name, value or as shown."""

    GO = "go"
    STOP = "stop"


lights = Machine(
    "lights",
    states=[State("red", initial=True), State("green"), State("off", final=True)],
    transitions=[
        ("red", Light.GO, "green"),
        ("red", Light.STOP, "off"),
        ("green", 0, "red"),
        ("green", Light.STOP, "off"),
    ],
)
"""Two Enum events from red, and an int event from green, for `fsm run`'s event names."""


class TestRun:
    """`fsm run MODULE:ATTR EVENT...`."""

    @pytest.mark.parametrize("stop", ["STOP", "stop", "Light.STOP"])
    def test_events_by_their_names(self, capsys: pytest.CaptureFixture[str], stop: str) -> None:
        """An Enum event by its name, value or shown name; any other event by its str()."""
        code, out, _ = run_cli(capsys, "run", "tests.engine.test_cli:lights", "GO", "0", stop)
        assert code == 0
        assert out.splitlines()[1:] == [
            "  'red' --Light.GO--> 'green'",
            "  'green' --0--> 'red'",
            "  'red' --Light.STOP--> 'off'",
            "state: 'off' (finished)",
        ]

    def test_prints_path(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each transition is printed, then the final state."""
        code, out, _ = run_cli(capsys, "run", "fsm.examples:ping", "start", "finish")
        assert code == 0
        assert re.fullmatch(r"run \w+ of 'ping' started in 'idle'", out.splitlines()[0])
        assert out.splitlines()[1:] == [
            "  'idle' --'start'--> 'busy'",
            "  'busy' --'finish'--> 'done'",
            "state: 'done' (finished)",
        ]

    def test_actions_and_context(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A machine with actions proceeds by itself; --context feeds them."""
        code, out, _ = run_cli(capsys, "run", "fsm.examples:update", "--context", '{"user_id": 9}')
        assert code == 0 and "'received' --UserNotFound--> 'failed'" in out

    def test_bad_event(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad event exits 2 naming the allowed events, after the path so far."""
        code, out, err = run_cli(capsys, "run", "fsm.examples:ping", "start", "jump")
        assert code == 2
        assert out.splitlines()[-1] == "state: 'busy'"
        assert "event 'jump' is not allowed here; allowed: 'pause', 'finish'" in err
        assert "Traceback" not in err

    @pytest.mark.parametrize(
        ("context", "message"),
        [
            ("{not json", "--context is not valid JSON: Expecting property name enclosed in"),
            ("[1, 2]", """--context must be a JSON object, for example '{"ok": true}'\n"""),
        ],
    )
    def test_bad_context(
        self, capsys: pytest.CaptureFixture[str], context: str, message: str
    ) -> None:
        """A --context that is not a JSON object is one line, exit 2."""
        code, _, err = run_cli(capsys, "run", "fsm.examples:ping", "--context", context)
        assert code == 2 and err.startswith(f"fsm: error: {message}") and err.count("\n") == 1


class TestEntryPoints:
    """The installed command and `python -m fsm`."""

    def test_python_m_fsm(self) -> None:
        """`python -m fsm check` works as the console script does."""
        done = subprocess.run(
            [sys.executable, "-m", "fsm", "check", "fsm.examples:update"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and "machine 'update' is valid" in done.stdout

    def test_a_command_whose_extra_is_missing(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A command an integration registers but cannot import is listed as not available,
        and using it, whatever follows, says so in one line."""
        ghost = EntryPoint("ghost", "no_such_integration:register", "fsm.commands")
        monkeypatch.setattr(fsm.cli, "entry_points", lambda group: [ghost])
        missing = "No module named 'no_such_integration'"
        listed = [line.split() for line in build_parser().format_help().splitlines()]
        assert f"ghost (not available: {missing})".split() in listed
        code, _, err = run_cli(capsys, "ghost", "--any", "thing")
        assert (code, err) == (
            2,
            f"fsm: error: command 'ghost' is not available: {missing}; install its extra\n",
        )


HELP = {
    "": [
        "usage: fsm [-h] COMMAND ...",
        "Check, run and inspect explicit state machines.",
        "validate a machine; list every problem",
        "start a run, send events, print the path taken",
        "draw a machine as SVG, PNG, DOT or Mermaid; --all for the shipped ones",
    ],
    "check": [
        "usage: fsm check",
        "the machine as MODULE:ATTR, e.g. fsm.examples:ping",
        "also read this database's stored runs of the machine: count them by state and list "
        "those that cannot load with this definition (exit 1 if any)",
    ],
    "run": [
        "usage: fsm run",
        "the machine as MODULE:ATTR",
        "events to send in order",
        "the run's context as a JSON object",
    ],
    "diagram": [
        "usage: fsm diagram",
        "the machine as MODULE:ATTR",
        "svg, png, dot or mermaid (default: from --output's suffix, else mermaid)",
        "the file to write (default: stdout, text formats only)",
        "highlight the path of a new run that is sent these events (none: just started)",
        "with --send: the run's context as a JSON object",
        "draw the path of this stored run",
        "with --run: the database (default: $FSM_DB_URL, else sqlite:///fsm.sqlite3)",
        "draw every machine of [tool.fsm] diagrams in pyproject",
        "with --all: where to write (default: diagrams/)",
        "with --all: fail if a committed diagram is stale",
    ],
}
"""What `fsm [COMMAND] --help` says, in order (wrapped as the terminal's width asks)."""


class TestHelp:
    """`fsm --help` and each command's --help say what each command and option does."""

    def test_no_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        """`fsm` alone says what is missing in one line, exit 2."""
        assert run_cli(capsys) == (
            2,
            "",
            "fsm: error: the following arguments are required: COMMAND (see fsm --help)\n",
        )

    @pytest.mark.parametrize("command", sorted(HELP))
    def test_help_text(self, command: str, capsys: pytest.CaptureFixture[str]) -> None:
        """Every sentence is there, whole (not inside a longer word) and in order, whatever
        the line breaks."""
        with pytest.raises(SystemExit) as exited:
            main([*command.split(), "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert exited.value.code == 0
        at = 0
        for sentence in HELP[command]:
            found = re.compile(rf"(?<!\S){re.escape(sentence)}(?!\S)").search(text, at)
            assert found is not None, sentence
            at = found.end()
