"""diagrams/ never drifts from the definitions, and the diagram code needs graphviz only for DOT."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsm import Machine, State
from fsm.cli import load_machine
from fsm.diagram import DiagramError
from fsm.diagram.shipped import (
    INDEX,
    file_stem,
    load_config,
    render_shipped,
    same_diagram,
    stale_shipped,
    svg_content,
    write_shipped,
)
from fsm.examples import ping

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


def from_another_renderer(svg: bytes) -> bytes:
    """The same picture as another Graphviz build signs it (so it is compared by content)."""
    other = svg.replace(b"(graphviz-pure)", b"(Debian)")
    assert other != svg
    return other


def edited(svg: bytes, after: bytes, old: bytes, new: bytes) -> bytes:
    """`svg` with the first `old` that follows `after` made `new`."""
    start = svg.index(after)
    at = svg.index(old, start)
    return svg[:at] + new + svg[at + len(old) :]


class TestSvgContent:
    """What svg_content compares: every group's title, texts and colours, links included."""

    @pytest.fixture
    def committed(self) -> bytes:
        """hold's picture: two of its states have a description, drawn inside a link."""
        svg = (ROOT / "diagrams" / "hold.svg").read_bytes()
        assert b'<g id="a_node2"><a xlink:title=' in svg
        return svg

    @pytest.mark.parametrize(
        ("after", "old", "new"),
        [
            # The graph's own label, its title text.
            (b"<title>hold</title>", b">hold</text>", b">held</text>"),
            # A state's title alone, then its text alone.
            (b"<!-- captured -->", b"<title>captured</title>", b"<title>kept</title>"),
            (b"<title>captured</title>", b">captured</text>", b">kept</text>"),
            # A row's label.
            (b"<title>authorized&#45;&gt;captured</title>", b">capture</text>", b">keep</text>"),
            # A state's fill, then its border, each a colour found elsewhere in the picture.
            (b"<title>captured</title>", b'fill="white"', b'fill="#ffebee"'),
            (b"<title>captured</title>", b'stroke="#37474f"', b'stroke="#c62828"'),
            # Inside a state's link (its description): its text, and its border's colour.
            (b"<title>authorized</title>", b">authorized</text>", b">approved</text>"),
            (b"<title>authorized</title>", b'stroke="#37474f"', b'stroke="#c62828"'),
        ],
    )
    def test_each_change_another_renderer_draws_is_drift(
        self, committed: bytes, after: bytes, old: bytes, new: bytes
    ) -> None:
        """A text, title or colour changed anywhere in the picture is a different picture."""
        other = from_another_renderer(committed)
        assert same_diagram("hold.svg", committed, other)
        changed = edited(other, after, old, new)
        assert not same_diagram("hold.svg", committed, changed)

    def test_svgs_without_a_generator_are_compared_exactly(self) -> None:
        """Two SVGs that name no generator count as from the same one: bytes decide."""
        one = b'<svg xmlns="http://www.w3.org/2000/svg"><g class="graph"/></svg>'
        two = b'<svg xmlns="http://www.w3.org/2000/svg"><g class="graph" /></svg>'
        assert svg_content(one) == svg_content(two)
        assert not same_diagram("x.svg", one, two)

    def test_not_an_svg(self) -> None:
        """Something that is not XML is a DiagramError saying why."""
        with pytest.raises(DiagramError) as caught:
            svg_content(b"not xml")
        assert str(caught.value) == "not an SVG document: syntax error: line 1, column 0"


