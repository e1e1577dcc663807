"""Rendering to files: DOT through a Graphviz program to SVG/PNG, and the one-call `diagram()`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from fsm.definition import Machine
from fsm.diagram.dot import INSTALL_HINT, to_dot
from fsm.diagram.mermaid import to_mermaid
from fsm.diagram.model import DiagramGraph, Highlight, build_graph
from fsm.errors import DiagramError, RendererNotFound

FORMATS = ("svg", "png", "dot", "mermaid")
"""Every format `diagram()` and `fsm diagram` produce; svg and png need a Graphviz program."""

PROGRAM_ENV = "FSM_DOT"
"""An environment variable naming the program to use instead of the search in `find_renderer`."""

TIMEOUT_SECONDS = 60.0

PNG_DPI = 144
"""PNGs are drawn at 1.5 times Graphviz's 96 dpi, so labels stay sharp on today's screens."""


def find_renderer(program: str | None = None) -> str:
    """The path of a program that renders DOT: `program`, $FSM_DOT, `dot`, else `graphviz-pure`.

    `graphviz-pure` (installed by the `diagrams` extra) is looked for next to the running
    Python first, so a virtual environment works without being activated.
    """
    wanted = program or os.environ.get(PROGRAM_ENV)
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            source = "program" if program else f"${PROGRAM_ENV}"
            raise RendererNotFound(f"{source} {wanted!r} is not an executable program")
        return found
    found = shutil.which("dot")
    if found is not None:
        return found
    beside = Path(sys.executable).parent / _executable("graphviz-pure")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("graphviz-pure")
    if found is not None:
        return found
    raise RendererNotFound(
        f"no Graphviz program to render SVG/PNG: {INSTALL_HINT} (provides graphviz-pure) "
        "or install Graphviz's dot; DOT and Mermaid output need no program"
    )


def _executable(name: str) -> str:
    return f"{name}.exe" if os.name == "nt" else name


def render(graph: DiagramGraph, format: str, *, program: str | None = None) -> bytes:
    """The graph as SVG or PNG bytes, drawn by the program `find_renderer` picks."""
    if format not in ("svg", "png"):
        raise DiagramError(f"cannot render {format!r} with Graphviz; formats: svg, png")
    source = to_dot(graph)
    path = find_renderer(program)
    try:
        done = subprocess.run(
            [path, f"-T{format}", *([f"-Gdpi={PNG_DPI}"] if format == "png" else [])],
            input=source.encode(),
            capture_output=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise DiagramError(f"running {path} failed: {error}") from error
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        detail = reason[0] if reason else f"exit status {done.returncode}, no output"
        raise DiagramError(f"{Path(path).name} could not render {format}: {detail}")
    return done.stdout


def diagram(
    machine: Machine[Any],
    format: str = "svg",
    *,
    highlight: Highlight | None = None,
    program: str | None = None,
) -> str | bytes:
    """The machine drawn in `format`: text for dot and mermaid, bytes for svg and png."""
    if format not in FORMATS:
        raise DiagramError(f"unknown format {format!r}; formats: {', '.join(FORMATS)}")
    graph = build_graph(machine, highlight=highlight)
    if format == "dot":
        return to_dot(graph)
    if format == "mermaid":
        return to_mermaid(graph)
    return render(graph, format, program=program)
