"""In Chromium: the plan screen. Versions, a diff between two, the validation report and the
provenance of each generation attempt of an LLM-made plan (prompt, raw response, tokens)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2

from planner_service.backends.openai_backend import draft_to_wire
from shared_schemas import PlanDraft

from .console import Browser, Console

BROKEN = 'Sure! <img src=x onerror="window.__pwned = 1"> here is no JSON at all'
"""A first model answer that is not a plan, with markup that must stay text."""
RATIONALE = "<script>window.__pwned = 2</script>Read the log, then summarise it."

STEPS: list[dict[str, Any]] = [
    {"id": "seed", "tool": "noop", "args": {"value": ["a", "b"]}},
    {
        "id": "size",
        "tool": "transform",
        "depends_on": ["seed"],
        "args": {"data": {"$ref": "seed.output/echo"}, "expression": "length(@)"},
    },
]


def _wire(steps: list[dict[str, Any]]) -> str:
    draft = PlanDraft.model_validate({"steps": steps, "rationale": RATIONALE, "confidence": 0.8})
    return json.dumps(draft_to_wire(draft))


def _post(console: Console, path: str, body: dict[str, Any]) -> Any:
    response = httpx2.post(
        f"{console.pair.planner}{path}", json=body, headers=console.h("submitter"), timeout=60
    )
    assert response.status_code == 201, response.text
    return response.json()


def test_the_plan_screen_shows_versions_a_diff_validation_and_provenance(
    browser: Browser, console: Console, screenshots: Path
) -> None:
    console.llm.script([BROKEN, _wire(STEPS)])
    v1 = _post(
        console,
        "/v1/plans",
        {"intent": "Count the seeds", "backend": "openai", "options": {"max_repairs": 1}},
    )
    assert (v1["status"], v1["version"]) == ("ready", 1)
    plan_id = v1["plan_id"]
    revised = [STEPS[0], {**STEPS[1], "args": {**STEPS[1]["args"], "expression": "sort(@)"}}]
    v2 = _post(
        console, f"/v1/plans/{plan_id}/revisions", {"base_version": 1, "draft": {"steps": revised}}
    )
    assert (v2["status"], v2["version"]) == ("ready", 2)
    broken = [*revised, {"id": "ghost", "tool": "no.such.tool", "depends_on": ["size"]}]
    v3 = _post(
        console, f"/v1/plans/{plan_id}/revisions", {"base_version": 2, "draft": {"steps": broken}}
    )
    assert (v3["status"], v3["version"]) == ("rejected", 3)

    browser.login("submitter")
    browser.open("/plans")
    row = browser.find(f'#plans tr[data-plan="{plan_id}"]')
    assert "rejected" in row.text and "v3" in row.text
    row.find_element("css selector", "a").click()

    # the latest version: its validation report says why it was rejected
    browser.wait(lambda: browser.find("#versions"))
    versions = [r.get_attribute("data-version") for r in browser.find_all("#versions tbody tr")]
    assert versions == ["3", "2", "1"]
    assert "unknown_tool" in browser.text("#validation")
    assert "no.such.tool" in browser.text("#validation")

    # the diff between v1 and v2, and the provenance of v1 (made by the LLM in two attempts)
    browser.open(f"/plans/{plan_id}?v=1&a=1&b=2")
    added = [e.text for e in browser.find_all("#diff .d-add")]
    removed = [e.text for e in browser.find_all("#diff .d-del")]
    assert any('"expression": "sort(@)"' in line for line in added), added
    assert any('"expression": "length(@)"' in line for line in removed), removed
    assert "Valid" in browser.text("#validation")
    attempts = browser.find_all("#provenance .gen-attempt")
    assert [a.get_attribute("data-attempt") for a in attempts] == ["1", "2"]
    first, second = attempts
    assert first.find_element("css selector", ".raw-response").text == BROKEN
    assert "scripted-model" in first.text
    for attempt in attempts:
        tokens = attempt.find_element("css selector", ".tokens").text
        assert tokens.split(" in")[0].isdigit(), tokens  # prompt tokens reported
        assert attempt.find_element("css selector", ".latency").text.endswith(" s")
    second.find_element("css selector", "details summary").click()
    assert "Count the seeds" in second.find_element("css selector", "details").text
    assert browser.text("#rationale") == RATIONALE  # LLM text is shown, not run
    assert browser.driver.execute_script("return window.__pwned === undefined") is True
    assert browser.find_all("#provenance img") == []
    browser.screenshot(screenshots / "plan.png")
