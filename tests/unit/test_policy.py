"""The Cedar policy check of plan steps: shipped policies, decisions, fail-closed errors."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cedarpy
import pytest

from planner_service.domain.policy import (
    DEFAULT_POLICY_DIR,
    DEFAULT_SCHEMA_PATH,
    PolicyEngine,
    PolicyLoadError,
)
from shared_schemas import Decision, Principal, Role, SideEffect, Step, ToolSpec

if TYPE_CHECKING:
    from pathlib import Path

TOOLS = {
    "git.log": ToolSpec(name="git.log", side_effect=SideEffect.READ),
    "git.commit": ToolSpec(
        name="git.commit", side_effect=SideEffect.WRITE, required_scopes=["git:write"]
    ),
    "git.git_reset": ToolSpec(
        name="git.git_reset",
        side_effect=SideEffect.DESTRUCTIVE,
        required_scopes=["git:write", "git:admin"],
        cost_usd=0.25,
    ),
}

SHIPPED_RULES = {
    "planexec.read-tools-for-submitters",
    "planexec.scoped-write-tools",
    "planexec.scoped-destructive-tools",
    "planexec.destructive-tools-need-approval",
    "planexec.safe-mode-read-only",
    "planexec.metered-unknown-amount-needs-approval",
    "planexec.metered-over-run-limit",
    "planexec.metered-over-tenant-daily-limit",
}


def principal(
    *roles: Role, scopes: frozenset[str] = frozenset(), tenant: str = "acme"
) -> Principal:
    return Principal(tenant=tenant, subject="alice", roles=frozenset(roles), scopes=scopes)


SUBMITTER = principal(Role.SUBMITTER)
ALL_SCOPES = frozenset({"git:write", "git:admin"})


def step(tool: str, step_id: str = "s1", **args: object) -> Step:
    return Step(id=step_id, tool=tool, args=dict(args))


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine()


def deployment(tmp_path: Path, **files: str) -> PolicyEngine:
    for name, text in files.items():
        (tmp_path / f"{name}.cedar").write_text(text, encoding="utf-8")
    return PolicyEngine((DEFAULT_POLICY_DIR, tmp_path))


def test_shipped_policies_validate_against_the_schema(engine: PolicyEngine) -> None:
    assert engine.validate() == []
    schema = DEFAULT_SCHEMA_PATH.read_text(encoding="utf-8")
    shipped = sorted(DEFAULT_POLICY_DIR.glob("*.cedar"))
    assert shipped
    for path in shipped:
        result = cedarpy.validate_policies(path.read_text(encoding="utf-8"), schema)
        assert result.validation_passed, [str(e) for e in result.errors]
    assert engine.rule_ids == SHIPPED_RULES


def test_read_tool_is_allowed_to_plan_submitting_roles_only(engine: PolicyEngine) -> None:
    for role in (Role.SUBMITTER, Role.OPERATOR, Role.ADMIN):
        [decision] = engine.evaluate([step("git.log")], TOOLS, principal(role), safe_mode=False)
        assert decision.decision is Decision.ALLOW
        assert decision.rule_ids == ["planexec.read-tools-for-submitters"]
        assert decision.errors == []
    for nobody in (principal(), principal(Role.APPROVER)):
        [denied] = engine.evaluate([step("git.log")], TOOLS, nobody, safe_mode=False)
        assert denied.decision is Decision.DENY
        assert denied.errors == []


def test_write_tool_needs_every_required_scope(engine: PolicyEngine) -> None:
    [unscoped] = engine.evaluate([step("git.commit")], TOOLS, SUBMITTER, safe_mode=False)
    assert unscoped.decision is Decision.DENY
    assert (unscoped.rule_ids, unscoped.errors) == ([], [])  # Cedar's default deny: no permit

    scoped = principal(Role.SUBMITTER, scopes=frozenset({"git:write"}))
    [allowed] = engine.evaluate([step("git.commit")], TOOLS, scoped, safe_mode=False)
    assert allowed.decision is Decision.ALLOW
    assert allowed.rule_ids == ["planexec.scoped-write-tools"]


def test_destructive_tool_always_needs_approval_even_for_admins(engine: PolicyEngine) -> None:
    for roles in ((Role.SUBMITTER,), (Role.ADMIN,), (Role.ADMIN, Role.APPROVER)):
        who = principal(*roles, scopes=ALL_SCOPES)
        [gated] = engine.evaluate([step("git.git_reset")], TOOLS, who, safe_mode=False)
        assert gated.decision is Decision.REQUIRE_APPROVAL
        assert gated.rule_ids == ["planexec.destructive-tools-need-approval"]
        assert gated.errors == []


def test_destructive_tool_without_every_scope_is_denied(engine: PolicyEngine) -> None:
    half = principal(Role.ADMIN, scopes=frozenset({"git:write"}))
    [denied] = engine.evaluate([step("git.git_reset")], TOOLS, half, safe_mode=False)
    assert denied.decision is Decision.DENY


def test_safe_mode_allows_read_tools_only(engine: PolicyEngine) -> None:
    who = principal(Role.SUBMITTER, scopes=ALL_SCOPES)
    steps = [step("git.log", "read"), step("git.commit", "write"), step("git.git_reset", "wipe")]
    normal = engine.evaluate(steps, TOOLS, who, safe_mode=False)
    assert [d.decision for d in normal] == [
        Decision.ALLOW,
        Decision.ALLOW,
        Decision.REQUIRE_APPROVAL,
    ]
    safe = engine.evaluate(steps, TOOLS, who, safe_mode=True)
    assert [d.decision for d in safe] == [Decision.ALLOW, Decision.DENY, Decision.DENY]
    assert [d.rule_ids for d in safe[1:]] == [["planexec.safe-mode-read-only"]] * 2


def test_caller_context_cannot_switch_safe_mode_off(engine: PolicyEngine) -> None:
    who = principal(Role.SUBMITTER, scopes=ALL_SCOPES)
    [decision] = engine.evaluate(
        [step("git.commit")], TOOLS, who, safe_mode=True, context={"safe_mode": False}
    )
    assert decision.decision is Decision.DENY
    assert decision.rule_ids == ["planexec.safe-mode-read-only"]


def test_tenant_forbid_from_a_deployment_directory_hits_only_that_tenant(
    tmp_path: Path, engine: PolicyEngine
) -> None:
    tenant_engine = deployment(
        tmp_path,
        **{
            "tenant-acme": """
                @id("tenant.acme.no-git-reset")
                forbid (principal, action, resource == Planexec::Tool::"git.git_reset")
                when { principal.tenant == "acme" };
            """
        },
    )
    steps = [step("git.log", "look"), step("git.git_reset", "wipe")]
    acme = principal(Role.SUBMITTER, scopes=ALL_SCOPES, tenant="acme")
    globex = principal(Role.SUBMITTER, scopes=ALL_SCOPES, tenant="globex")

    look, wipe = tenant_engine.evaluate(steps, TOOLS, acme, safe_mode=False)
    assert look.decision is Decision.ALLOW
    assert wipe.decision is Decision.DENY
    assert wipe.rule_ids == ["tenant.acme.no-git-reset"]
    assert wipe.errors == []

    _, other = tenant_engine.evaluate(steps, TOOLS, globex, safe_mode=False)
    assert other.decision is Decision.REQUIRE_APPROVAL
    _, before = engine.evaluate(steps, TOOLS, acme, safe_mode=False)
    assert before.decision is Decision.REQUIRE_APPROVAL
    assert tenant_engine.policy_version != engine.policy_version


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('@id("broken")\npermit (principal, action, resource) when { principal. };', "parse"),
        ("permit (principal, action, resource);", "no @id"),
        ('@id("planexec.scoped-write-tools")\nforbid (principal, action, resource);', "used"),
        (
            '@id("tenant.bad")\nforbid (principal, action, resource)'
            " when { resource.nonexistent };",
            "tenant.bad",
        ),
        (
            '@id("tenant.tpl")\nforbid (principal == ?principal, action, resource);',
            "template",
        ),
    ],
    ids=["syntax", "missing-id", "duplicate-id", "fails-schema", "template"],
)
def test_a_bad_policy_file_refuses_to_load(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(PolicyLoadError, match=expected):
        deployment(tmp_path, **{"tenant-bad": text})


def test_schema_validation_errors_are_listed_per_policy(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError) as caught:
        deployment(
            tmp_path,
            x="""
                @id("x.one")
                forbid (principal, action, resource) when { resource.nonexistent };
                @id("x.two")
                forbid (principal, action, resource) when { principal.tenant == 3 };
            """,
        )
    messages = [e["message"] for e in caught.value.errors or []]
    assert any(m.startswith("x.cedar: policy x.one:") for m in messages)
    assert any(m.startswith("x.cedar: policy x.two:") for m in messages)


def test_a_missing_policy_directory_refuses_to_load(tmp_path: Path) -> None:
    with pytest.raises(PolicyLoadError, match="does not exist"):
        PolicyEngine((DEFAULT_POLICY_DIR, tmp_path / "absent"))


def test_an_evaluation_error_fails_closed_and_is_reported(tmp_path: Path) -> None:
    # Passes strict schema validation (the validator types an entity literal but cannot know
    # whether the entity exists) and errors at evaluation. Cedar alone would skip the erroring
    # forbid and answer Allow; the engine must deny and say why.
    faulty = deployment(
        tmp_path,
        **{
            "tenant-acme": """
                @id("tenant.acme.cheaper-than-reference")
                forbid (principal, action, resource)
                when {
                  resource.cost_micro_usd > Planexec::Tool::"billing.reference".cost_micro_usd
                };
            """
        },
    )
    assert faulty.validate() == []
    [decision] = faulty.evaluate([step("git.log")], TOOLS, SUBMITTER, safe_mode=False)
    assert decision.decision is Decision.DENY
    assert decision.errors
    assert "tenant.acme.cheaper-than-reference" in decision.errors[0]
    assert "billing.reference" in decision.errors[0]


def test_a_request_error_fails_closed_and_is_reported(engine: PolicyEngine) -> None:
    [decision] = engine.evaluate(
        [step("git.log")], TOOLS, SUBMITTER, safe_mode=False, context={"undeclared": 1}
    )
    assert decision.decision is Decision.DENY
    assert any("undeclared" in e for e in decision.errors)


def test_a_tool_missing_from_the_catalog_is_denied_with_an_error(engine: PolicyEngine) -> None:
    ok, missing = engine.evaluate(
        [step("git.log", "a"), step("no.such", "b")], TOOLS, SUBMITTER, safe_mode=False
    )
    assert ok.decision is Decision.ALLOW
    assert missing.decision is Decision.DENY
    assert missing.errors == ["tool 'no.such' is not in the catalog"]


def test_policies_that_read_step_id_or_arg_keys_see_each_step(tmp_path: Path) -> None:
    # Steps of one tool share a Cedar request unless a policy reads what differs between them.
    engine = deployment(
        tmp_path,
        steps="""
            @id("deploy.no-step-named-drop")
            forbid (principal, action, resource) when { context.step_id == "drop" };
            @id("deploy.no-force")
            forbid (principal, action, resource) when { context.arg_keys.contains("force") };
        """,
    )
    steps = [
        step("git.log", "keep", path="a"),
        step("git.log", "drop", path="a"),
        step("git.log", "push", path="a", force=True),
        step("git.log", "also-keep", path="a"),
    ]
    decisions = engine.evaluate(steps, TOOLS, SUBMITTER, safe_mode=False)
    assert [(d.step_id, d.decision) for d in decisions] == [
        ("keep", Decision.ALLOW),
        ("drop", Decision.DENY),
        ("push", Decision.DENY),
        ("also-keep", Decision.ALLOW),
    ]
    assert decisions[1].rule_ids == ["deploy.no-step-named-drop"]
    assert decisions[2].rule_ids == ["deploy.no-force"]


def test_one_decision_per_step_in_order_for_a_large_plan(engine: PolicyEngine) -> None:
    who = principal(Role.SUBMITTER, scopes=frozenset({"git:write"}))
    names = list(TOOLS)
    steps = [step(names[i % 3], f"s{i}") for i in range(1000)]
    decisions = engine.evaluate(steps, TOOLS, who, safe_mode=False)
    assert [d.step_id for d in decisions] == [s.id for s in steps]
    expected = {
        "git.log": Decision.ALLOW,
        "git.commit": Decision.ALLOW,
        "git.git_reset": Decision.DENY,  # lacks git:admin
    }
    assert all(d.decision is expected[d.tool] for d in decisions)
    assert engine.evaluate([], TOOLS, who, safe_mode=False) == []


def test_policy_version_is_a_hash_of_the_files(tmp_path: Path) -> None:
    rule = '@id("t.x")\nforbid (principal, action, resource == Planexec::Tool::"git.log");\n'
    first = deployment(tmp_path, t=rule)
    again = deployment(tmp_path, t=rule)
    assert first.policy_version == again.policy_version
    assert first.policy_version.startswith("sha256:")
    assert len(first.policy_version) == len("sha256:") + 64

    changed = deployment(tmp_path, t=rule.replace("git.log", "git.commit"))
    assert changed.policy_version != first.policy_version
    renamed_dir = tmp_path / "renamed"
    renamed_dir.mkdir()
    (renamed_dir / "u.cedar").write_text(rule, encoding="utf-8")
    renamed = PolicyEngine((DEFAULT_POLICY_DIR, renamed_dir))
    assert renamed.policy_version != first.policy_version


def test_memoised_answers_depend_on_principal_tool_and_safe_mode() -> None:
    engine = PolicyEngine()
    scoped = principal(Role.SUBMITTER, scopes=frozenset({"git:write"}))
    commit = [step("git.commit")]
    for _ in range(2):  # the second round is answered from the memo
        assert engine.evaluate(commit, TOOLS, scoped, safe_mode=False)[0].decision is Decision.ALLOW
        [unscoped] = engine.evaluate(commit, TOOLS, SUBMITTER, safe_mode=False)
        assert unscoped.decision is Decision.DENY
        assert engine.evaluate(commit, TOOLS, scoped, safe_mode=True)[0].decision is Decision.DENY
    destructive = TOOLS["git.commit"].model_copy(update={"side_effect": "destructive"})
    changed = {**TOOLS, "git.commit": destructive}
    [after] = engine.evaluate(commit, changed, scoped, safe_mode=False)
    assert after.decision is not Decision.ALLOW  # a changed tool spec is not served from memo
