"""In Chromium: log in, and watch a run progress live on the run screen without a reload."""

from __future__ import annotations

import json
import re
from pathlib import Path

from .console import Browser, Console

HOSTILE = '<script>window.__pwned = true</script><b id="injected">bold</b>'
"""A tool output that would run a script and add an element if it were rendered as HTML."""

COLOUR = {
    "blocked": "rgb(203, 210, 217)",
    "ready": "rgb(147, 197, 253)",
    "running": "rgb(37, 99, 235)",
    "succeeded": "rgb(22, 163, 74)",
}
"""Fill of a DAG node by state (console.css)."""


def test_login_refuses_a_bad_key_then_lands_where_it_was_asked_for(browser: Browser) -> None:
    browser.open("/approvals")
    assert browser.path() == "/ui/login?next=%2Fui%2Fapprovals"
    browser.find("#api_key").send_keys("pxk_000000000000_not-a-key")
    browser.find("#login").click()
    flash = browser.wait(lambda: browser.find("#flash .flash"))
    assert "That API key is not valid." in flash.text
    assert browser.path().startswith("/ui/login")

    field = browser.find("#api_key")
    field.clear()
    field.send_keys(browser.console.keys["operator"])
    browser.find("#login").click()
    browser.wait(lambda: _assert_equal(browser.path(), "/ui/approvals"))
    assert browser.text("#who-subject") == "ops@acme"
    assert browser.text("#who-tenant") == "acme"
    cookie = browser.driver.get_cookie("planexec_ui")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert browser.driver.execute_script("return document.cookie") == ""  # not readable by JS

    browser.logout()
    browser.open("/runs")
    assert browser.path().startswith("/ui/login")  # the session is gone


def test_a_run_progresses_live_on_its_screen_and_tool_output_is_shown_as_text(
    browser: Browser, console: Console, screenshots: Path
) -> None:
    plan = console.plan(
        [
            {"id": "fetch", "tool": "noop", "args": {"value": {"note": HOSTILE}}},
            {
                "id": "count",
                "tool": "transform",
                "depends_on": ["fetch"],
                "args": {"data": [3, 4, 5], "expression": "length(@)"},
            },
            {
                "id": "pause",
                "tool": "wait",
                "depends_on": ["fetch"],
                "args": {"seconds": 2.5},
                "timeout_s": 30,
            },
            {
                **console.effect_step("report", "live-report", depends_on=["count", "pause"]),
                "args": {
                    "method": "POST",
                    "url": f"{console.sink.base_url}/effects/live-report",
                    "json": {"count": {"$ref": "count.output"}},
                },
            },
        ],
        "Count the batch, wait for the upstream window, then report",
    )
    console.sink.slow("live-report", 1.5)
    browser.login("operator")
    run_id = console.start(plan)
    browser.console_errors()  # drain the log: what follows is this page's
    browser.open(f"/runs/{run_id}")
    browser.driver.execute_script("window.__sameDocument = 'yes'")
    # the wait (an idempotent tool: the engine records it when it ends) is not done yet
    before = browser.node("pause").get_attribute("data-status")
    assert before in ("blocked", "ready"), before
    assert browser.node_fill("pause") == COLOUR[before]
    assert browser.text("#run-status") in ("pending", "running")

    def status_of(step_id: str, status: str) -> None:
        _assert_equal(browser.node(step_id).get_attribute("data-status"), status)

    browser.wait(lambda: status_of("pause", "succeeded"))
    assert browser.node_fill("pause") == COLOUR["succeeded"]
    # the slow call (not idempotent: recorded as started before it is made) shows running
    browser.wait(lambda: status_of("report", "running"))
    assert browser.node_fill("report") == COLOUR["running"]
    assert browser.text("#run-status") == "running"
    browser.wait(lambda: status_of("report", "succeeded"))
    assert browser.node_fill("report") == COLOUR["succeeded"]
    browser.wait(lambda: _assert_equal(browser.text("#run-status"), "succeeded"))
    # the page changed in place: the same document, no reload, and the stream said it ended
    assert browser.driver.execute_script("return window.__sameDocument") == "yes"
    assert not browser.find_all(".live")
    run = console.run(run_id)
    assert run["status"] == "succeeded"

    # the tool output is text on the page: no script ran, no element was added
    output = browser.find("#step-fetch pre.output").text
    assert json.loads(output) == {"ok": True, "echo": {"note": HOSTILE}}
    assert browser.driver.execute_script("return window.__pwned === undefined") is True
    assert browser.find_all("#injected") == []

    # resolved arguments, policy decision with its rule, attempts, trace id
    assert json.loads(browser.find("#step-report pre.args").text)["json"] == {"count": 3}
    assert "planexec.read-tools-for-submitters" in browser.text("#step-fetch .policy")
    rows = {r.get_attribute("data-step"): r for r in browser.find_all("#attempts tbody tr")}
    assert set(rows) == {"fetch", "count", "pause", "report"}
    waited = rows["pause"].find_element("css selector", ".duration").text
    assert float(re.sub(r"[^0-9.]", "", waited)) >= 2.4, waited
    assert rows["pause"].get_attribute("data-status") == "succeeded"
    assert browser.text("#trace-id") == run["traceparent"].split("-")[1]
    edges = {
        (e.get_attribute("data-from"), e.get_attribute("data-to"))
        for e in browser.find_all("#dag path.edge")
    }
    assert edges == {
        ("fetch", "count"),
        ("fetch", "pause"),
        ("count", "report"),
        ("pause", "report"),
    }
    assert browser.console_errors() == []  # no CSP violation, no script error
    browser.screenshot(screenshots / "run.png")


def _assert_equal(got: object, expected: object) -> None:
    assert got == expected, got
