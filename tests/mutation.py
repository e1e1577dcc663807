"""Mutation testing of fsm/ with mutmut: the score per module, and the gate on the engine core.

`python -m tests.mutation core --fail-under 90` (make mutation-gate) mutates validation,
runtime, definition and table and runs the engine's tests against each mutant; `python -m
tests.mutation all` (make mutation) mutates every module of fsm/ against the fast suite;
`persistence`, `cli` and `relay` mutate one module each in two stages, PostgreSQL's and the
broker's tests included under FSM_REQUIRE_POSTGRES=1: mutmut judges the mutants by a bounded
selection (the module's own test files and those of other folders that reach it), then each
survivor is run again, one at a time, against the whole suite but the campaign, and counts as
killed if that run fails. `--recheck` runs the second stage alone on a run's folder, going on
where a stopped one ended.
`--only` narrows a profile to some of its modules, so a long profile can be finished in parts.
`--sample N --seed S` judges a uniform random sample of N of the profile's mutants by the first
stage alone (for an estimate of the score when judging all of them is out of reach): the
mutants' names, sorted and shuffled with the seed, the first N of them; the sample is saved in
the folder's sample.json and only its mutants are reported. The same seed and a larger N keep
the smaller sample and add to it: such a run goes on in the same folder,
.mutation/PROFILE-sample-seedS/, judging only the mutants not judged yet (by the tests
copied there when the folder was made).
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
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    recheck: tuple[str, ...] = ()
    """pytest arguments choosing the tests that judge each survivor again (none if empty)."""


FAST_ONLY = () if os.environ.get("FSM_REQUIRE_POSTGRES") == "1" else ("-m", "not integration")
"""The integration tests (PostgreSQL, the broker) judge a module's mutants only when the
run requires PostgreSQL, as CI does; otherwise the fast ones alone."""

WHOLE = ("tests", "--ignore=tests/campaign", *FAST_ONLY)
"""The whole suite but the campaign: the second stage of persistence, cli and relay."""

PROFILES = {
    "core": Profile(
        modules=("fsm/validation.py", "fsm/runtime.py", "fsm/definition.py", "fsm/table.py"),
        tests=("tests/engine", "tests/testing/test_runtime_hooks.py"),
    ),
    "all": Profile(
        modules=("fsm/*",),
        tests=("tests", "-m", "not integration", "--ignore=tests/campaign"),
    ),
    # The first stage is bounded: mutmut's first (stats) run of the whole suite alone took 21
    # minutes on the shared machine, and a mutant of a function most tests reach took minutes.
    # Each selection is the module's own tests and the files that grep finds using it.
    "persistence": Profile(
        modules=("fsm/persistence.py",),
        tests=(
            "tests/persistence",
            "tests/flow/test_statement_faults.py",
            "tests/flow/test_reliability.py",
            "tests/flow/test_faults.py",
            *FAST_ONLY,
        ),
        recheck=WHOLE,
    ),
    "cli": Profile(
        modules=("fsm/cli.py",),
        tests=(
            "tests/engine/test_cli.py",
            "tests/diagram/test_diagram_cli.py",
            "tests/diagram/test_diagram_drift.py",
            "tests/flow/test_cli.py",
            "tests/flow/test_cli_input.py",
            "tests/flow/test_operations.py",
            "tests/flow/test_relay_database.py",
            "tests/flow/test_secrets.py",
            "tests/persistence/test_persist_check.py",
            "tests/persistence/test_persist_cli.py",
            "tests/persistence/test_persist_diagram.py",
            "tests/relay/test_relay_cli.py",
            "tests/worker/test_worker_cli.py",
            "tests/worker/test_operator_race.py",
            *FAST_ONLY,
        ),
        recheck=WHOLE,
    ),
    "relay": Profile(
        modules=("fsm/relay.py",),
        tests=(
            "tests/relay",
            "tests/flow/test_async_flow.py",
            "tests/flow/test_async_relay.py",
            "tests/flow/test_failure_states.py",
            "tests/flow/test_faults.py",
            "tests/flow/test_kafka.py",
            "tests/flow/test_redrive.py",
            "tests/flow/test_relay_batch.py",
            "tests/flow/test_relay_database.py",
            "tests/flow/test_reliability.py",
            "tests/flow/test_statement_faults.py",
            "tests/persistence/test_persist_outbox.py",
            "tests/observe/test_summaries.py",
            *FAST_ONLY,
        ),
        recheck=WHOLE,
    ),
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
    return Profile(modules=tuple(only), tests=profile.tests, recheck=profile.recheck)


def folder_name(profile: str, only: Sequence[str]) -> str:
    """The run's folder under .mutation/: the profile's name, and the modules with --only."""
    names = [m.removeprefix("fsm/").removesuffix(".py").replace("*", "all") for m in only]
    return "-".join([profile, *(n.replace("/", ".") for n in names)])


def statuses(folder: Path) -> dict[str, dict[str, str]]:
    """Each mutated module's mutants and their mutmut status, from what mutmut left in mutants/."""
    found = {}
    for meta in sorted((folder / "mutants").glob("fsm/**/*.py.meta")):
        by_key = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(folder / "mutants"))[: -len(".meta")]
        found[module] = {name: status_by_exit_code[code] for name, code in by_key.items()}
    return found


