"""The project's committed diagrams: which machines, where they live, and whether they drifted."""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsm.definition import Machine
from fsm.diagram.dot import to_dot
from fsm.diagram.mermaid import to_mermaid
from fsm.diagram.model import build_graph
from fsm.diagram.render import render
from fsm.errors import DiagramError

SUFFIXES = (".svg", ".mmd", ".dot")
"""What is committed for each shipped machine: the picture, and the two texts it comes from."""

INDEX = "README.md"
_SVG = "{http://www.w3.org/2000/svg}"
_NO_PAINT = {"transparent": "none"}
"""Graphviz 2.x writes `transparent` where later builds write `none`: the same paint."""


@dataclass(frozen=True, slots=True)
class ShippedConfig:
    """The `[tool.fsm]` table of a pyproject.toml: the machines to draw and where to put them."""

    specs: tuple[str, ...]
    """The shipped machines as MODULE:ATTR."""
    directory: Path
    """Where their diagrams are committed (`diagrams-dir`, default `diagrams`), made absolute."""


def load_config(start: Path | None = None) -> ShippedConfig:
    """Read `[tool.fsm] diagrams = [...]` from the nearest pyproject.toml at or above `start`."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        path = folder / "pyproject.toml"
        if path.is_file():
            break
    else:
        raise DiagramError(
            f"no pyproject.toml in {here} or above; list the shipped machines there as "
            '[tool.fsm] diagrams = ["MODULE:ATTR", ...]'
        )
    try:
        table: Any = tomllib.loads(path.read_text()).get("tool", {}).get("fsm", {})
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise DiagramError(f"cannot read {path}: {error}") from error
    specs = table.get("diagrams")
    if not isinstance(specs, list) or not all(isinstance(s, str) for s in specs) or not specs:
        raise DiagramError(
            f'{path} needs [tool.fsm] diagrams = ["MODULE:ATTR", ...] listing the shipped machines'
        )
    directory = table.get("diagrams-dir", "diagrams")
    if not isinstance(directory, str):
        raise DiagramError(f"{path}: [tool.fsm] diagrams-dir must be a string")
    return ShippedConfig(tuple(specs), path.parent / directory)


def file_stem(machine: Machine[Any]) -> str:
    """The file name (without suffix) of a machine's diagrams: its name, made safe."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", machine.name).strip("-.") or "machine"


def render_shipped(
    machines: Sequence[tuple[str, Machine[Any]]], *, program: str | None = None
) -> dict[str, bytes]:
    """Every committed file for these (spec, machine) pairs: name -> content, index included."""
    files: dict[str, bytes] = {}
    owners: dict[str, str] = {}
    index = [
        "# Diagrams",
        "",
        "Rendered from the machines' definitions by `fsm diagram --all`; do not edit by hand.",
        "A test fails when a file here differs from what the definitions render now.",
        "",
    ]
    for spec, machine in machines:
        stem = file_stem(machine)
        if stem in owners:
            raise DiagramError(
                f"{spec} and {owners[stem]} would both write diagrams/{stem}.*; "
                "give the machines different names"
            )
        owners[stem] = spec
        graph = build_graph(machine)
        mermaid = to_mermaid(graph)
        files[f"{stem}.dot"] = to_dot(graph).encode()
        files[f"{stem}.mmd"] = mermaid.encode()
        files[f"{stem}.svg"] = render(graph, "svg", program=program)
        index += [f"## {machine.name}", "", f"`{spec}`", "", f"![{machine.name}]({stem}.svg)", ""]
        index += ["<details><summary>Mermaid</summary>", "", "```mermaid", mermaid.rstrip("\n")]
        index += ["```", "", "</details>", ""]
    files[INDEX] = "\n".join(index).encode()
    return files


def write_shipped(files: dict[str, bytes], directory: Path) -> list[Path]:
    """Write the files into `directory` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in files.items():
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


def stale_shipped(files: dict[str, bytes], directory: Path) -> list[str]:
    """One line per committed file that is missing, differs, or that no machine renders."""
    problems = []
    for name, content in files.items():
        path = directory / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif not same_diagram(name, path.read_bytes(), content):
            problems.append(f"{path} differs from what the definition renders now")
    if directory.is_dir():
        for path in sorted(directory.iterdir()):
            if path.suffix in SUFFIXES and path.name not in files:
                problems.append(f"{path} is not rendered by any shipped machine")
    return problems


def same_diagram(name: str, committed: bytes, rendered: bytes) -> bool:
    """True if the committed file says what the rendered one says.

    Text is compared exactly, and so is SVG from the same Graphviz build (graphviz-pure's
    output is byte-stable); SVG from another build is compared by `svg_content`.
    """
    if committed == rendered:
        return True
    if not name.endswith(".svg") or _generator(committed) == _generator(rendered):
        return False
    # Another Graphviz (dot instead of graphviz-pure, another version) places things a little
    # differently: compare what the picture says, not where it says it.
    return svg_content(committed) == svg_content(rendered)


def _generator(svg: bytes) -> bytes:
    found = re.search(rb"<!-- Generated by (.*?)\s*-->", svg, re.DOTALL)
    return found.group(1) if found else b""


def svg_content(svg: bytes) -> list[tuple[str, ...]]:
    """What an SVG from Graphviz shows, without coordinates: per node and edge, in order,
    its class, title, texts and colours."""
    try:
        root = ET.fromstring(svg)
    except ET.ParseError as error:
        raise DiagramError(f"not an SVG document: {error}") from error
    content = []
    for group in root.iter(f"{_SVG}g"):
        kind = group.get("class")
        if kind not in ("graph", "node", "edge"):
            continue
        # The graph's group holds every other group: only its own children belong to it.
        elements = list(group) if kind == "graph" else list(group.iter())
        title = group.findtext(f"{_SVG}title") or ""
        texts = [e.text or "" for e in elements if e.tag == f"{_SVG}text"]
        colours = sorted(
            {
                f"{attr}={_NO_PAINT.get(e.get(attr) or '', e.get(attr))}"
                for e in elements
                if e.tag != f"{_SVG}g"
                for attr in ("fill", "stroke")
                if e.get(attr) is not None
            }
        )
        content.append((kind, title, *texts, *colours))
    return content
