"""The toolkit's optional libraries are imported only where used."""

from __future__ import annotations

import subprocess
import sys

BLOCKER = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"hypothesis", "statemachine", "pytest", "_pytest"}:
            raise ImportError(f"{name} is blocked for this test")
        return None

sys.meta_path.insert(0, Block())
import fsm, fsm.testing, fsm.paths, fsm.coverage, fsm.strategies, fsm.interop
from fsm.examples import ping
from fsm.paths import replay, row_paths
for path in row_paths(ping):
    replay(path)
try:
    fsm.interop.to_statemachine(ping)
except ImportError as error:
    print("interop:", error)
"""


class TestOptionalDependencies:
    """Stepper, paths and coverage work with hypothesis, python-statemachine and pytest absent."""

    def test_import_and_use_without_the_extras(self) -> None:
        """Importing every toolkit module needs none of them; exporting says what is missing."""
        result = subprocess.run(
            [sys.executable, "-c", BLOCKER], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "interop: statemachine is blocked for this test"