def scores(folder: Path) -> list[Score]:
    """The score of each mutated module, from the results mutmut left in mutants/."""
    return [Score(module, Counter(s.values())) for module, s in statuses(folder).items()]


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


LIST_MUTANTS = """
import json, sys
from pathlib import Path
from mutmut.configuration import config
from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name
names = [
    get_mutant_name(path, name)
    for path in sorted(Path("fsm").rglob("*.py"))
    if config().should_mutate(path)
    for name in mutate_file_contents(str(path), path.read_text()).mutant_names
]
json.dump(names, sys.stdout)
"""
"""The names of all mutants mutmut makes of the run's modules, printed as JSON (run in the
run's folder, where mutmut reads its settings)."""


def sample(folder: Path, size: int, seed: int) -> list[str]:
    """`size` of the run's mutants drawn uniformly at random with `seed`: all names sorted,
    shuffled, the first `size` (so a larger size keeps a smaller one's sample)."""
    listed = subprocess.run(
        [sys.executable, "-c", LIST_MUTANTS], cwd=folder, capture_output=True, check=True
    )
    names = sorted(json.loads(listed.stdout))
    random.Random(seed).shuffle(names)
    return sorted(names[:size])


def in_sample(found: Mapping[str, Mapping[str, str]], names: Sequence[str]) -> list[Score]:
    """The score of each module over the sampled mutants only."""
    return [
        Score(module, Counter(s for name, s in mutants.items() if name in names))
        for module, mutants in found.items()
    ]


def survivors(folder: Path) -> list[str]:
    """The names of the mutants no test killed (survived, or no test ran them)."""
    return [
        name
        for mutants in statuses(folder).values()
        for name, status in mutants.items()
        if status not in KILLED
    ]


JUDGED = {*KILLED, "survived", "no tests"}
"""mutmut statuses of a mutant judged (a grown sample does not run them again)."""

RECHECK_AGAIN = {"survived", "no tests"}
"""The first stage's statuses that the second stage judges again (the others are killed, or
were never judged: mutmut stopped before them, or its run of them broke)."""


def recheck_command(tests: Sequence[str]) -> list[str]:
    """pytest as mutmut 3.8.1 runs it for one mutant (mutmut/runners/harness.py): in the run's
    mutants/ folder, stopping at the first failure."""
    return [
        *(sys.executable, "-m", "pytest", "--rootdir=.", "--tb=native", "-x", "-q"),
        *("-p", "no:randomly", "-p", "no:random-order", *tests, *PYTEST_ARGS),
    ]


