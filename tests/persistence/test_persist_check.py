"""`fsm check MODULE:ATTR --db-url URL`: which stored runs the definition can still load."""

from __future__ import annotations

import shlex
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import pytest
from sqlalchemy import Engine

import fsm.cli
from adapters.sqlalchemy import SqlUnitOfWork
from fsm import PersistentMachine
from fsm.cli import main
from tests.persistence import payments_old

NEW = "tests.persistence.payments_new:machine"
STATES = "abandoned, captured, capturing, payment_failed, settled"


def unknown(run_id: str, label: str) -> str:
    """The line of a run stored in a state the new definition does not have."""
    return (
        f"  {run_id}: state: unknown state {label!r}; the machine's states: {STATES}; "
        f"if it was renamed, add aliases=({label!r},) to the state it became"
    )


def store_old_runs(engine: Engine) -> None:
    """Runs of the old definition: captured, capture_failed, on_hold (gone now), settled."""
    runs = PersistentMachine(payments_old.machine, SqlUnitOfWork(engine))
    runs.start({"amount": "5"}, run_id="r1")
    runs.start({"decline": "card expired"}, run_id="r2")
    runs.start({"amount": "7"}, run_id="r3").send("hold")
    runs.start({"amount": "9"}, run_id="r4").send("settle")


BROKEN = EntryPoint("broken", "no_such_integration:hook", "fsm.run_surveys")
"""An integration whose extra is not installed: loading it raises ImportError."""


def installed(wanted: str, *found: EntryPoint) -> Callable[..., list[EntryPoint]]:
    """importlib.metadata.entry_points as if `found` were what is installed in `wanted`."""

    def look_up(*, group: str) -> list[EntryPoint]:
        return list(found) if group == wanted else list(entry_points(group=group))

    return look_up


