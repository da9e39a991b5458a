"""The template backend (YAML plan templates) and the draft backend: the two non-LLM backends."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from planner_service.backends.base import NoMatchingTemplateError, PlanRequest
from planner_service.backends.draft import DraftBackend
from planner_service.backends.template import (
    TemplateBackend,
    TemplateError,
    load_directory,
    shipped_templates_dir,
    substitute,
)
from planner_service.domain.validation import ValidationLimits, validate_plan
from shared_schemas import IssueCode, PlanDraft, SideEffect, ToolCatalog
from tests.support.demo_catalog import demo_catalog

CATALOG = demo_catalog()
REF = re.compile(r"^([a-z0-9][a-z0-9_-]*)\.output(/.*)?$")

# (intent, context, template id, {step id: expected args})
SHIPPED_CASES: list[tuple[str, dict[str, Any], str, dict[str, dict[str, Any]]]] = [
    (
        "Summarise the last 5 commits of /srv/demo-repo and post the summary to the webhook",
        {},
        "git-log-summary-webhook@1",
        {
            "log": {"repo_path": "/srv/demo-repo", "max_count": 5},
            "summarise": {
                "data": {"$ref": "log.output/text"},
                "expression": "{kind: 'git-log-summary', commits: @}",
            },
            "post": {"body": {"$ref": "summarise.output"}},
        },
    ),
    (
        "create a release branch 2.3.0",
        {"repo_path": "/srv/demo-repo"},
        "release-branch@1",
        {
            "branch": {
                "repo_path": "/srv/demo-repo",
                "branch_name": "release/2.3.0",
                "base_branch": None,
            }
        },
    ),
    (
        "What time is it in America/New_York?",
        {},
        "current-time@1",
        {"now": {"timezone": "America/New_York"}},
    ),
    ("call the flaky upstream", {}, "flaky-upstream@1", {"call": {"codes": "200,500,503"}}),
    ("hard reset the repo", {}, "hard-reset@1", {"reset": {"repo_path": "."}}),
]


def _request(intent: str, context: dict[str, Any] | None = None, **kw: Any) -> PlanRequest:
    return PlanRequest(intent=intent, context=context or {}, catalog=CATALOG, **kw)


def _ancestors(draft: PlanDraft, step_id: str) -> set[str]:
    deps = {s.id: s.depends_on for s in draft.steps}
    seen: set[str] = set()
    todo = list(deps[step_id])
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo.extend(deps.get(current, []))
    return seen


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        if set(value) == {"$ref"}:
            return [value["$ref"]]
        return [r for v in value.values() for r in _refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _refs(v)]
    return []


def _schema_has(schema: dict[str, Any], pointer: str) -> bool:
    """True when the JSON pointer names a declared property (or the schema admits anything)."""
    for token in pointer.split("/")[1:]:
        if "properties" not in schema:
            return schema.get("type") in (None, "object") and not schema.get("required")
        if token not in schema["properties"]:
            return False
        schema = schema["properties"][token]
    return True


def test_every_shipped_template_has_a_case() -> None:
    shipped = {t.template_id for t in load_directory(shipped_templates_dir(), "shipped")}
    assert shipped == {case[2] for case in SHIPPED_CASES}


@pytest.mark.parametrize(("intent", "context", "template_id", "expected"), SHIPPED_CASES)
async def test_shipped_template_renders_a_valid_plan_for_the_demo_catalog(
    intent: str, context: dict[str, Any], template_id: str, expected: dict[str, dict[str, Any]]
) -> None:
    generation = await TemplateBackend().generate(_request(intent, context), [])

    assert generation.issues == []
    draft = generation.draft
    assert draft is not None
    assert generation.planner.backend == "template"
    assert generation.planner.template_id == template_id
    assert PlanDraft.model_validate_json(generation.attempt.raw_response or "") == draft
    tools = {t.name: t for t in CATALOG.tools}
    assert {s.id: s.args for s in draft.steps} == expected
    for step in draft.steps:
        assert step.tool in tools, step.tool
        jsonschema.Draft202012Validator(tools[step.tool].input_schema).validate(step.args)
        for ref in _refs(step.args):
            match = REF.match(ref)
            assert match, ref
            assert match.group(1) in _ancestors(draft, step.id)
            source = next(s for s in draft.steps if s.id == match.group(1))
            assert _schema_has(tools[source.tool].output_schema, match.group(2) or ""), ref
    # And the planner's own static validation agrees.
    assert validate_plan(draft, tools, ValidationLimits()).issues == []


async def test_summary_template_chains_log_transform_post_and_keeps_types() -> None:
    intent = "summarize the last 12 commits of ~/code/app and post a summary to the webhook."
    draft = (await TemplateBackend().generate(_request(intent), [])).draft
    assert draft is not None
    assert [s.tool for s in draft.steps] == ["git.git_log", "transform", "httpbin.post"]
    assert draft.steps[0].args["max_count"] == 12  # "types: count: integer": not "12"
    assert draft.steps[0].args["repo_path"] == "~/code/app"
    assert draft.rationale is not None and "12 commits of ~/code/app" in draft.rationale


async def test_flaky_and_destructive_templates_carry_their_policies() -> None:
    backend = TemplateBackend()
    flaky = await backend.generate(_request("call the flaky upstream with codes 503,200"), [])
    assert flaky.draft is not None
    step = flaky.draft.steps[0]
    assert step.args == {"codes": "503,200"}
    assert step.retry.max_attempts == 5 and step.timeout_s == 5
    reset = (await backend.generate(_request("Hard reset the repository at /tmp/x"), [])).draft
    assert reset is not None
    tools = {t.name: t for t in CATALOG.tools}
    assert tools[reset.steps[0].tool].side_effect is SideEffect.DESTRUCTIVE
    assert reset.steps[0].requires_approval is False  # only policy sets it
    assert reset.steps[0].args == {"repo_path": "/tmp/x"}


def test_substitute_keeps_the_type_of_a_whole_placeholder() -> None:
    values: dict[str, Any] = {"n": 3, "flag": False, "obj": {"a": [1, 2]}, "none": None, "s": "x"}
    template = {
        "n": "{{ n }}",
        "flag": "{{ flag }}",
        "obj": "{{ obj }}",
        "none": "{{ none }}",
        "text": "n={{ n }} flag={{ flag }} obj={{ obj }} s={{ s }}",
        "list": ["{{ s }}", "{{ n }}", 7],
        "near_miss": "{{n}} is not a placeholder token",
    }
    assert substitute(template, values) == {
        "n": 3,
        "flag": False,
        "obj": {"a": [1, 2]},
        "none": None,
        "text": 'n=3 flag=false obj={"a": [1, 2]} s=x',
        "list": ["x", 3, 7],
        "near_miss": "{{n}} is not a placeholder token",
    }


def test_substitute_is_one_pass_and_refuses_unknown_names() -> None:
    # A value that itself looks like a placeholder is inserted verbatim, never expanded.
    assert substitute("a {{ x }}", {"x": "{{ y }}", "y": "secret"}) == "a {{ y }}"
    with pytest.raises(TemplateError, match=r"unknown placeholder \{\{ missing \}\}"):
        substitute({"k": ["{{ missing }}"]}, {})


async def test_groups_then_context_then_defaults() -> None:
    backend = TemplateBackend()
    intent = "create the release branch release/1.0 from main"
    ctx = {"repo_path": "/repos/a", "base_branch": "ignored: the group wins"}
    draft = (await backend.generate(_request(intent, ctx), [])).draft
    assert draft is not None
    assert draft.steps[0].args == {
        "repo_path": "/repos/a",
        "branch_name": "release/1.0",
        "base_branch": "main",
    }


def _write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


OWN_TIME = """
id: current-time
version: 7
patterns: ['what time is it in (?P<timezone>\\S+)']
steps:
  - id: convert
    tool: time.convert_time
    args: {source_timezone: UTC, time: "12:00", target_timezone: "{{ timezone }}"}
