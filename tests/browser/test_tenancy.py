"""In Chromium: another tenant sees none of acme's runs, gates or plans, by list or by URL."""

from __future__ import annotations

from pathlib import Path

from .console import Browser, Console


def test_another_tenant_sees_nothing_of_acme(
    browser: Browser, console: Console, screenshots: Path
) -> None:
    plan = console.plan(
        [
            console.effect_step("quote", "quote-3"),
            console.effect_step("pay", "pay-3", depends_on=["quote"]),
        ],
        "Pay the catering invoice",
    )
    run_id = console.start(plan)
    console.wait_status(run_id, "paused")

    browser.login("lead")
    browser.open("/runs")
    assert browser.find_all(f'#runs tr[data-run="{run_id}"]')
    browser.screenshot(screenshots / "runs.png")
    browser.open("/approvals")
    assert browser.find_all(f"#gate-{run_id}-pay")

    browser.login("other")  # globex
    assert browser.text("#who-tenant") == "globex"
    browser.open("/runs")
    assert not browser.find_all(f'#runs tr[data-run="{run_id}"]')
    browser.open(f"/runs?plan={plan['plan_id']}")
    assert browser.find_all("#no-runs") and not browser.find_all("#runs")
    browser.open("/approvals")
    assert not browser.find_all(f"#gate-{run_id}-pay")

    browser.open(f"/runs/{run_id}")
    assert browser.find(".error-page").get_attribute("data-status") == "404"
    assert run_id in browser.text("#error-detail")
    assert not browser.find_all("#dag")
    browser.open(f"/plans/{plan['plan_id']}")  # the planner, asked with globex's key, says 404
    assert browser.find(".error-page").get_attribute("data-status") == "404"

    # nor by the live stream or a forged decision (with globex's own valid CSRF token)
    status = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/ui/runs/{run_id}/stream').then(r => done(r.status));"
    )
    assert status == 404
    token = browser.find("input[name=csrf_token]").get_attribute("value")
    status = browser.driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"fetch('/ui/approvals/{run_id}/pay', {{method: 'POST',"
        " headers: {'Content-Type': 'application/json'},"
        " body: JSON.stringify({csrf_token: arguments[0], decision: 'approve'})})"
        ".then(r => done(r.status));",
        token,
    )
    assert status == 404
    assert console.run(run_id)["status"] == "paused"  # the gate still waits for acme
