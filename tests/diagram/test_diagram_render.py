"""Rendering through a real Graphviz program: SVG and PNG come out, and a missing one is named."""

from __future__ import annotations

import importlib
import os
import stat
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

from fsm.diagram import (
    DiagramError,
    RendererNotFound,
    build_graph,
    diagram,
    find_renderer,
    render,
)
from fsm.diagram.model import TIMES
from fsm.examples import ping
from tests.diagram.diagram_machines import flow

render_module = importlib.import_module("fsm.diagram.render")
"""The module (`fsm.diagram.render` is also the name of its function)."""

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(svg: bytes) -> list[str]:
    return [text.text or "" for text in ET.fromstring(svg).iter(f"{SVG}text")]


def program(folder: Path, name: str, script: str) -> Path:
    """An executable shell script `folder/name` running `script`."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


ECHO_ARGS = 'echo "$@"'
"""A stand-in renderer that prints the options it was given."""


@pytest.fixture
def no_renderer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine with neither dot nor graphviz-pure: empty PATH, a Python living elsewhere."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("FSM_DOT", raising=False)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))


class TestSvg:
    """A real SVG document comes out, naming every state and row."""

    def test_every_state_and_label_appears_as_text(self) -> None:
        """The SVG parses as XML and holds each state's name and each row's label."""
        svg = render(build_graph(flow), "svg")
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg"
        texts = svg_texts(svg)
        for state in flow.states:
            assert state.name.name in texts
        for label in ("StatusUpdated", "relay [attempts_left]", "do / publish"):
            assert label in texts

    def test_a_run_overlay_is_drawn(self) -> None:
        """The counts and the current-state mark of a run reach the picture."""
        run = ping.start()
        for event in ("start", "pause", "start"):
            run.send(event)
        texts = svg_texts(render(build_graph(ping, highlight=run), "svg"))
        assert {f"start {TIMES}2", f"pause {TIMES}1", "(current)"} <= set(texts)

    def test_output_is_byte_stable(self) -> None:
        """Rendering twice gives the same bytes, which the drift check relies on."""
        assert diagram(flow, "svg") == diagram(flow, "svg")


class TestPng:
    """PNG output is a real image."""

    def test_png_has_a_signature_and_a_size(self) -> None:
        """The bytes start with the PNG signature and the header gives a wide, short picture."""
        png = diagram(flow, "png")
        assert isinstance(png, bytes)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > height > 100


class TestFindRenderer:
    """Which program draws: an explicit one, $FSM_DOT, dot, then graphviz-pure."""

    def test_graphviz_pure_is_found_beside_python_without_path(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """An unactivated virtual environment still finds its graphviz-pure."""
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.delenv("FSM_DOT", raising=False)
        found = Path(find_renderer())
        assert found.name == "graphviz-pure"
        assert found.parent == Path(sys.executable).parent

    def test_missing_renderer_says_what_to_install(self, no_renderer: None) -> None:
        """With no program at all, SVG fails naming the extra to install."""
        with pytest.raises(RendererNotFound) as caught:
            diagram(ping, "svg")
        assert str(caught.value) == (
            "no Graphviz program to render SVG/PNG: pip install 'fsm-orchestrator[diagrams]' "
            "(provides graphviz-pure) or install Graphviz's dot; DOT and Mermaid output need "
            "no program"
        )

    def test_dot_on_the_path_comes_before_graphviz_pure(
        self, no_renderer: None, tmp_path: Path
    ) -> None:
        """Graphviz's own dot, found on PATH, is used ahead of graphviz-pure."""
        program(tmp_path, "graphviz-pure", ECHO_ARGS)
        dot = program(tmp_path, "dot", ECHO_ARGS)
        assert find_renderer() == str(dot)

    def test_graphviz_pure_on_the_path(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """Without dot, and with no graphviz-pure beside Python, the one on PATH is used."""
        (tmp_path / "bin").mkdir()
        pure = program(tmp_path / "bin", "graphviz-pure", ECHO_ARGS)
        monkeypatch.setenv("PATH", str(tmp_path / "bin"))
        monkeypatch.delenv("FSM_DOT", raising=False)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
        assert find_renderer() == str(pure)

    def test_a_graphviz_pure_beside_python_must_be_executable(
        self, no_renderer: None, tmp_path: Path
    ) -> None:
        """A file of that name that cannot be run is not a renderer."""
        (tmp_path / "graphviz-pure").write_text("not a program")
        with pytest.raises(RendererNotFound, match="no Graphviz program"):
            find_renderer()

    def test_on_windows_graphviz_pure_is_an_exe(
        self, no_renderer: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Beside a Windows Python the program is graphviz-pure.exe."""
        pure = program(tmp_path, "graphviz-pure.exe", ECHO_ARGS)
        # The module's `os` says Windows; pathlib, which reads the real one, is left alone.
        windows = SimpleNamespace(**{**vars(os), "name": "nt"})
        monkeypatch.setattr(render_module, "os", windows)
        assert find_renderer() == str(pure)

    def test_dot_and_mermaid_need_no_renderer(self, no_renderer: None) -> None:
        """Text formats still work on a machine without any Graphviz program."""
        assert str(diagram(ping, "dot")).startswith("digraph ping {")
        assert "stateDiagram-v2" in str(diagram(ping, "mermaid"))

    def test_an_explicit_program_must_exist(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A named program or $FSM_DOT that is not there is reported as such."""
        with pytest.raises(RendererNotFound, match="program 'no-such-dot' is not an executable"):
            find_renderer("no-such-dot")
        monkeypatch.setenv("FSM_DOT", "no-such-dot")
        with pytest.raises(RendererNotFound, match=r"\$FSM_DOT 'no-such-dot'"):
            find_renderer()

    def test_a_failing_program_is_reported_with_its_message(self, tmp_path: Path) -> None:
        """A renderer that exits non-zero gives its first stderr line, not a traceback."""
        script = tmp_path / "broken-dot"
        script.write_text("#!/bin/sh\necho 'Error: syntax error in line 1' >&2\nexit 1\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        with pytest.raises(DiagramError, match="broken-dot could not render svg: Error: syntax"):
            render(build_graph(ping), "svg", program=str(script))

    def test_only_svg_and_png_are_rendered(self) -> None:
        """render() refuses text formats; diagram() refuses unknown ones, listing the valid."""
        with pytest.raises(DiagramError, match="formats: svg, png"):
            render(build_graph(ping), "dot")
        with pytest.raises(DiagramError, match="unknown format 'gif'; formats: svg, png, dot"):
            diagram(ping, "gif")

    def test_fsm_dot_is_used(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
        """The program $FSM_DOT names runs ahead of dot and graphviz-pure."""
        script = tmp_path / "my-dot"
        script.write_text("#!/bin/sh\necho '<svg xmlns=\"http://www.w3.org/2000/svg\"/>'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("FSM_DOT", str(script))
        assert diagram(ping, "svg") == b'<svg xmlns="http://www.w3.org/2000/svg"/>\n'


class TestRunningTheProgram:
    """What the program is asked for, and each way it can fail, as one DiagramError."""

    def test_png_is_asked_for_at_144_dpi_and_svg_at_the_default(self, tmp_path: Path) -> None:
        """PNG is drawn at 1.5 times Graphviz's 96 dpi; SVG, a vector, gets no dpi."""
        echo = str(program(tmp_path, "echo-dot", ECHO_ARGS))
        assert render(build_graph(ping), "png", program=echo) == b"-Tpng -Gdpi=144\n"
        assert render(build_graph(ping), "svg", program=echo) == b"-Tsvg\n"

    def test_diagram_draws_svg_by_default_with_the_program_given(self, tmp_path: Path) -> None:
        """`diagram(machine)` is an SVG; `program=` picks what draws it."""
        echo = str(program(tmp_path, "echo-dot", ECHO_ARGS))
        assert diagram(ping, program=echo) == b"-Tsvg\n"
        assert diagram(ping, "png", program=echo) == b"-Tpng -Gdpi=144\n"

    def test_a_program_that_hangs_is_stopped(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After TIMEOUT_SECONDS the program is given up on, and the error says so."""
        slow = program(tmp_path, "slow-dot", "exec sleep 10")
        monkeypatch.setattr(render_module, "TIMEOUT_SECONDS", 0.5)
        with pytest.raises(DiagramError) as caught:
            render(build_graph(ping), "svg", program=str(slow))
        message = str(caught.value)
        assert message.startswith(f"running {slow} failed: Command ")
        assert message.endswith("timed out after 0.5 seconds")

    def test_output_with_a_failing_exit_status_is_an_error(self, tmp_path: Path) -> None:
        """A program that wrote something and then failed did not render."""
        partial = program(tmp_path, "partial-dot", "echo '<svg'; echo 'Error: bad' >&2; exit 1")
        with pytest.raises(DiagramError) as caught:
            render(build_graph(ping), "svg", program=str(partial))
        assert str(caught.value) == "partial-dot could not render svg: Error: bad"

    def test_no_output_and_no_message(self, tmp_path: Path) -> None:
        """A program that succeeds silently is an error naming its exit status."""
        silent = program(tmp_path, "silent-dot", "exit 0")
        with pytest.raises(DiagramError) as caught:
            render(build_graph(ping), "png", program=str(silent))
        assert str(caught.value) == "silent-dot could not render png: exit status 0, no output"

    def test_a_message_that_is_not_utf8(self, tmp_path: Path) -> None:
        """Bytes that are not UTF-8 in the program's message are replaced, not an error."""
        garbled = program(tmp_path, "garbled-dot", r"printf '\377 broken\n' >&2; exit 3")
        with pytest.raises(DiagramError) as caught:
            render(build_graph(ping), "svg", program=str(garbled))
        assert str(caught.value) == "garbled-dot could not render svg: \ufffd broken"
