"""The Mermaid renderer: a DiagramGraph as `stateDiagram-v2` text, with no dependency."""

from __future__ import annotations

from fsm.diagram.model import DiagramGraph, DiagramNode

CLASSES = {
    "failure": "fill:#ffebee,stroke:#c62828,color:#b71c1c",
    "visited": "fill:#e3f2fd,stroke:#1565c0,color:#0d47a1,stroke-width:2px",
    "current": "fill:#fff59d,stroke:#1565c0,color:#0d47a1,stroke-width:3px",
    "currentFailure": "fill:#fff59d,stroke:#c62828,color:#b71c1c,stroke-width:3px",
    "unvisited": "fill:#ffffff,stroke:#b0bec5,color:#90a4ae",
}
"""Mermaid class definitions; each state gets at most one, see `_css_class`."""

# Mermaid reads these characters as syntax; its entity codes print them instead.
_ESCAPES = str.maketrans({"#": "#35;", ";": "#59;", "<": "#lt;", ">": "#gt;", '"': "#quot;"})


def to_mermaid(graph: DiagramGraph) -> str:
    """The graph as Mermaid: `[*]` marks the start and the finals, counts follow fired rows."""
    title = graph.name if graph.run_id is None else f"{graph.name} (run {graph.run_id})"
    lines = ["---", f"title: {_text(title)}", "---", "stateDiagram-v2", "    direction LR"]
    for node in graph.nodes:
        if node.label != node.id:
            lines.append(f'    state "{_text(node.label)}" as {node.id}')
        if node.doing is not None:
            lines.append(f"    {node.id} : {_text(node.doing)}")
        if node.description:
            # A colon ends a one-line note's text in Mermaid's grammar, so it is escaped too.
            note = _text(node.description).replace(":", "#58;")
            lines.append(f"    note right of {node.id} : {note}")
    lines.append(f"    [*] --> {graph.initial.id}")
    for edge in graph.edges:
        lines.append(f"    {edge.source} --> {edge.target} : {_text(edge.counted_label)}")
    lines += [f"    {node.id} --> [*]" for node in graph.nodes if node.final]
    assigned: dict[str, list[str]] = {}
    for node in graph.nodes:
        css = _css_class(node, graph.highlighted)
        if css is not None:
            assigned.setdefault(css, []).append(node.id)
    for css, ids in assigned.items():
        lines.append(f"    classDef {css} {CLASSES[css]}")
        lines.append(f"    class {','.join(ids)} {css}")
    return "\n".join(lines) + "\n"


def _css_class(node: DiagramNode, highlighted: bool) -> str | None:
    if highlighted and node.current:
        return "currentFailure" if node.failure else "current"
    if node.failure:
        return "failure"
    if highlighted:
        return "visited" if node.visits else "unvisited"
    return None


def _text(value: str) -> str:
    return value.replace("\n", " ").translate(_ESCAPES)
