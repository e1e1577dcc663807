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
