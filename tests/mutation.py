"""Mutation testing of fsm/ with mutmut: the score per module, and the gate on the engine core.

`python -m tests.mutation core --fail-under 90` (make mutation-gate) mutates validation,
runtime, definition and table and runs the engine's tests against each mutant; `python -m
tests.mutation all` (make mutation) mutates every module of fsm/ against the fast suite;
`persistence` and `cli` mutate one module each against the whole suite but the campaign,
`relay` against tests/relay, flow, worker and observe, PostgreSQL's and the broker's tests
included under FSM_REQUIRE_POSTGRES=1 (a module's own test files leave out the flow's fault
tests and the like, which reach it too).
`--only` narrows a profile to some of its modules, so a long profile can be finished in parts.
Each run has a folder of its own, .mutation/PROFILE/ (.mutation/PROFILE-MODULES/ with
--only), with a copy of fsm/ and tests/ and a pyproject.toml that adds the run's
[tool.mutmut] (mutmut reads its settings from the current folder only); inspect a mutant
there with `mutmut show NAME`.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]

KILLED = {"killed", "timeout", "caught by type check"}
"""mutmut statuses that count as killed; the score is killed / all mutants of the module
(a mutant no test ran counts as not killed)."""


@dataclass(frozen=True)
class Profile:
    """What one run mutates and which tests judge the mutants."""

    modules: tuple[str, ...]
    """Glob patterns of the files to mutate (mutmut's only_mutate)."""
    tests: tuple[str, ...]
    """pytest arguments choosing the tests (mutmut's pytest_add_cli_args_test_selection)."""


FAST_ONLY = () if os.environ.get("FSM_REQUIRE_POSTGRES") == "1" else ("-m", "not integration")
"""The integration tests (PostgreSQL, the broker) judge a module's mutants only when the
run requires PostgreSQL, as CI does; otherwise the fast ones alone."""

WHOLE = ("tests", "--ignore=tests/campaign", *FAST_ONLY)
"""The whole suite but the campaign: what judges persistence.py and cli.py, whose own test
files leave out tests that reach them (the flow's fault tests, the CLI's commands run on
flows)."""

PROFILES = {
    "core": Profile(
        modules=("fsm/validation.py", "fsm/runtime.py", "fsm/definition.py", "fsm/table.py"),
        tests=("tests/engine", "tests/testing/test_runtime_hooks.py"),
    ),
    "all": Profile(
        modules=("fsm/*",),
        tests=("tests", "-m", "not integration", "--ignore=tests/campaign"),
    ),
    # Bounded, not WHOLE: the whole suite's first (stats) run alone took 21 minutes on the
    # shared machine. These folders hold the relay's own tests and the flow's (its fault
    # tests too), workers' and observers' that run one; the service's and the docs' do not judge.
    "relay": Profile(
        modules=("fsm/relay.py",),
        tests=("tests/relay", "tests/flow", "tests/worker", "tests/observe", *FAST_ONLY),
    ),
    "persistence": Profile(modules=("fsm/persistence.py",), tests=WHOLE),
    "cli": Profile(modules=("fsm/cli.py",), tests=WHOLE),
}

READ_BY_TESTS = ("docs", "diagrams", "README.md", "examples")
"""What tests read or import besides fsm/ and the installed packages (the documentation's
examples, the committed diagrams, the example service)."""

PYTEST_ARGS = (
    "-p",
    "no:cacheprovider",
    "--hypothesis-profile=mutation",
    # mypy over the mutated copy reads mutmut's trampolines, not the code under test.
    "--ignore=tests/engine/test_typing.py",
    # Workers in processes of their own, timed against a lease of a few seconds: on a loaded
    # machine a niced worker starts after the lease ran out, and the clean run fails.
    "--ignore=tests/persistence/test_external_processes.py",
    "--ignore=tests/worker/test_worker_processes.py",
    # The event loop's longest pause measured against 50 or 100 ms: niced on a loaded
    # machine it is longer, whatever the code does.
    "--deselect=tests/flow/test_async_relay.py::TestBrokerDown::test_attempts_back_off_and_dead_letter_without_blocking_the_loop",
    "--deselect=tests/flow/test_kafka_async.py::TestAsyncKafkaPublisher::test_broker_down_fails_cleanly_retried_and_the_loop_stays_free",
)


@dataclass(frozen=True)
class Score:
    """How the mutants of one module fared."""

    module: str
    counts: Counter[str]

    @property
    def total(self) -> int:
        """All mutants of the module."""
        return sum(self.counts.values())

    @property
    def killed(self) -> int:
        """Mutants some test failed on (a timeout counts)."""
        return sum(n for status, n in self.counts.items() if status in KILLED)

    @property
    def percent(self) -> float:
        """Killed mutants out of all, 0 to 100 (100 for a module without mutants)."""
        return 100.0 * self.killed / self.total if self.total else 100.0


def prepare(folder: Path, profile: Profile) -> None:
    """A fresh folder with a copy of fsm/ and tests/ and the profile's mutmut settings."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis")
    for name in ("fsm", "tests", *READ_BY_TESTS):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, folder / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, folder / name)
    settings = {
        "source_paths": ["fsm/"],
        "also_copy": list(READ_BY_TESTS),
        "only_mutate": list(profile.modules),
        "pytest_add_cli_args_test_selection": list(profile.tests),
        "pytest_add_cli_args": list(PYTEST_ARGS),
    }
    lines = [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    text = (ROOT / "pyproject.toml").read_text()
    (folder / "pyproject.toml").write_text(text + "\n[tool.mutmut]\n" + "\n".join(lines) + "\n")


def narrowed(profile: Profile, only: Sequence[str]) -> Profile:
    """The profile mutating only `only` (glob patterns, each matching some of its modules)."""
    files = [str(path.relative_to(ROOT)) for path in (ROOT / "fsm").rglob("*.py")]
    mine = [f for f in files if any(fnmatch.fnmatch(f, p) for p in profile.modules)]
    outside = [m for m in only if not fnmatch.filter(mine, m)]
    if outside:
        raise SystemExit(f"no module of this profile matches: {', '.join(outside)}")
    return Profile(modules=tuple(only), tests=profile.tests)


def folder_name(profile: str, only: Sequence[str]) -> str:
    """The run's folder under .mutation/: the profile's name, and the modules with --only."""
    names = [m.removeprefix("fsm/").removesuffix(".py").replace("*", "all") for m in only]
    return "-".join([profile, *(n.replace("/", ".") for n in names)])


def scores(folder: Path) -> list[Score]:
    """The score of each mutated module, from the results mutmut left in mutants/."""
    found = []
    for meta in sorted((folder / "mutants").glob("fsm/**/*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"].values()
        counts = Counter(status_by_exit_code[code] for code in codes)
        found.append(Score(str(meta.relative_to(folder / "mutants"))[: -len(".meta")], counts))
    return found


def overall(found: Sequence[Score]) -> Score:
    """All modules' mutants together."""
    return Score("TOTAL", sum((s.counts for s in found), Counter()))


def report(found: Sequence[Score]) -> list[str]:
    """One line per module, then the total."""
    total = overall(found)
    width = max(len(s.module) for s in [*found, total])
    lines = [f"{'module':<{width}}  mutants  killed  survived  no tests   score"]
    for s in [*found, total]:
        lines.append(
            f"{s.module:<{width}}  {s.total:>7}  {s.killed:>6}  {s.counts['survived']:>8}  "
            f"{s.counts['no tests']:>8}  {s.percent:>5.1f}%"
        )
    return lines


def survivors(folder: Path) -> list[str]:
    """The names of the mutants no test killed (survived, or no test ran them)."""
    names = []
    for meta in sorted((folder / "mutants").glob("fsm/**/*.py.meta")):
        by_key = json.loads(meta.read_text())["exit_code_by_key"]
        names += [name for name, code in by_key.items() if status_by_exit_code[code] not in KILLED]
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutation", description=__doc__)
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument(
        "--fail-under", type=float, metavar="PERCENT", help="exit 1 when fewer were killed"
    )
    parser.add_argument(
        "--survivors", action="store_true", help="also list the mutants that were not killed"
    )
    parser.add_argument(
        "--only",
        type=lambda text: [m for m in text.split(",") if m],
        default=[],
        metavar="MODULES",
        help="mutate only these of the profile's modules (comma-separated, globs allowed)",
    )
    parser.add_argument(
        "--max-children", type=int, metavar="N", help="mutants tested at once (default: cores)"
    )
    args = parser.parse_args(argv)
    folder = ROOT / ".mutation" / folder_name(args.profile, args.only)
    profile = PROFILES[args.profile]
    prepare(folder, narrowed(profile, args.only) if args.only else profile)
    command = [str(Path(sys.executable).with_name("mutmut")), "run"]
    if args.max_children is not None:
        command += ["--max-children", str(args.max_children)]
    log = folder / "mutmut.log"
    with log.open("w") as out:
        done = subprocess.run(command, cwd=folder, stdout=out, stderr=out, env=os.environ)
    found = scores(folder)
    if done.returncode != 0 or not found:
        tail = log.read_text()[-3000:]
        print(f"{tail}\nmutmut failed (exit {done.returncode}); its output: {log}")
        return 1
    print("\n".join(report(found)))
    if args.survivors:
        print("\n".join(["not killed:", *survivors(folder)]))
    if args.fail_under is None:
        return 0
    score = overall(found).percent
    verdict = "is under" if score < args.fail_under else "reaches"
    print(f"mutation score {score:.1f}% {verdict} the required {args.fail_under:g}%")
    return 1 if score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
