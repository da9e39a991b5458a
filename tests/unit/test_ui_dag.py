"""The console's DAG layout: layers by dependency depth, ordered rows, no overlapping boxes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from executor_service.ui.dag import GAP_X, NODE_H, NODE_W, PAD, DagStep, depths, layout


def _steps(deps: dict[str, list[str]]) -> list[DagStep]:
    return [DagStep(sid, "noop", ds, "ready") for sid, ds in deps.items()]


def test_a_chain_is_one_row_left_to_right() -> None:
    dag = layout(_steps({"a": [], "b": ["a"], "c": ["b"]}))
    nodes = {n.id: n for n in dag.nodes}
    assert [nodes[s].layer for s in "abc"] == [0, 1, 2]
    assert [nodes[s].x for s in "abc"] == [PAD + i * (NODE_W + GAP_X) for i in range(3)]
    assert len({nodes[s].y for s in "abc"}) == 1
    assert [(e.source, e.target) for e in dag.edges] == [("a", "b"), ("b", "c")]
    first = dag.edges[0]
    start = first.path.split()[0]
    assert start == f"M{PAD + NODE_W:g},{nodes['a'].y + NODE_H / 2:g}"  # right side of a
    assert dag.width == 2 * PAD + 3 * NODE_W + 2 * GAP_X and dag.height == 2 * PAD + NODE_H


def test_a_step_sits_one_layer_after_its_deepest_dependency() -> None:
    assert depths({"a": [], "b": ["a"], "c": ["a", "b"], "d": []}) == {
        "a": 0,
        "b": 1,
        "c": 2,
        "d": 0,
    }


def test_unknown_dependencies_are_ignored_and_a_cycle_does_not_break_the_page() -> None:
    assert depths({"a": ["ghost"], "b": ["a"]}) == {"a": 0, "b": 1}
    assert depths({"a": ["b"], "b": ["a"], "c": []}) == {"a": 0, "b": 0, "c": 0}
    assert len(layout(_steps({"a": ["b"], "b": ["a"]})).nodes) == 2


def test_children_are_ordered_by_the_rows_of_their_parents() -> None:
    # x depends on the second root, y on the first: y goes above x although x comes first
    dag = layout(_steps({"r0": [], "r1": [], "x": ["r1"], "y": ["r0"]}))
    rows = {n.id: n.row for n in dag.nodes}
    assert (rows["r0"], rows["r1"]) == (0, 1)
    assert (rows["y"], rows["x"]) == (0, 1)


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=1, max_value=14))
    ids = [f"s{i}" for i in range(size)]
    return {
        sid: sorted(draw(st.sets(st.sampled_from(ids[:i]), max_size=3))) if i else []
        for i, sid in enumerate(ids)
    }


@given(dags())
def test_edges_go_forward_and_boxes_never_overlap(deps: dict[str, list[str]]) -> None:
    dag = layout(_steps(deps))
    nodes = {n.id: n for n in dag.nodes}
    assert set(nodes) == set(deps)
    for edge in dag.edges:
        assert nodes[edge.source].layer < nodes[edge.target].layer
    assert len(dag.edges) == sum(len(ds) for ds in deps.values())
    boxes = [(n.x, n.y) for n in dag.nodes]
    for i, (x1, y1) in enumerate(boxes):
        assert x1 >= 0 and x1 + NODE_W <= dag.width and y1 >= 0 and y1 + NODE_H <= dag.height
        for x2, y2 in boxes[i + 1 :]:
            assert abs(x1 - x2) >= NODE_W or abs(y1 - y2) >= NODE_H
