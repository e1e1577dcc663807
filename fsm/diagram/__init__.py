"""Diagrams drawn from the Machine that runs: graph model, DOT, Mermaid, SVG and PNG."""

from fsm.diagram.dot import to_dot
from fsm.diagram.mermaid import to_mermaid
from fsm.diagram.model import (
    DiagramEdge,
    DiagramGraph,
    DiagramNode,
    Highlight,
    NodeKind,
    build_graph,
)
from fsm.diagram.render import FORMATS, diagram, find_renderer, render
from fsm.errors import DiagramError, RendererNotFound

__all__ = [
    "FORMATS",
    "DiagramEdge",
    "DiagramError",
    "DiagramGraph",
    "DiagramNode",
    "Highlight",
    "NodeKind",
    "RendererNotFound",
    "build_graph",
    "diagram",
    "find_renderer",
    "render",
    "to_dot",
    "to_mermaid",
]
