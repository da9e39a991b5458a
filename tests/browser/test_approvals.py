"""In Chromium: the approvals inbox. Approve a gate and see the step run; reject another and
see the earlier step compensated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .console import Browser, Console

RULE = "console.payments-need-approval"


def _gate(browser: Browser, run_id: str) -> Any:
    return browser.wait(lambda: browser.find(f"#gate-{run_id}-pay"))


def _paused(console: Console, steps: list[dict[str, Any]], intent: str) -> tuple[str, Any]:
    run_id = console.start(console.plan(steps, intent))
    run = console.wait_status(run_id, "paused")
    gate = next(s for s in run["steps"] if s["step_id"] == "pay")
    assert gate["status"] == "awaiting_approval"
    return run_id, gate


def test_an_approved_gate_runs_the_step_with_exactly_the_arguments_shown(
    browser: Browser, console: Console, screenshots: Path
) -> None:
    run_id, gate = _paused(
        console,
        [
            console.effect_step("quote", "quote-1"),
            {
                **console.effect_step("pay", "pay-1", depends_on=["quote"]),
                "description": "Pay the supplier the quoted amount.",
                "args": {
                    "method": "POST",
                    "url": f"{console.sink.base_url}/effects/pay-1",
                    "json": {"quote": {"$ref": "quote.output/json/effect"}, "amount_eur": 120},
                },
            },
        ],
        "Get a quote and pay the supplier",
    )
    browser.login("approver")
    browser.open("/approvals")
    card = _gate(browser, run_id)
    shown = json.loads(card.find_element("css selector", "pre.args").text)
    assert shown == gate["resolved_args"]  # exactly what will run, $ref resolved
    assert shown["json"]["amount_eur"] == 120 and isinstance(shown["json"]["quote"], int)
    assert RULE in card.find_element("css selector", ".rules").text
    assert card.find_element("css selector", ".args-hash").text == gate["args_hash"]
    deadline = card.find_element("css selector", ".deadline").text
    assert "UTC" in deadline and "(in " in deadline  # PLANEXEC_APPROVAL_TIMEOUT_S=3600
    assert "Pay the supplier" in card.text
    browser.screenshot(screenshots / "approvals.png")

    card.find_element("css selector", "textarea[name=comment]").send_keys("quote checked")
    card.find_element("css selector", "button[value=approve]").click()
    browser.wait(lambda: _assert_in("Approved", browser.text("#notice")))
    assert not browser.find_all(f"#gate-{run_id}-pay")

    browser.open(f"/runs/{run_id}")
    browser.wait(lambda: _assert_eq(browser.node("pay").get_attribute("data-status"), "succeeded"))
    browser.wait(lambda: _assert_eq(browser.text("#run-status"), "succeeded"))
    run = console.run(run_id)
    approval = run["approvals"][0]
    assert (approval["decision"], approval["decided_by"]) == ("approve", "rita@acme")
    assert (approval["comment"], approval["args_hash"]) == ("quote checked", gate["args_hash"])
    assert "pay-1" in console.effects()
    attempts = [r.get_attribute("data-step") for r in browser.find_all("#attempts tbody tr")]
    assert attempts == ["quote", "pay"]


def test_a_rejected_gate_fails_the_step_and_the_earlier_step_is_compensated(
    browser: Browser, console: Console
) -> None:
    run_id, _gate_row = _paused(
        console,
        [
            console.effect_step("venue", "venue-2", undo=True),
            {
                **console.effect_step("pay", "deposit-2", depends_on=["venue"]),
                "on_failure": "compensate",
            },
        ],
        "Reserve the venue, then pay the deposit",
    )
    browser.login("lead")  # approver and operator: decides, then watches the run
    browser.open(f"/runs/{run_id}")
    assert browser.node("pay").get_attribute("data-status") == "awaiting_approval"
    assert browser.node("venue").get_attribute("data-status") == "succeeded"
    browser.find(f'#actions a[href="/ui/approvals#gate-{run_id}-pay"]').click()
    card = _gate(browser, run_id)
    card.find_element("css selector", "textarea[name=comment]").send_keys("too expensive")
    card.find_element("css selector", "button[value=reject]").click()
    browser.wait(lambda: _assert_in("Rejected", browser.text("#notice")))

    browser.open(f"/runs/{run_id}")
    browser.wait(lambda: _assert_eq(browser.text("#run-status"), "failed"))
    assert browser.node("pay").get_attribute("data-status") == "failed"
    assert browser.node("venue").get_attribute("data-status") == "compensated"
    assert browser.node_fill("venue") == "rgb(109, 40, 217)"  # --st-compensated
    kinds = {
        (r.get_attribute("data-step"), r.get_attribute("data-kind"), r.get_attribute("data-status"))
        for r in browser.find_all("#attempts tbody tr")
    }
    assert ("venue", "compensation", "succeeded") in kinds
    assert "approval_rejected" in browser.text("#step-pay pre.error")
    assert "too expensive" in browser.text("#events")
    effects = console.effects()
    assert "undo-venue-2" in effects and "deposit-2" not in effects
    browser.find("#retry-run").click()  # an operator retries the failed run
    browser.wait(lambda: _assert_in("notice=retry", browser.path()))
    retry_id = browser.path().split("/ui/runs/")[1].split("?")[0]
    assert retry_id != run_id
    assert "retries the failed one" in browser.text("#notice")
    retry = console.wait_status(retry_id, "paused")  # the payment asks for an approval again
    assert retry["parent_run_id"] == run_id


def _assert_eq(got: object, expected: object) -> None:
    assert got == expected, got


def _assert_in(needle: str, text: str) -> None:
    assert needle in text, text