"""


async def test_deployment_directory_wins_on_id_clash_and_is_tried_first(tmp_path: Path) -> None:
    _write(tmp_path, "time.yaml", OWN_TIME)
    _write(
        tmp_path,
        "catch_all.yml",
        "id: catch-all\nversion: 1\npatterns: ['call the (?P<what>.+)']\n"
        "steps: [{id: wait, tool: wait, args: {seconds: 1}, description: '{{ what }}'}]\n",
    )
    backend = TemplateBackend(tmp_path)
    ids = [t.id for t in backend.templates]
    assert ids.count("current-time") == 1
    assert ids[:2] == ["catch-all", "current-time"]

    time_plan = await backend.generate(_request("what time is it in Asia/Tokyo"), [])
    assert time_plan.planner.template_id == "current-time@7"
    assert time_plan.draft is not None and time_plan.draft.steps[0].tool == "time.convert_time"
    # "call the flaky upstream" matches both; the deployment's template is tried first.
    flaky = await backend.generate(_request("call the flaky upstream"), [])
    assert flaky.planner.template_id == "catch-all@1"
    # A shipped template without a clash is still there.
    reset = await backend.generate(_request("hard reset the repo"), [])
    assert reset.planner.template_id == "hard-reset@1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id: x\nversion: 1\npatterns: [a\n", "not valid YAML"),
        ("- just a list\n", "must be a mapping"),
        ("id: x\nversion: 1\nsteps: [{id: a, tool: wait}]\n", "'patterns' must be"),
        ("id: x\nversion: 1\npatterns: ['(unclosed']\nsteps: [{id: a, tool: wait}]\n", "compile"),
        ("id: x\nversion: 1\npatterns: [a]\nsteps: [{id: a, tool: t, argz: {}}]\n", "argz"),
        (
            "id: x\nversion: 1\npatterns: [a]\nsteps: [{id: a, tool: t, args: {k: '{{k}}'}}]\n",
            "malformed placeholder",
        ),
        ("id: Bad Id\nversion: 1\npatterns: [a]\nsteps: [{id: a, tool: t}]\n", "'id'"),
        ("id: x\nversion: 1\npatterns: [a]\nsteps: [{id: a, tool: t}]\nextra: 1\n", "unknown keys"),
        (
            "id: x\nversion: 1\npatterns: [a]\ntypes: {a: date}\nsteps: [{id: a, tool: t}]\n",
            "types",
        ),
    ],
)
def test_malformed_template_file_is_refused_at_load_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    _write(tmp_path, "broken.yaml", text)
    with pytest.raises(TemplateError, match=message) as info:
        TemplateBackend(tmp_path)
    assert "broken.yaml" in str(info.value)


def test_duplicate_ids_in_one_directory_are_refused(tmp_path: Path) -> None:
    body = "id: same\nversion: 1\npatterns: [a]\nsteps: [{id: a, tool: wait}]\n"
    _write(tmp_path, "a.yaml", body)
    _write(tmp_path, "b.yaml", body)
    with pytest.raises(TemplateError, match=r"b\.yaml: template id 'same' also in .*a\.yaml"):
        TemplateBackend(tmp_path)


async def test_no_matching_template() -> None:
    with pytest.raises(NoMatchingTemplateError, match="refund order 8812"):
        await TemplateBackend().generate(_request("refund order 8812 if it arrived damaged"), [])
    # Patterns must match the whole (stripped) intent, not a part of it.
    with pytest.raises(NoMatchingTemplateError):
        await TemplateBackend().generate(_request("please call the flaky upstream now"), [])
    ok = await TemplateBackend().generate(_request("  CALL THE FLAKY UPSTREAM  "), [])
    assert ok.planner.template_id == "flaky-upstream@1"


async def test_missing_placeholder_value_is_a_template_error(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "needs.yaml",
        "id: needs\nversion: 1\npatterns: ['ping']\n"
        "steps: [{id: a, tool: http.request, args: {method: GET, url: '{{ url }}'}}]\n",
    )
    backend = TemplateBackend(tmp_path, include_shipped=False)
    with pytest.raises(TemplateError, match=r"needs\.yaml: unknown placeholder \{\{ url \}\}"):
        await backend.generate(_request("ping"), [])
    ok = await backend.generate(_request("ping", {"url": "http://127.0.0.1:1/x"}), [])
    assert ok.draft is not None and ok.draft.steps[0].args["url"] == "http://127.0.0.1:1/x"


async def test_rendered_value_of_the_wrong_type_is_a_schema_issue(tmp_path: Path) -> None:
    _write(
        tmp_path,
        "t.yaml",
        "id: t\nversion: 1\npatterns: ['go']\n"
        "steps: [{id: a, tool: wait, args: {seconds: 1}, timeout_s: '{{ t }}'}]\n",
    )
    backend = TemplateBackend(tmp_path, include_shipped=False)
    generation = await backend.generate(_request("go", {"t": "soon"}), [])
    assert generation.draft is None
    assert [(i.code, i.path) for i in generation.issues] == [
        (IssueCode.SCHEMA, "/steps/0/timeout_s")
    ]


# --- draft backend --------------------------------------------------------------------------


async def test_draft_backend_parses_the_callers_draft() -> None:
    body = {"steps": [{"id": "now", "tool": "time.get_current_time", "args": {"timezone": "UTC"}}]}
    generation = await DraftBackend().generate(_request("x", draft=body), [])
    assert generation.issues == []
    assert generation.draft == PlanDraft.model_validate(body)
    assert generation.planner.backend == "draft"
    assert generation.attempt.backend == "draft"


async def test_draft_backend_reports_parse_failures_without_repair() -> None:
    body = {"steps": [{"id": "Bad Id", "tool": "wait", "argz": {}}], "confidence": 2}
    generation = await DraftBackend().generate(_request("x", draft=body), [])
    assert generation.draft is None
    paths = sorted(i.path for i in generation.issues)
    assert paths == ["/confidence", "/steps/0/argz", "/steps/0/id"]
    assert {i.code for i in generation.issues} == {IssueCode.SCHEMA}
    missing = await DraftBackend().generate(_request("x"), [])
    assert missing.draft is None and missing.issues[0].path == "/draft"


def test_demo_catalog_is_versioned_and_classifies_side_effects() -> None:
    catalog = demo_catalog()
    assert isinstance(catalog, ToolCatalog) and catalog == demo_catalog()
    effects = {t.name: t.side_effect for t in catalog.tools}
    assert effects["git.git_log"] is SideEffect.READ
    assert effects["git.git_create_branch"] is SideEffect.WRITE
    assert effects["git.git_reset"] is SideEffect.DESTRUCTIVE
    assert effects["httpbin.post"] is SideEffect.WRITE
    assert {t.name: t.required_scopes for t in catalog.tools}["httpbin.post"] == ["webhook:post"]
    for tool in catalog.tools:
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