class TestConfig:
    """[tool.fsm] in the nearest pyproject.toml, and what is wrong with it."""

    def test_no_pyproject(self, tmp_path: Path) -> None:
        """Without a pyproject.toml at or above the folder, the error says what to write."""
        with pytest.raises(DiagramError) as caught:
            load_config(tmp_path)
        assert str(caught.value) == (
            f"no pyproject.toml in {tmp_path} or above; list the shipped machines there as "
            '[tool.fsm] diagrams = ["MODULE:ATTR", ...]'
        )

    def test_unreadable_toml(self, tmp_path: Path) -> None:
        """A pyproject.toml that is not TOML is named, with the parser's reason."""
        (tmp_path / "pyproject.toml").write_text("[tool.fsm\n")
        with pytest.raises(DiagramError) as caught:
            load_config(tmp_path)
        assert str(caught.value).startswith(f"cannot read {tmp_path / 'pyproject.toml'}: Expected")

    def test_an_empty_list(self, tmp_path: Path) -> None:
        """`diagrams = []` ships nothing: it is refused like a missing list."""
        (tmp_path / "pyproject.toml").write_text("[tool.fsm]\ndiagrams = []\n")
        with pytest.raises(DiagramError, match=r"needs \[tool.fsm\] diagrams = "):
            load_config(tmp_path)

    def test_diagrams_dir(self, tmp_path: Path) -> None:
        """`diagrams-dir` moves the folder, relative to the pyproject.toml."""
        (tmp_path / "pyproject.toml").write_text(
            '[tool.fsm]\ndiagrams = ["fsm.examples:ping"]\ndiagrams-dir = "docs/pictures"\n'
        )
        config = load_config(tmp_path)
        assert config == type(config)(("fsm.examples:ping",), tmp_path / "docs" / "pictures")

    def test_diagrams_dir_must_be_a_string(self, tmp_path: Path) -> None:
        """Any other value is named as the mistake."""
        path = tmp_path / "pyproject.toml"
        path.write_text('[tool.fsm]\ndiagrams = ["fsm.examples:ping"]\ndiagrams-dir = 3\n')
        with pytest.raises(DiagramError) as caught:
            load_config(tmp_path)
        assert str(caught.value) == f"{path}: [tool.fsm] diagrams-dir must be a string"


class TestShippedFiles:
    """File names, the files rendered for the shipped machines, and writing them."""

    @pytest.mark.parametrize(
        ("name", "stem"),
        [
            ("user_status_update", "user_status_update"),
            ("User Status!", "User-Status"),
            ("-.v1.2-.", "v1.2"),
            ("Xray", "Xray"),
            ("!!!", "machine"),
        ],
    )
    def test_file_stem(self, name: str, stem: str) -> None:
        """Runs of unsafe characters become one dash, leading and trailing dashes and dots
        go, and a name with nothing safe in it is `machine`."""
        states = [State("a", initial=True), State("b", final=True)]
        machine = Machine(name, states=states, transitions=[("a", "go", "b")])
        assert file_stem(machine) == stem

    def test_two_machines_with_one_file_name(self, tmp_path: Path) -> None:
        """Two specs whose machines would write the same files are refused, both named."""
        echo = tmp_path / "echo-dot"
        echo.write_text('#!/bin/sh\necho "$@"\n')
        echo.chmod(echo.stat().st_mode | stat.S_IXUSR)
        pairs = [("fsm.examples:ping", ping), ("other:ping", ping)]
        with pytest.raises(DiagramError) as caught:
            render_shipped(pairs, program=str(echo))
        assert str(caught.value) == (
            "other:ping and fsm.examples:ping would both write diagrams/ping.*; "
            "give the machines different names"
        )
        files = render_shipped(pairs[:1], program=str(echo))
        assert files["ping.svg"] == b"-Tsvg\n"  # drawn by the program given

    def test_write_creates_folders_and_overwrites(self, tmp_path: Path) -> None:
        """The folder and its parents are made; writing again replaces the files."""
        folder = tmp_path / "docs" / "diagrams"
        assert write_shipped({"a.mmd": b"one", INDEX: b"index"}, folder) == [
            folder / "a.mmd",
            folder / INDEX,
        ]
        assert write_shipped({"a.mmd": b"two"}, folder) == [folder / "a.mmd"]
        assert (folder / "a.mmd").read_bytes() == b"two"


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
