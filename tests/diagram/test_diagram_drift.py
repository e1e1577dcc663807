"""diagrams/ never drifts from the definitions, and the diagram code needs graphviz only for DOT."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm.cli import load_machine
from fsm.diagram.shipped import (
    load_config,
    render_shipped,
    same_diagram,
    stale_shipped,
    svg_content,
)

ROOT = Path(__file__).resolve().parents[2]


class TestCommittedDiagrams:
    """Every shipped machine's committed SVG, Mermaid and DOT match what it renders now."""

    def test_diagrams_folder_matches_the_definitions(self) -> None:
        """Fails when a machine changed without `fsm diagram --all` being run and committed."""
        config = load_config(ROOT)
        assert config.directory == ROOT / "diagrams"
        files = render_shipped([(spec, load_machine(spec)) for spec in config.specs])
        assert stale_shipped(files, config.directory) == []

    def test_the_shipped_list_includes_the_examples(self) -> None:
        """The examples are shipped, so their pictures are checked too."""
        assert {"fsm.examples:ping", "fsm.examples:update"} <= set(load_config(ROOT).specs)


class TestSvgComparison:
    """SVG from another Graphviz build is compared by content; the same build byte for byte."""

    @pytest.fixture
    def committed(self) -> bytes:
        return (ROOT / "diagrams" / "update.svg").read_bytes()

    def test_moved_coordinates_from_another_renderer_still_match(self, committed: bytes) -> None:
        """Another generator that only places things differently (or spells no paint
        `transparent`, as Graphviz 2.x does) counts as the same picture."""
        other = committed.replace(b"(graphviz-pure)", b"(Debian)")
        other = re.sub(rb'x="([0-9.]+)"', lambda m: b'x="' + m.group(1) + b'1"', other)
        other = other.replace(b'stroke="none"', b'stroke="transparent"')
        assert other != committed
        assert same_diagram("update.svg", committed, other)

    def test_a_changed_label_from_another_renderer_is_drift(self, committed: bytes) -> None:
        """Another generator's picture with a different text is drift."""
        other = committed.replace(b"(graphviz-pure)", b"(Debian)").replace(b">failed<", b">lost<")
        assert svg_content(other) != svg_content(committed)
        assert not same_diagram("update.svg", committed, other)

    def test_the_same_renderer_is_compared_exactly(self, committed: bytes) -> None:
        """From the same generator, even a moved coordinate is drift."""
        other = committed.replace(b'cx="', b'cx="1', 1)
        assert not same_diagram("update.svg", committed, other)

    def test_text_is_compared_exactly(self) -> None:
        """Mermaid and DOT files must match to the byte."""
        text = (ROOT / "diagrams" / "update.mmd").read_bytes()
        assert same_diagram("update.mmd", text, text)
        assert not same_diagram("update.mmd", text, text + b"\n")


class TestOptionalDependency:
    """Without the graphviz package, `import fsm` and Mermaid work and DOT says what to install."""

    def test_without_graphviz(self) -> None:
        """A Python where `import graphviz` fails still imports fsm and draws Mermaid."""
        code = textwrap.dedent(
            """
            import sys
            sys.modules["graphviz"] = None  # makes `import graphviz` raise ImportError
            import fsm, fsm.cli, fsm.diagram
            from fsm.diagram import DiagramError, diagram
            from fsm.examples import update
            assert "stateDiagram-v2" in diagram(update, "mermaid")
            try:
                diagram(update, "dot")
            except DiagramError as error:
                print(error)
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "DOT output needs the graphviz package: pip install" in done.stdout

    def test_importing_fsm_loads_no_optional_library(self) -> None:
        """Importing fsm, its CLI and its diagram package loads none of the optional libraries."""
        optional = ("graphviz", "statemachine", "hypothesis")
        code = (
            "import sys, fsm, fsm.cli, fsm.diagram; "
            f"print(sorted(m for m in {optional!r} if m in sys.modules))"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert done.stdout.strip() == "[]"
