"""Every Python block of README.md and docs/*.md runs as written.

The blocks of a page run in order in one namespace, as a reader would paste them one after
the other; a block whose fence says ```python fragment (a sketch with `...` in it, or a
piece of the user's own code) is skipped, and only those are.
"""

from __future__ import annotations

import re
import sys
import types
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^( *)```python([^\n]*)\n(.*?)^\1```", flags=re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its fence's words, and its code, dedented."""

    page: Path
    line: int
    info: str
    code: str

    @property
    def fragment(self) -> bool:
        """The fence marks it as a fragment, not meant to run."""
        return "fragment" in self.info.split()

    def __str__(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The page's Python blocks, in order."""
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        indent = len(match.group(1))
        code = "".join(line[indent:] for line in match.group(3).splitlines(keepends=True))
        line = text.count("\n", 0, match.start()) + 1
        found.append(Block(page, line, match.group(2), code))
    return found


BLOCKS = [block for page in PAGES for block in blocks(page)]


def run(block: Block, namespace: dict[str, Any]) -> None:
    """Execute the block in `namespace`, reported under its page and line."""
    exec(compile(block.code, str(block), "exec"), namespace)


class TestDocumentation:
    """Each block executes after the ones before it on its page, and its tests pass."""

    def test_the_pages_have_blocks(self) -> None:
        """The extraction finds the blocks, and few fragments: each page's fragments are
        counted here, so marking one more is a choice made on purpose."""
        fragments = Counter(str(b.page.relative_to(ROOT)) for b in BLOCKS if b.fragment)
        assert fragments == {"docs/async.md": 1, "docs/persistence.md": 5}
        assert len(BLOCKS) >= 22
        assert sum(fragments.values()) * 3 < len(BLOCKS)

    @pytest.mark.parametrize("block", BLOCKS, ids=str)
    def test_block(self, block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Run the page's blocks up to this one (in a scratch folder), then every test_*
        function this block defines, with each of its parameters."""
        if block.fragment:
            pytest.skip(f"{block} is marked as a fragment")
        monkeypatch.chdir(tmp_path)  # blocks may write files (a SQLite database)
        module = types.ModuleType(f"docs_example_{block.line}")  # dataclasses look it up
        monkeypatch.setitem(sys.modules, module.__name__, module)
        namespace: dict[str, Any] = module.__dict__
        for earlier in blocks(block.page):
            if earlier.line == block.line:
                break
            if not earlier.fragment:
                run(earlier, namespace)
        before = set(namespace)
        run(block, namespace)
        for name in sorted(set(namespace) - before):
            function = namespace[name]
            if not name.startswith("test_") or not callable(function):
                continue
            marks = [m for m in getattr(function, "pytestmark", []) if m.name == "parametrize"]
            for value in marks[0].args[1] if marks else [None]:
                function(value) if marks else function()
