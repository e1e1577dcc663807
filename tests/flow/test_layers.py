"""The flow's dependency direction: adapters never import the flow; the flow's core no adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import adapters
import userstatus

WIRING = {"app.py", "demo.py", "cli.py", "sql.py", "fakes.py"}
"""The flow's modules that wire adapters together (the composition root) and its own
adapters (its users on SQLAlchemy and in memory)."""


def imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


class TestLayers:
    def test_adapters_do_not_import_the_flow(self) -> None:
        """adapters/ implements ports for any flow: it never imports userstatus."""
        offenders = [
            f"{path.relative_to(Path(adapters.__file__).parent)}: {name}"
            for path in Path(adapters.__file__).parent.rglob("*.py")
            for name in imports(path)
            if name.split(".")[0] == "userstatus"
        ]
        assert offenders == []

    def test_flow_core_uses_only_ports(self) -> None:
        """The domain, machines, manager, publisher, orchestrator and relay import no adapter."""
        forbidden = ("adapters", "sqlalchemy", "kafka", "tenacity")
        offenders = [
            f"{path.name}: {name}"
            for path in Path(userstatus.__file__).parent.glob("*.py")
            if path.name not in WIRING
            for name in imports(path)
            if name.split(".")[0] in forbidden
        ]
        assert offenders == []
