"""Console templates escape everything that comes from tool outputs, plans or LLM text."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from executor_service.ui.session import Session
from executor_service.ui.templating import TEMPLATES
from executor_service.ui.views import run_view
from shared_schemas import Principal, Role

EVIL = '<script>alert("x")</script><img src=x onerror=alert(1)>'
ESCAPED = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;"
T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PRINCIPAL = Principal(tenant="acme", subject=EVIL, roles=frozenset({Role.OPERATOR, Role.APPROVER}))
SESSION = Session(PRINCIPAL, "pxk_key", "sid", "tok")


def _render(name: str, **context: Any) -> str:
    request = SimpleNamespace(url=SimpleNamespace(path="/ui/x"))
    return TEMPLATES.get_template(name).render(request=request, session=SESSION, **context)


def _assert_inert(html: str, times: int) -> None:
    assert "<script>alert" not in html and "<img src=x" not in html
    assert html.count(ESCAPED) >= times, html


def test_the_run_screen_escapes_outputs_errors_args_descriptions_and_events() -> None:
    run = {
        "run_id": "r1",
        "plan_id": "p1",
        "plan_version": 1,
        "content_hash": "sha256:" + "0" * 64,
        "status": "failed",
        "mode": "normal",
        "replans": 0,
        "cancel_requested": False,
        "created_at": T0,
        "created_by": EVIL,
        "finished_at": T0,
        "traceparent": None,
        "lease_owner": None,
        "spent_usd": 0.0,
        "budget_usd": None,
        "parent_run_id": None,
        "fork_from_step": None,
        "error": {"code": "x", "message": EVIL},
        "plan": {
            "intent": EVIL,
            "steps": [{"id": "a", "tool": "noop", "description": EVIL}],
        },
        "policy_decisions": [{"step_id": "a", "decision": "allow", "rule_ids": [EVIL]}],
        "steps": [
            {
                "step_id": "a",
                "status": "failed",
                "attempts": 1,
                "resolved_args": {"v": EVIL},
                "output": {"echo": EVIL},
                "error": {"code": "tool_error", "message": EVIL},
            }
        ],
        "attempts": [
            {
                "step_id": "a",
                "attempt": 1,
                "status": "failed",
                "started_at": T0,
                "finished_at": T0,
                "duration_s": 0.1,
                "error": {"code": "tool_error", "message": EVIL},
                "worker": EVIL,
            }
        ],
    }
    events = [
        {
            "seq": 1,
            "type": "step.failed",
            "step_id": "a",
            "attempt": 1,
            "payload": {"e": EVIL},
            "at": T0,
        }
    ]
    view = run_view(run, events, PRINCIPAL, T0)
    html = _render("run.html", view=view, notice=None)
    # intent, creator, run error, description, rule, args, output, step error, attempt
    # error (table and timeline title), worker, event payload, subject in the header
    _assert_inert(html, 8)


def test_the_approvals_inbox_escapes_the_arguments_and_the_intent() -> None:
    gate = {
        "run_id": "r1",
        "step_id": "pay",
        "resolved_args": {"to": EVIL},
        "args_hash": "sha256:" + "1" * 64,
        "gate_deadline": None,
        "expired": False,
        "plan_version": 1,
        "created_by": EVIL,
        "run_created_at": T0,
        "intent": EVIL,
        "step": {"tool": "http.request", "description": EVIL},
        "decision": {"rule_ids": [EVIL]},
    }
    html = _render("approvals.html", gates=[gate], can_decide=True, notice=None, now=T0)
    _assert_inert(html, 4)
    assert 'name="args_hash" value="sha256:1111' in html  # the decision is bound to it


def test_the_plan_screen_escapes_rationale_prompts_and_raw_responses() -> None:
    body = {
        "intent": EVIL,
        "rationale": EVIL,
        "confidence": None,
        "created_by": "a",
        "catalog_version": "c" * 20,
        "policy_version": "p" * 20,
        "planner": {
            "backend": "openai",
            "model": EVIL,
            "prompt_version": None,
            "template_id": None,
        },
    }
    version = {
        "plan_id": "p1",
        "version": 1,
        "parent_version": None,
        "status": "ready",
        "content_hash": "sha256:" + "2" * 64,
        "created_at": "2026-11-26T09:00:00Z",
        "cache_hit": False,
        "validation": {
            "valid": False,
            "issues": [{"code": "schema", "step_id": None, "path": "", "message": EVIL}],
        },
        "policy_decisions": [],
        "steps": [
            {"id": "a", "tool": "noop", "depends_on": [], "description": None, "args": {"v": EVIL}}
        ],
        "plan": body,
    }
    provenance = {
        "version": 1,
        "cache_hit": False,
        "cached_from": None,
        "attempts": [
            {
                "attempt": 1,
                "backend": "openai",
                "model": "m",
                "prompt_version": None,
                "messages": [{"role": "user", "content": EVIL}],
                "parameters": {},
                "raw_response": EVIL,
                "input_tokens": 1,
                "output_tokens": 2,
                "latency_s": 0.1,
                "error": EVIL,
                "issues": [],
            }
        ],
    }
    html = _render(
        "plan.html",
        plan=version,
        versions=[version],
        provenance=provenance,
        decisions={},
        diff=None,
        old=None,
        new=None,
    )
    # intent, rationale, model (twice), issue, args, prompt, raw response, error
    _assert_inert(html, 8)