def check(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    """Exit status, stdout lines and stderr of `fsm check ...`."""
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


class TestCheckStoredRuns:
    """The report: runs by stored state, and each run that cannot load with its reason."""

    def test_some_cannot_load(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Aliased renames load; the run in a removed state is listed; exit 1."""
        store_old_runs(engine)
        assert check([NEW, "--db-url", db_url], capsys) == (
            1,
            [
                f"{NEW}: machine 'payment' is valid (5 states, 5 rows)",
                "4 stored runs of machine 'payment', by stored state:",
                "  capture_failed  1",
                "  captured        1",
                "  on_hold         1",
                "  settled         1",
                "1 of 4 cannot load with this definition:",
                unknown("r3", "on_hold"),
            ],
            "",
        )

    def test_without_aliases(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The same renames without aliases strand every run, each with its reason."""
        store_old_runs(engine)
        spec = "tests.persistence.payments_new:unaliased"
        code, lines, _ = check([spec, "--db-url", db_url], capsys)
        moved = "history step 1 outcome: unknown type tag 'tests.persistence.payments_old.Captured'"
        assert code == 1
        assert lines[6] == "4 of 4 cannot load with this definition:"
        assert lines[7].startswith(f"  r1: {moved}; this machine knows ")
        assert lines[8:10] == [unknown("r2", "capture_failed"), unknown("r3", "on_hold")]
        assert lines[10].startswith(f"  r4: {moved}; this machine knows ")
        assert len(lines) == 11

    def test_all_load(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """With the definition the runs were stored by, every run loads: exit 0."""
        store_old_runs(engine)
        spec = "tests.persistence.payments_old:machine"
        assert check([spec, "--db-url", db_url], capsys) == (
            0,
            [
                f"{spec}: machine 'payment' is valid (6 states, 7 rows)",
                "4 stored runs of machine 'payment', by stored state:",
                "  capture_failed  1",
                "  captured        1",
                "  on_hold         1",
                "  settled         1",
                "every one loads with this definition",
            ],
            "",
        )

    def test_no_runs(self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A database without runs of the machine: nothing can be stranded, exit 0."""
        assert check([NEW, "--db-url", db_url], capsys) == (
            0,
            [
                f"{NEW}: machine 'payment' is valid (5 states, 5 rows)",
                "no stored runs of machine 'payment'",
            ],
            "",
        )

    def test_listing_is_capped(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Twenty runs are listed, the rest counted."""
        runs = PersistentMachine(payments_old.machine, SqlUnitOfWork(engine))
        for number in range(1, 24):
            runs.start({"amount": "1"}, run_id=f"r{number:02}").send("hold")
        code, lines, _ = check([NEW, "--db-url", db_url], capsys)
        assert code == 1
        assert lines[1:4] == [
            "23 stored runs of machine 'payment', by stored state:",
            "  on_hold  23",
            "23 of 23 cannot load with this definition:",
        ]
        assert lines[4:] == [
            *(unknown(f"r{number:02}", "on_hold") for number in range(1, 21)),
            "  and 3 more",
        ]

    def test_one_run_and_a_full_listing(
        self, engine: Engine, db_url: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """One run is "1 stored run"; twenty that cannot load are all listed, none counted."""
        runs = PersistentMachine(payments_old.machine, SqlUnitOfWork(engine))
        runs.start({"amount": "1"}, run_id="r00")
        assert check([NEW, "--db-url", db_url], capsys)[1][1] == (
            "1 stored run of machine 'payment', by stored state:"
        )
        for number in range(1, 21):
            runs.start({"amount": "1"}, run_id=f"r{number:02}").send("hold")
        code, lines, _ = check([NEW, "--db-url", db_url], capsys)
        assert (code, lines[4]) == (1, "20 of 21 cannot load with this definition:")
        assert lines[5:] == [unknown(f"r{number:02}", "on_hold") for number in range(1, 21)]

    def test_installed_command(self, engine: Engine, db_url: str) -> None:
        """`python -m fsm check ... --db-url` in a process of its own reports the same."""
        store_old_runs(engine)
        done = subprocess.run(
            [sys.executable, "-m", "fsm", "check", NEW, "--db-url", db_url],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parents[2],
        )
        assert (done.returncode, done.stderr) == (1, "")
        assert done.stdout.splitlines()[-2:] == [
            "1 of 4 cannot load with this definition:",
            unknown("r3", "on_hold"),
        ]


class TestCheckMistakes:
    """User mistakes are one line on stderr and exit 2; plain `fsm check` reads no database."""

    def test_missing_tables(self, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
        """An empty database names the missing tables and the command that creates them."""
        code, lines, err = check([NEW, "--db-url", db_url], capsys)
        assert (code, lines[1:]) == (2, [])
        assert err.startswith("fsm: error: ")
        assert err.endswith(
            " has no runs, run_history or outbox table: run fsm db init --db-url "
            f"{shlex.quote(db_url)}\n"
        )

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            (
                "nosuchdb://x/y",
                "fsm: error: --db-url 'nosuchdb://x/y' is not a usable SQLAlchemy URL",
            ),
            (
                "postgresql+psycopg://postgres@127.0.0.1:1/test",
                "fsm: error: cannot read the runs of 'payment' from "
                "postgresql+psycopg://postgres@127.0.0.1:1/test: ",
            ),
        ],
    )
    def test_bad_urls(self, url: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
        """A bad URL or an unreachable server: one line, exit 2, no traceback."""
        code, _, err = check([NEW, "--db-url", url], capsys)
        assert code == 2
        assert err.startswith(message) and err.count("\n") == 1

    @pytest.mark.parametrize(
        ("argv", "option"),
        [
            ([NEW, "--db-url", "sqlite://"], "--db-url"),
            (["diagram", "fsm.examples:ping", "--run", "r1"], "--run"),
        ],
    )
    def test_without_a_storage_integration(
        self,
        argv: list[str],
        option: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """An integration whose extra is not installed is passed over; with none left, the
        option that needs one says what to install."""
        group = "fsm.run_loaders" if option == "--run" else "fsm.run_surveys"
        monkeypatch.setattr(fsm.cli, "entry_points", installed(group, BROKEN))
        if argv[0] == "diagram":
            code, err = main(argv), capsys.readouterr().err
        else:
            code, _, err = check(argv, capsys)
        assert (code, err) == (
            2,
            f"fsm: error: {option} needs a storage integration: "
            "pip install 'fsm-orchestrator[sqlalchemy]'\n",
        )

    def test_an_integration_after_one_that_cannot_import(
        self,
        engine: Engine,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """The first integration that imports is the one used."""
        found = [BROKEN, *entry_points(group="fsm.run_surveys")]
        monkeypatch.setattr(fsm.cli, "entry_points", installed("fsm.run_surveys", *found))
        assert check([NEW, "--db-url", db_url], capsys)[1][1:] == [
            "no stored runs of machine 'payment'"
        ]

    def test_plain_check_reads_no_database(
        self, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Without --db-url nothing is read, even with $FSM_DB_URL set."""
        monkeypatch.setenv("FSM_DB_URL", "nosuchdb://x/y")
        assert check([NEW], capsys) == (
            0,
            [f"{NEW}: machine 'payment' is valid (5 states, 5 rows)"],
            "",
        )
