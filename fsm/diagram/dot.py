"""The DOT renderer: a DiagramGraph as Graphviz source, built with the `graphviz` package."""

from __future__ import annotations

from html import escape as html_escape
from typing import TYPE_CHECKING

from fsm.diagram.model import DiagramEdge, DiagramGraph, DiagramNode
from fsm.errors import DiagramError

if TYPE_CHECKING:
    import graphviz  # type: ignore[import-untyped]  # the package ships no type hints

INSTALL_HINT = "pip install 'fsm-orchestrator[diagrams]'"

FONT = "Helvetica"
INK = "#37474f"
DIM = "#b0bec5"
DIM_TEXT = "#90a4ae"
FAILURE = "#c62828"
FAILURE_FILL = "#ffebee"
PATH = "#1565c0"
PATH_FILL = "#e3f2fd"
CURRENT_FILL = "#fff59d"
START = "__start__"
"""The id of the initial marker (a dot); state ids never start with an underscore."""


def to_dot(graph: DiagramGraph) -> str:
    """The graph as DOT source: left to right, finals doubled, failures red, the run's path blue."""
    return str(_digraph(graph).source)


def _digraph(graph: DiagramGraph) -> graphviz.Digraph:
    try:
        import graphviz
    except ImportError as error:
        raise DiagramError(
            f"DOT output needs the graphviz package: {INSTALL_HINT} (Mermaid output needs nothing)"
        ) from error
    title = graph.name if graph.run_id is None else f"{graph.name}  (run {graph.run_id})"
    dot = graphviz.Digraph(
        graph.name,
        graph_attr={
            "rankdir": "LR",
            "label": graphviz.escape(title),
            "labelloc": "t",
            "fontname": FONT,
            "fontsize": "14",
            "nodesep": "0.5",
            "ranksep": "0.7",
            "pad": "0.2",
        },
        node_attr={"fontname": FONT, "fontsize": "12", "shape": "box", "style": "rounded,filled"},
        edge_attr={"fontname": FONT, "fontsize": "10", "arrowsize": "0.7"},
    )
    dot.node(START, label="", shape="point", width="0.18", color=INK)
    initial = graph.initial
    dot.edge(START, initial.id, color=PATH if graph.highlighted else INK)
    for node in graph.nodes:
        style = _node_style(node, graph.highlighted)
        if node.description:
            style["tooltip"] = graphviz.escape(node.description)
        dot.node(node.id, label=_node_label(node), **style)
    for edge in graph.edges:
        label = graphviz.escape(edge.counted_label)
        dot.edge(edge.source, edge.target, label=label, **_edge_style(edge, graph))
    return dot


def _node_label(node: DiagramNode) -> str:
    lines = [f"<B>{html_escape(node.label)}</B>" if node.current else html_escape(node.label)]
    if node.doing is not None:
        lines.append(f'<FONT POINT-SIZE="9">{html_escape(node.doing)}</FONT>')
    if node.current:
        lines.append('<FONT POINT-SIZE="9">(current)</FONT>')
    return "<" + "<BR/>".join(lines) + ">"


def _node_style(node: DiagramNode, highlighted: bool) -> dict[str, str]:
    style = {"color": INK, "fontcolor": INK, "fillcolor": "white"}
    if node.failure:
        style.update(color=FAILURE, fontcolor=FAILURE, fillcolor=FAILURE_FILL)
    if node.final:
        style["peripheries"] = "2"
    if highlighted:
        if node.visits:
            style.update(penwidth="2")
            if not node.failure:
                style.update(color=PATH, fontcolor=PATH)
            if node.current:
                style.update(fillcolor=CURRENT_FILL, penwidth="3")
            elif not node.failure:
                style.update(fillcolor=PATH_FILL)
        else:
            style.update(color=DIM, fontcolor=DIM_TEXT)
    return style


def _edge_style(edge: DiagramEdge, graph: DiagramGraph) -> dict[str, str]:
    # A timeout's row is dashed: no one sends it, time does.
    dashed = {"style": "dashed"} if edge.timeout is not None else {}
    if not graph.highlighted:
        # Rows into a failure state share its colour, so the unhappy paths stand out.
        ink = FAILURE if graph.node(edge.target).failure else INK
        return {"color": ink, "fontcolor": ink, **dashed}
    if edge.fired:
        return {"color": PATH, "fontcolor": PATH, "penwidth": "2", **dashed}
    return {"color": DIM, "fontcolor": DIM_TEXT, **dashed}
