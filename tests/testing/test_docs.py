"""The examples of docs/testing.md run as written."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).parents[2] / "docs" / "testing.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


class TestDocumentation:
    """Each python block executes, and the tests it defines pass."""

    def test_there_are_examples(self) -> None:
        """The page has one block per tool."""
        assert len(BLOCKS) == 7

    @pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.splitlines()[0])
    def test_block(self, block: str) -> None:
        """Run the block, then every test_* function it defines, with its parameters."""
        namespace: dict[str, Any] = {}
        exec(compile(block, str(DOC), "exec"), namespace)
        for name, function in list(namespace.items()):
            if not name.startswith("test_"):
                continue
            marks = [m for m in getattr(function, "pytestmark", []) if m.name == "parametrize"]
            if marks:
                for value in marks[0].args[1]:
                    function(value)
            else:
                function()
