"""Property tests of static validation over random DAGs (issue 4, "Tests": Hypothesis)."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from planner_service.domain.validation import ValidationLimits, validate_plan
from shared_schemas import IssueCode, PlanDraft, SideEffect, ToolSpec, ValidationReport
from shared_schemas.refs import join_pointer, resolve_pointer

TOOLS = {
    t.name: t
    for t in [
        ToolSpec(
            name="http.get",
            input_schema={
                "type": "object",
                "properties": {"url": {"type": "string"}, "extra": {"type": "array"}},
                "required": ["url"],
            },
        ),
        ToolSpec(name="record.write", side_effect=SideEffect.WRITE, cost_usd=0.5),
        ToolSpec(name="record.delete", side_effect=SideEffect.DESTRUCTIVE, cost_usd=2.0),
    ]
}
ROOMY = ValidationLimits(max_steps=1000, max_depth=1000)

Steps = list[dict[str, Any]]


@st.composite
def dags(draw: st.DrawFn, min_size: int = 1) -> Steps:
    """A random DAG: each step depends only on earlier steps; some args ref an ancestor."""
    size = draw(st.integers(min_size, 25))
    steps: Steps = []
    for k in range(size):
        deps = sorted(draw(st.sets(st.integers(0, k - 1), max_size=4))) if k else []
        tool = draw(st.sampled_from(sorted(TOOLS)))
        args: dict[str, Any] = {"url": f"https://example.org/{k}"} if tool == "http.get" else {}
        with_ref = draw(st.booleans())
        if deps and with_ref:
            ancestor = draw(st.sampled_from(sorted(ancestors_of(steps, deps))))
            args["url"] = {"$ref": f"s{ancestor}.output/body/0"}
        steps.append(
            {"id": f"s{k}", "tool": tool, "args": args, "depends_on": [f"s{d}" for d in deps]}
        )
    return steps


def deps_of(step: dict[str, Any]) -> list[int]:
    return [int(d[1:]) for d in step["depends_on"]]


def ancestors_of(steps: Steps, deps: list[int]) -> set[int]:
    """Indices of every step reachable from ``deps`` through depends_on (test oracle)."""
    seen: set[int] = set()
    stack = list(deps)
    while stack:
        k = stack.pop()
        if k not in seen:
            seen.add(k)
            stack.extend(deps_of(steps[k]))
    return seen


def validate(steps: Steps, **kw: Any) -> ValidationReport:
    return validate_plan(PlanDraft.model_validate({"steps": steps}), TOOLS, ROOMY, **kw)


@settings(max_examples=150)
@given(dags())
def test_random_dags_validate_clean(steps: Steps) -> None:
    assert validate(steps, budget_usd=2.0 * len(steps)) == ValidationReport(valid=True, issues=[])


@settings(max_examples=150)
@given(dags(min_size=2), st.data())
def test_a_back_edge_is_reported_as_a_cycle_naming_its_steps(
    steps: Steps, data: st.DataObject
) -> None:
    with_deps = [k for k, s in enumerate(steps) if s["depends_on"]]
    if not with_deps:
        steps[1]["depends_on"] = ["s0"]
        with_deps = [1]
    low = data.draw(st.sampled_from(with_deps))
    high = data.draw(st.sampled_from(sorted(ancestors_of(steps, deps_of(steps[low])))))
    steps[high]["depends_on"].append(f"s{low}")  # low already depends on high: a cycle

    cycles = [i for i in validate(steps).issues if i.code is IssueCode.CYCLE]
    assert len(cycles) == 1
    named = cycles[0].message.removeprefix("cycle: ").split(" (")[0].split(" -> ")
    assert named[0] == named[-1] and {f"s{low}", f"s{high}"} <= set(named)
    by_id = {s["id"]: s for s in steps}
    for step_id, dep in pairwise(named):
        assert dep in by_id[step_id]["depends_on"]
    assert cycles[0].step_id == named[0]


@settings(max_examples=150)
@given(dags(min_size=2), st.data())
def test_a_ref_to_a_non_ancestor_is_reported(steps: Steps, data: st.DataObject) -> None:
    user = data.draw(st.integers(0, len(steps) - 1))
    strangers = sorted(set(range(len(steps))) - ancestors_of(steps, deps_of(steps[user])))
    target = data.draw(st.sampled_from(strangers))  # the step itself is always among them
    steps[user]["args"]["extra"] = [0, {"deep": {"$ref": f"s{target}.output"}}]

    issues = validate(steps).issues
    assert [(i.step_id, i.code, i.path) for i in issues] == [
        (f"s{user}", IssueCode.REF_NOT_ANCESTOR, f"/steps/{user}/args/extra/1/deep")
    ]


pointer_text = st.text(st.characters(codec="utf-8", exclude_characters="/"), max_size=8)
bad_refs = st.one_of(
    st.builds(lambda p: f"s0.output{p}", pointer_text.filter(lambda p: p != "")),
    st.builds(lambda p, c: f"s0.output/{p}~{c}", pointer_text, st.sampled_from("2a/~ ")),
    st.builds(lambda p: f"s0.output/{p}~", pointer_text),
    st.builds(lambda p: f"S0.output/{p}", pointer_text),
)


@settings(max_examples=150)
@given(dags(min_size=2), bad_refs)
def test_a_bad_pointer_is_reported(steps: Steps, ref: str) -> None:
    last = len(steps) - 1
    steps[last]["args"]["bad"] = {"$ref": ref}

    issues = validate(steps).issues
    assert [(i.step_id, i.code, i.path) for i in issues] == [
        (f"s{last}", IssueCode.REF_BAD_POINTER, f"/steps/{last}/args/bad")
    ]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=20,
)


def every_pointer(doc: Any, base: str = "") -> list[tuple[str, Any]]:
    found = [(base, doc)]
    children = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in children:
        found += every_pointer(value, join_pointer(base, key))
    return found


@given(json_values)
def test_resolve_pointer_finds_every_value_of_a_document(doc: Any) -> None:
    for pointer, value in every_pointer(doc):
        assert resolve_pointer(doc, pointer) == value
