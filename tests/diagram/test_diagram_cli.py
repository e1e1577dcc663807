"""`fsm diagram`: the four formats for one machine, --all for the shipped ones, one-line errors."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fsm.cli import main
from fsm.diagram.model import TIMES

SVG = "{http://www.w3.org/2000/svg}"


def fails_in_one_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the command, expect a non-zero exit and a one-line message; return the message."""
    status = main(argv)
    out, err = capsys.readouterr()
    assert status != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


class TestOneMachine:
    """`fsm diagram MODULE:ATTR` writes each format to stdout or a file."""

    def test_mermaid_is_the_default_on_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Without --format or --output, Mermaid text goes to stdout."""
        assert main(["diagram", "fsm.examples:ping"]) == 0
        out = capsys.readouterr().out
        assert "stateDiagram-v2" in out and "busy --> done : finish [ok]" in out

    def test_dot_on_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--format dot prints DOT source."""
        assert main(["diagram", "fsm.examples:update", "--format", "dot"]) == 0
        assert capsys.readouterr().out.startswith("digraph update {")

    def test_svg_on_stdout(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--format svg prints an SVG document."""
        assert main(["diagram", "fsm.examples:update", "--format", "svg"]) == 0
        root = ET.fromstring(capsys.readouterr().out)
        texts = {t.text for t in root.iter(f"{SVG}text")}
        assert {"received", "updated", "failed", "UserNotFound"} <= texts

    def test_format_follows_the_output_suffix(
        self, capsys: pytest.CaptureFixture[str], tmp_path: Path
    ) -> None:
        """--output x.png writes a PNG, x.svg an SVG, x.mmd Mermaid, x.dot and x.gv DOT."""
        for name, start in [
            ("p.png", b"\x89PNG"),
            ("p.svg", b"<?xml"),
            ("p.mmd", b"---"),
            ("p.dot", b"digraph"),
            ("p.gv", b"digraph"),
        ]:
            target = tmp_path / name
            assert main(["diagram", "fsm.examples:ping", "--output", str(target)]) == 0
            assert target.read_bytes().startswith(start)
        assert "wrote" in capsys.readouterr().out

    def test_format_wins_over_the_suffix(self, tmp_path: Path) -> None:
        """An explicit --format decides, whatever the file is called."""
        target = tmp_path / "ping.txt"
        assert main(["diagram", "fsm.examples:ping", "--format", "dot", "-o", str(target)]) == 0
        assert target.read_text().startswith("digraph ping")


class TestRunPath:
    """--send draws the path of a new in-memory run, the way a stored run will be drawn."""

    def test_events_sent_are_counted(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Each row the run fired carries its count; the current state is marked."""
        assert main(["diagram", "fsm.examples:ping", "--send", "start", "pause", "start"]) == 0
        out = capsys.readouterr().out
        assert f"idle --> busy : start {TIMES}2" in out
        assert "class busy current" in out

    def test_context_drives_the_actions(self, capsys: pytest.CaptureFixture[str]) -> None:
        """--context reaches the actions, so the outcome they return picks the path."""
        argv = ["diagram", "fsm.examples:update", "--format", "dot", "--send", "--context"]
        assert main([*argv, '{"user_id": 9}']) == 0
        out = capsys.readouterr().out
        assert f'label="UserNotFound {TIMES}1"' in out
        assert "(current)" in out

    def test_a_bad_event_or_context(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An event the run does not accept, or a context that is no object, is one line."""
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--send", "finish"])
        assert "event 'finish' is not allowed here; allowed: 'start'" in line
        line = fails_in_one_line(
            capsys, ["diagram", "fsm.examples:ping", "--send", "--context", "[1]"]
        )
        assert line == """fsm: error: --context must be a JSON object, for example '{"ok": true}'"""
        line = fails_in_one_line(
            capsys, ["diagram", "fsm.examples:ping", "--send", "--context", "{no"]
        )
        assert line.startswith("fsm: error: --context is not valid JSON: Expecting property name")
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--context", "{}"])
        assert line == "fsm: error: --context goes with --send"


class TestErrors:
    """Bad input gives one line and a non-zero exit, never a traceback."""

    def test_bad_module_path(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A module that does not exist is named."""
        line = fails_in_one_line(capsys, ["diagram", "no.such.module:flow"])
        assert line.startswith("fsm: error: cannot import module 'no.such.module'")

    def test_not_module_colon_attr(self, capsys: pytest.CaptureFixture[str]) -> None:
        """A spec without a colon says what is expected."""
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples"])
        assert "is not MODULE:ATTR" in line

    def test_missing_attribute(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An attribute the module lacks is named."""
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:pong"])
        assert "has no attribute 'pong'" in line

    def test_unknown_format(self, capsys: pytest.CaptureFixture[str]) -> None:
        """An unknown format lists the four that exist."""
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--format", "gif"])
        assert line == "fsm: error: unknown format 'gif'; formats: svg, png, dot, mermaid"

    def test_png_needs_a_file(self, capsys: pytest.CaptureFixture[str]) -> None:
        """PNG is not printed to a terminal."""
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--format", "png"])
        assert line == "fsm: error: png is binary: give --output FILE"

    def test_missing_renderer(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """With no Graphviz program, SVG fails saying what to install; Mermaid still works."""
        monkeypatch.setenv("PATH", str(tmp_path))
        monkeypatch.delenv("FSM_DOT", raising=False)
        monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--format", "svg"])
        assert "pip install 'fsm-orchestrator[diagrams]'" in line
        assert main(["diagram", "fsm.examples:ping", "--format", "mermaid"]) == 0

    def test_unwritable_output(self, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
        """A file in a missing folder is reported, not raised."""
        target = tmp_path / "missing" / "ping.svg"
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--output", str(target)])
        assert line == f"fsm: error: cannot write {target}: No such file or directory"

    def test_machine_or_all(self, capsys: pytest.CaptureFixture[str]) -> None:
        """Neither a machine nor --all, or both, is a usage error."""
        assert fails_in_one_line(capsys, ["diagram"]) == (
            "fsm: error: give the machine as MODULE:ATTR, or --all for every shipped machine"
        )
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--all"])
        assert "drop MODULE:ATTR" in line
        line = fails_in_one_line(capsys, ["diagram", "fsm.examples:ping", "--check"])
        assert line == "fsm: error: --check and --output-dir go with --all"
        line = fails_in_one_line(capsys, ["diagram", "--all", "--context", "{}"])
        assert line == "fsm: error: --context goes with --send"

    @pytest.mark.parametrize(
        "extra",
        [["--format", "svg"], ["--output", "x.svg"], ["--send", "start"], ["--run", "r1"]],
    )
    def test_all_with_a_one_machine_option(
        self, capsys: pytest.CaptureFixture[str], extra: list[str]
    ) -> None:
        """--all draws what [tool.fsm] names: each option for one machine is refused."""
        assert fails_in_one_line(capsys, ["diagram", "--all", *extra]) == (
            "fsm: error: --all draws every shipped machine: "
            "drop MODULE:ATTR, --format, --output, --send, --run"
        )


class TestAll:
    """`fsm diagram --all` draws the machines of [tool.fsm] diagrams; --check finds drift."""

    @pytest.fixture
    def project(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
        (tmp_path / "pyproject.toml").write_text(
            '[tool.fsm]\ndiagrams = ["fsm.examples:ping", "fsm.examples:update"]\n'
        )
        (tmp_path / "sub").mkdir()
        monkeypatch.chdir(tmp_path / "sub")
        return tmp_path

    def test_writes_svg_mermaid_dot_and_an_index(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """From a subfolder, the files land in diagrams/ beside the pyproject.toml."""
        assert main(["diagram", "--all"]) == 0
        names = sorted(path.name for path in (project / "diagrams").iterdir())
        assert names == [
            "README.md",
            "ping.dot",
            "ping.mmd",
            "ping.svg",
            "update.dot",
            "update.mmd",
            "update.svg",
        ]
        assert "wrote 7 files for 2 machines" in capsys.readouterr().out
        assert "![update](update.svg)" in (project / "diagrams" / "README.md").read_text()

    def test_check_passes_then_finds_each_kind_of_drift(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A fresh render matches; an edit, a deletion and a stray file are each reported."""
        assert main(["diagram", "--all"]) == 0
        capsys.readouterr()
        assert main(["diagram", "--all", "--check"]) == 0
        folder = project / "diagrams"
        assert capsys.readouterr().out == f"{folder}: 7 files match the definitions\n"
        (folder / "ping.mmd").write_text("stateDiagram-v2\n")
        (folder / "update.svg").unlink()
        (folder / "old.svg").write_text("<svg/>")
        capsys.readouterr()
        assert main(["diagram", "--all", "--check"]) == 1
        err = capsys.readouterr().err
        assert f"{folder / 'ping.mmd'} differs from what the definition renders now" in err
        assert f"{folder / 'update.svg'} is missing" in err
        assert f"{folder / 'old.svg'} is not rendered by any shipped machine" in err
        assert err.splitlines()[-1] == "fsm: run `fsm diagram --all` and commit the result"

    def test_output_dir_overrides_the_configured_folder(self, project: Path) -> None:
        """--output-dir writes elsewhere, and --check reads from there."""
        assert main(["diagram", "--all", "--output-dir", str(project / "out")]) == 0
        assert (project / "out" / "ping.svg").is_file()
        assert main(["diagram", "--all", "--check", "--output-dir", str(project / "out")]) == 0

    def test_an_output_dir_that_cannot_be_written(
        self, project: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A file where the folder should be is reported in one line, with the system's reason."""
        taken = project / "taken"
        taken.write_text("")
        line = fails_in_one_line(capsys, ["diagram", "--all", "--output-dir", str(taken)])
        assert line == f"fsm: error: cannot write into {taken}: File exists"

    def test_without_a_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A pyproject.toml without [tool.fsm] diagrams says what to add."""
        (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
        monkeypatch.chdir(tmp_path)
        line = fails_in_one_line(capsys, ["diagram", "--all"])
        assert 'needs [tool.fsm] diagrams = ["MODULE:ATTR", ...]' in line

    def test_a_bad_spec_in_the_config(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A shipped machine that cannot be imported is named, and nothing is written."""
        (tmp_path / "pyproject.toml").write_text('[tool.fsm]\ndiagrams = ["nowhere:flow"]\n')
        monkeypatch.chdir(tmp_path)
        line = fails_in_one_line(capsys, ["diagram", "--all"])
        assert "cannot import module 'nowhere'" in line
        assert not (tmp_path / "diagrams").exists()