def run_mutant(folder: Path, tests: Sequence[str], name: str, timeout: float) -> str:
    """The status of mutant `name` (mutmut's words) judged by `tests`; its output in
    recheck/NAME.log. `fail` makes every mutated function raise."""
    env = {**os.environ, "MUTANT_UNDER_TEST": name, "PY_IGNORE_IMPORTMISMATCH": "1"}
    (folder / "recheck").mkdir(exist_ok=True)
    with (folder / "recheck" / f"{name}.log").open("w") as out:
        # A session of its own, so a timeout ends the brokers and workers the tests started too.
        tests_run = subprocess.Popen(
            recheck_command(tests),
            cwd=folder / "mutants",
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            code = tests_run.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(tests_run.pid, signal.SIGKILL)
            tests_run.wait()
            return "timeout"
    # pytest's 2 is an error while collecting: a test module that runs the mutant on import.
    return "killed" if code == 2 else status_by_exit_code[code]


def recheck(folder: Path, tests: Sequence[str], jobs: int, timeout: float) -> dict[str, str]:
    """The second stage: each first-stage survivor run alone against `tests`, `jobs` at once.

    Each verdict is saved in recheck.json as it comes, and a name found there is not run again,
    so a stopped second stage goes on where it ended."""
    saved = folder / "recheck.json"
    done: dict[str, str] = json.loads(saved.read_text()) if saved.exists() else {}
    todo = [
        name
        for mutants in statuses(folder).values()
        for name, status in mutants.items()
        if status in RECHECK_AGAIN and name not in done
    ]
    if todo and run_mutant(folder, tests, "fail", timeout) not in KILLED:
        raise SystemExit(f"the tests do not run the mutated code: see {folder}/recheck/fail.log")
    with ThreadPoolExecutor(jobs) as pool:
        started = time.monotonic()
        verdicts = pool.map(lambda name: (name, run_mutant(folder, tests, name, timeout)), todo)
        for count, (name, status) in enumerate(verdicts, 1):
            done[name] = status
            saved.write_text(json.dumps(done, indent=1, sort_keys=True))
            took = (time.monotonic() - started) / 60
            print(f"{count}/{len(todo)} {name}: {status} ({took:.0f} min)", flush=True)
    return done


def stage_counts(mutants: Mapping[str, str], rechecked: Mapping[str, str]) -> Counter[str]:
    """How many of `mutants` (name: first-stage status) each stage killed, how many survived
    both, and how many are unjudged (never run by mutmut, or not rechecked yet)."""
    row = Counter[str]()
    for name, status in mutants.items():
        again = rechecked.get(name) if status in RECHECK_AGAIN else None
        row["mutants"] += 1
        row["stage 1"] += status in KILLED
        row["stage 2"] += again in KILLED
        row["not killed"] += again is not None and again not in KILLED
    row["unjudged"] = row["mutants"] - row["stage 1"] - row["stage 2"] - row["not killed"]
    return row


def report_stages(folder: Path, rechecked: Mapping[str, str]) -> list[str]:
    """One line per module, then the total: the mutants each stage killed, and the score."""
    rows = {module: stage_counts(m, rechecked) for module, m in statuses(folder).items()}
    rows["TOTAL"] = sum(rows.values(), Counter[str]())
    width = max(len(module) for module in rows)
    lines = [f"{'module':<{width}}  mutants  stage 1  stage 2  not killed  unjudged   score"]
    for module, row in rows.items():
        killed = row["stage 1"] + row["stage 2"]
        score = 100.0 * killed / row["mutants"] if row["mutants"] else 100.0
        lines.append(
            f"{module:<{width}}  {row['mutants']:>7}  {row['stage 1']:>7}  {row['stage 2']:>7}  "
            f"{row['not killed']:>10}  {row['unjudged']:>8}  {score:>5.1f}%"
        )
    return lines


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
    parser.add_argument(
        "--recheck",
        action="store_true",
        help="only the second stage, on the folder of an earlier run of the profile",
    )
    parser.add_argument(
        "--recheck-timeout",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="a second-stage run of one mutant taking longer counts as a timeout (killed)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        metavar="N",
        help="judge only N mutants drawn at random, by the first stage (no --recheck)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, metavar="S", help="the random seed of --sample"
    )
    args = parser.parse_args(argv)
    if args.sample is not None and args.recheck:
        raise SystemExit("--sample judges by the first stage only: no --recheck")
    name = folder_name(args.profile, args.only)
    if args.sample is not None:
        name += f"-sample-seed{args.seed}"
    folder = ROOT / ".mutation" / name
    profile = PROFILES[args.profile]
    if args.recheck and not profile.recheck:
        raise SystemExit(f"the {args.profile} profile has no second stage")
    if not args.recheck:
        grow = args.sample is not None and (folder / "sample.json").exists()
        if not grow:
            prepare(folder, narrowed(profile, args.only) if args.only else profile)
        command = [str(Path(sys.executable).with_name("mutmut")), "run"]
        if args.max_children is not None:
            command += ["--max-children", str(args.max_children)]
        todo = []
        if args.sample is not None:
            chosen = sample(folder, args.sample, args.seed)
            (folder / "sample.json").write_text(json.dumps(chosen, indent=1))
            judged = {n for m in statuses(folder).values() for n, s in m.items() if s in JUDGED}
            todo = [n for n in chosen if n not in judged]
            command += todo
        log = folder / "mutmut.log"
        if todo or args.sample is None:
            with log.open("a" if grow else "w") as out:
                done = subprocess.run(command, cwd=folder, stdout=out, stderr=out, env=os.environ)
            if done.returncode != 0 or not scores(folder):
                tail = log.read_text()[-3000:]
                print(f"{tail}\nmutmut failed (exit {done.returncode}); its output: {log}")
                return 1
    found = scores(folder)
    if not found:
        print(f"no mutmut results in {folder}")
        return 1
    left = survivors(folder)
    if args.sample is not None:
        chosen = json.loads((folder / "sample.json").read_text())
        found = in_sample(statuses(folder), chosen)
        left = [name for name in left if name in chosen]
    print("\n".join(report(found)))
    if profile.recheck and args.sample is None:
        jobs = args.max_children or os.cpu_count() or 1
        rechecked = recheck(folder, profile.recheck, jobs, args.recheck_timeout)
        print("\n".join(["after the second stage:", *report_stages(folder, rechecked)]))
        left = [name for name in left if rechecked.get(name) not in KILLED]
    if args.survivors:
        print("\n".join(["not killed:", *left]))
    if args.fail_under is None:
        return 0
    score = overall(found).percent
    verdict = "is under" if score < args.fail_under else "reaches"
    print(f"mutation score {score:.1f}% {verdict} the required {args.fail_under:g}%")
    return 1 if score < args.fail_under else 0


if __name__ == "__main__":
    sys.exit(main())
