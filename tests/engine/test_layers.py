"""The engine's dependency direction: fsm/ never imports adapters or integrations."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import fsm

FORBIDDEN = ("adapters", "sqlalchemy", "kafka", "tenacity", "userstatus")


class TestLayers:
    """fsm/ stays free of adapters, SQLAlchemy and Kafka."""

    def test_no_forbidden_imports(self) -> None:
        """No module under fsm/ imports an adapter or integration library, even lazily."""
        offenders = []
        for path in Path(fsm.__file__).parent.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
        assert offenders == []

    def test_engine_imports_with_no_integration_installed(self) -> None:
        """`import fsm` and a run work when every optional integration is missing."""
        blocked = ", ".join(repr(n) for n in (*FORBIDDEN, "graphviz", "statemachine", "hypothesis"))
        code = (
            "import sys\n"
            f"for name in ({blocked},): sys.modules[name] = None\n"
            "import fsm, fsm.cli\n"
            "from fsm.examples import ping\n"
            "assert ping.start().send('start').send('finish').finished\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
