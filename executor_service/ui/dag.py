"""Layout of a plan's DAG for an SVG drawing: layers by dependency depth, left to right.

A step's layer is the length of the longest dependency chain that leads to it (roots are
layer 0). Within a layer, steps are ordered by the mean row of their dependencies (the
barycenter heuristic of Sugiyama-style layered drawing), ties in plan order, which keeps
most edges short and uncrossed for the shapes plans have (chains, fans, diamonds).
"""

from __future__ import annotations

import graphlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

NODE_W = 176
"""Node width, in SVG user units (pixels)."""
NODE_H = 62
"""Node height."""
GAP_X = 56
"""Horizontal gap between layers."""
GAP_Y = 18
"""Vertical gap between nodes of one layer."""
PAD = 12
"""Margin around the drawing."""


@dataclass(frozen=True)
class DagStep:
    """What the layout needs of a step."""

    id: str
    tool: str
    depends_on: Sequence[str]
    status: str


@dataclass(frozen=True)
class Node:
    """A placed step: its box's top-left corner is ``(x, y)``."""

    id: str
    tool: str
    status: str
    layer: int
    row: int
    x: float
    y: float


@dataclass(frozen=True)
class Edge:
    """A dependency drawn from ``source`` (right side) to ``target`` (left side)."""

    source: str
    target: str
    path: str
    """SVG path data: a cubic Bézier curve."""


@dataclass(frozen=True)
class Dag:
    """A laid-out DAG."""

    nodes: list[Node]
    edges: list[Edge]
    width: float
    height: float
    node_w: float = NODE_W
    node_h: float = NODE_H


def depths(deps: Mapping[str, Sequence[str]]) -> dict[str, int]:
    """Layer of each step: 0 for a root, else 1 + the deepest of its dependencies.

    Dependencies on unknown steps are ignored. A cycle (which plan validation refuses) puts
    every step in layer 0 rather than failing the page.
    """
    known = {sid: [d for d in ds if d in deps and d != sid] for sid, ds in deps.items()}
    try:
        order = list(graphlib.TopologicalSorter(known).static_order())
    except graphlib.CycleError:
        return dict.fromkeys(deps, 0)
    layer: dict[str, int] = {}
    for sid in order:
        layer[sid] = 1 + max((layer[d] for d in known[sid]), default=-1)
    return layer


def layout(steps: Sequence[DagStep]) -> Dag:
    """Place ``steps`` (in plan order) in layers and route their dependency edges."""
    deps = {s.id: list(s.depends_on) for s in steps}
    layer_of = depths(deps)
    plan_order = {s.id: i for i, s in enumerate(steps)}
    by_layer: dict[int, list[str]] = {}
    for s in steps:
        by_layer.setdefault(layer_of[s.id], []).append(s.id)
    row_of: dict[str, int] = {}
    for index in sorted(by_layer):
        members = by_layer[index]

        def barycenter(sid: str) -> float:
            rows = [row_of[d] for d in deps[sid] if d in row_of]
            return sum(rows) / len(rows) if rows else float(plan_order[sid])

        members.sort(key=lambda sid: (barycenter(sid), plan_order[sid]))
        for row, sid in enumerate(members):
            row_of[sid] = row
    tallest = max((len(m) for m in by_layer.values()), default=0)
    step_y = NODE_H + GAP_Y
    nodes: dict[str, Node] = {}
    for s in steps:
        index = layer_of[s.id]
        offset = (tallest - len(by_layer[index])) * step_y / 2
        nodes[s.id] = Node(
            id=s.id,
            tool=s.tool,
            status=s.status,
            layer=index,
            row=row_of[s.id],
            x=PAD + index * (NODE_W + GAP_X),
            y=PAD + offset + row_of[s.id] * step_y,
        )
    edges = [_edge(nodes[d], nodes[s.id]) for s in steps for d in s.depends_on if d in nodes]
    layers = len(by_layer)
    width = 2 * PAD + layers * NODE_W + max(layers - 1, 0) * GAP_X
    height = 2 * PAD + tallest * NODE_H + max(tallest - 1, 0) * GAP_Y
    return Dag(list(nodes.values()), edges, width, height)


def _edge(source: Node, target: Node) -> Edge:
    x1, y1 = source.x + NODE_W, source.y + NODE_H / 2
    x2, y2 = target.x, target.y + NODE_H / 2
    mid = (x1 + x2) / 2
    path = f"M{x1:g},{y1:g} C{mid:g},{y1:g} {mid:g},{y2:g} {x2:g},{y2:g}"
    return Edge(source.id, target.id, path)
