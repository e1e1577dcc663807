"""Users' type checkers see an Enum-state machine typed by its Enum."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


class TestTyping:
    """The public API is precise enough for mypy --strict."""

    def test_enum_machine_is_typed_by_its_enum(self) -> None:
        """mypy --strict accepts assert_type(run.state, Light) on an Enum machine."""
        sample = Path(__file__).with_name("typing_enum.py")
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def test_steps_objects_are_checked_against_the_protocol(self) -> None:
        """Machine[S, Steps]: mypy flags a collaborator lacking what Steps says, at each
        place a run is given it, and nowhere else."""
        sample = Path(__file__).with_name("typing_steps.py")
        done = subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(sample)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = sample.read_text().splitlines()
        expected = {n for n, line in enumerate(lines, 1) if line.endswith("# mypy: error")}
        flagged = {
            int(line.split(":")[1])
            for line in done.stdout.splitlines()
            if ": error:" in line and line.split(":")[0].endswith(sample.name)
        }
        assert len(expected) == 3
        assert flagged == expected, done.stdout
