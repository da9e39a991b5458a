"""The console over plain HTTP (no browser): login, cookies, CSRF, roles, paging, filters.

Runs against the package's real stack; needs no Chromium.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest

from .console import Console

PROBLEM = "https://planexec.dev/problems/"


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


def _login(console: Console, who: str, **headers: str) -> httpx2.Client:
    """A client logged in with the key ``who`` through the login form."""
    client = httpx2.Client(base_url=console.pair.executor, timeout=30, headers=headers)
    form = client.get("/ui/login")
    assert form.status_code == 200
    response = client.post(
        "/ui/login",
        json={"api_key": console.keys[who], "csrf_token": _csrf(form.text), "next": "/ui/runs"},
    )
    assert response.status_code == 303, response.text
    return client


def _set_cookie(response: httpx2.Response, name: str) -> str:
    headers = [v for k, v in response.headers.multi_items() if k.lower() == "set-cookie"]
    found = [h for h in headers if h.startswith(f"{name}=")]
    assert found, headers
    return found[0]


@pytest.fixture
def waiting_run(console: Console) -> str:
    """A run of acme whose one step waits 60 s (cancelled by the test or left to run)."""
    plan = console.plan(
        [{"id": "hold", "tool": "wait", "args": {"seconds": 60}, "timeout_s": 120}], "hold on"
    )
    run_id = console.start(plan)
    console.wait_status(run_id, "running")
    return run_id


def test_pages_need_a_session_and_the_login_cookie_is_httponly_and_strict(
    console: Console,
) -> None:
    client = httpx2.Client(base_url=console.pair.executor, timeout=30)
    page = client.get("/ui/runs?status=failed")
    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%2Fruns%3Fstatus%3Dfailed"
    form = client.get("/ui/login")
    pre = _set_cookie(form, "planexec_ui_login")
    assert "HttpOnly" in pre and "SameSite=strict" in pre and "Path=/ui" in pre
    assert "Secure" not in pre  # plain http
    csp = form.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    token = _csrf(form.text)

    missing = client.post("/ui/login", json={"api_key": console.keys["operator"]})
    assert missing.status_code == 403
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert missing.json()["type"] == PROBLEM + "forbidden"
    forged = client.post(
        "/ui/login", json={"api_key": console.keys["operator"], "csrf_token": token[:-2] + "xx"}
    )
    assert forged.status_code == 403 and forged.json()["type"] == PROBLEM + "forbidden"

    wrong = client.post("/ui/login", json={"api_key": "pe_nope", "csrf_token": token})
    assert wrong.status_code == 401 and "That API key is not valid." in wrong.text
    assert "planexec_ui=" not in str(wrong.headers.get("set-cookie"))
    as_form = client.post("/ui/login", data={"api_key": "x", "csrf_token": token})
    assert as_form.status_code == 415  # the services take JSON bodies only, the console too

    good = client.post(
        "/ui/login",
        json={"api_key": console.keys["operator"], "csrf_token": token, "next": "//evil.test/x"},
    )
    assert good.status_code == 303 and good.headers["location"] == "/ui/runs"  # never off-site
    session = _set_cookie(good, "planexec_ui")
    assert "HttpOnly" in session and "SameSite=strict" in session and "Path=/ui" in session
    runs = client.get("/ui/runs")
    assert runs.status_code == 200 and "ops@acme" in runs.text

    altered = {"Cookie": f"planexec_ui={client.cookies['planexec_ui'][:-3]}abc"}
    assert httpx2.get(f"{console.ui}/runs", headers=altered).status_code == 303  # no session


def test_cookies_are_secure_behind_an_https_proxy(console: Console) -> None:
    https = {"X-Forwarded-Proto": "https"}  # uvicorn trusts it from loopback
    form = httpx2.get(f"{console.ui}/login", headers=https)
    pre = _set_cookie(form, "planexec_ui_login")
    assert "Secure" in pre
    response = httpx2.post(
        f"{console.ui}/login",
        json={"api_key": console.keys["operator"], "csrf_token": _csrf(form.text)},
        headers={**https, "Cookie": pre.split(";", 1)[0]},
    )
    assert response.status_code == 303, response.text
    assert "Secure" in _set_cookie(response, "planexec_ui")


def test_forms_need_this_sessions_csrf_token_and_the_role(
    console: Console, waiting_run: str
) -> None:
    operator = _login(console, "operator")
    other_session = _login(console, "operator")
    page = operator.get(f"/ui/runs/{waiting_run}")
    assert page.status_code == 200 and 'id="cancel-run"' in page.text
    token = _csrf(page.text)
    url = f"/ui/runs/{waiting_run}/cancel"

    assert operator.post(url).status_code == 403
    stolen = _csrf(other_session.get(f"/ui/runs/{waiting_run}").text)
    assert stolen != token
    refused = operator.post(url, json={"csrf_token": stolen})
    assert refused.status_code == 403
    assert refused.json()["type"] == PROBLEM + "forbidden"
    assert "CSRF" in refused.json()["detail"]
    assert console.run(waiting_run)["status"] == "running"

    submitter = _login(console, "submitter")
    seen = submitter.get(f"/ui/runs/{waiting_run}")
    assert 'id="cancel-run"' not in seen.text  # no button for a role that may not
    forbidden = submitter.post(url, json={"csrf_token": _csrf(seen.text)})
    assert forbidden.status_code == 403 and "operator role" in forbidden.json()["detail"]

    done = operator.post(url, json={"csrf_token": token})
    assert done.status_code == 303
    assert done.headers["location"] == f"/ui/runs/{waiting_run}?notice=cancel"
    console.wait_status(waiting_run, "cancelled")


def _run_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-run="([0-9a-f-]{36})"', html)


def test_the_runs_list_pages_with_a_cursor_and_filters_by_plan_status_and_time(
    console: Console,
) -> None:
    plan = console.plan([{"id": "n", "tool": "noop"}], "page me")
    first = console.start(plan)
    console.wait_status(first, "succeeded")
    client = _login(console, "submitter")
    every = httpx2.get(
        f"{console.pair.executor}/v1/runs", params={"limit": 200}, headers=console.h("submitter")
    ).json()["items"]
    expected = [r["run_id"] for r in every]
    assert len(expected) >= 2

    seen: list[str] = []
    url: str | None = "/ui/runs?limit=1"
    while url is not None:
        page = client.get(url)
        assert page.status_code == 200
        seen += _run_ids(page.text)
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        url = older.group(1).replace("&amp;", "&") if older else None
    assert seen == expected  # every run once, newest first, across the pages

    by_plan = client.get("/ui/runs", params={"plan": plan["plan_id"]})
    assert _run_ids(by_plan.text) == [first]
    assert (
        _run_ids(client.get("/ui/runs", params={"plan": plan["plan_id"], "status": "failed"}).text)
        == []
    )
    created = datetime.fromisoformat(console.run(first)["created_at"])
    window: dict[str, Any] = {
        "plan": plan["plan_id"],
        "created_from": (created - timedelta(seconds=1))
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%S"),
        "created_to": (created + timedelta(seconds=1))
        .astimezone(UTC)
        .strftime("%Y-%m-%dT%H:%M:%S"),
    }
    assert _run_ids(client.get("/ui/runs", params=window).text) == [first]
    later = {**window, "created_from": window["created_to"], "created_to": ""}
    assert _run_ids(client.get("/ui/runs", params=later).text) == []
    operator = _login(console, "operator")
    token = _csrf(operator.get(f"/ui/runs/{first}").text)
    forked = operator.post(f"/ui/runs/{first}/fork", json={"csrf_token": token, "from_step": "n"})
    assert forked.status_code == 303, forked.text
    fork_id = forked.headers["location"].split("/ui/runs/")[1].split("?")[0]
    fork = console.wait_status(fork_id, "succeeded")
    assert (fork["parent_run_id"], fork["fork_from_step"]) == (first, "n")
    bad = client.get("/ui/runs", params={"plan": "not-a-uuid", "created_from": "yesterday"})
    assert bad.status_code == 200
    assert "plan: not a plan id" in bad.text and "from: not a date and time" in bad.text
    assert _run_ids(bad.text) == []


def test_console_routes_stay_out_of_the_api_document_and_scripts_are_served_locally(
    console: Console,
) -> None:
    spec = httpx2.get(f"{console.pair.executor}/openapi.json").json()
    assert not [p for p in spec["paths"] if p.startswith("/ui")]
    script = httpx2.get(f"{console.ui}/static/htmx.min.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert "htmx" in script.text[:200]
    assert httpx2.get(f"{console.ui}/static/htmx-ext-sse.js").status_code == 200
    client = _login(console, "submitter")
    page = client.get("/ui/runs")
    assert "https://" not in re.sub(r'href="[^"]*"', "", page.text.split("</head>")[0])


def test_a_decision_needs_the_approver_role_and_the_arguments_shown(console: Console) -> None:
    steps = [console.effect_step("pay", "pay-http")]
    run_id = console.start(console.plan(steps, "Pay over HTTP"))
    gate = next(s for s in console.wait_status(run_id, "paused")["steps"] if s["step_id"] == "pay")
    url = f"/ui/approvals/{run_id}/pay"

    submitter = _login(console, "submitter")
    inbox = submitter.get("/ui/approvals")
    assert f'id="gate-{run_id}-pay"' in inbox.text  # the tenant's gates are visible
    assert 'value="approve"' not in inbox.text  # but not decidable without the role
    body = {"csrf_token": _csrf(inbox.text), "decision": "approve", "args_hash": gate["args_hash"]}
    refused = submitter.post(url, json=body)
    assert refused.status_code == 403 and "approver role" in refused.json()["detail"]

    approver = _login(console, "approver")
    token = _csrf(approver.get("/ui/approvals").text)
    stale = approver.post(
        url, json={**body, "csrf_token": token, "args_hash": "sha256:" + "0" * 64}
    )
    assert stale.status_code == 409 and gate["args_hash"] in stale.text  # an HTML page
    assert stale.headers["content-type"].startswith("text/html")
    assert console.run(run_id)["status"] == "paused"
    ok = approver.post(url, json={**body, "csrf_token": token}, headers={"HX-Request": "true"})
    assert ok.status_code == 204 and ok.headers["hx-redirect"] == "/ui/approvals?notice=approve"
    assert console.wait_status(run_id, "succeeded")["approvals"][0]["decided_by"] == "rita@acme"


def test_the_live_stream_refuses_an_event_number_beyond_the_column_with_a_problem(
    console: Console,
) -> None:
    """``seq`` is a Postgres ``integer``: a larger ``Last-Event-ID`` or ``after`` is a 422."""
    plan = console.plan([{"id": "n", "tool": "noop"}], "stream me")
    run_id = console.start(plan)
    console.wait_status(run_id, "succeeded")
    client = _login(console, "submitter")
    too_big = str(2**31)
    for response in (
        client.get(f"/ui/runs/{run_id}/stream", headers={"Last-Event-ID": too_big}),
        client.get(f"/ui/runs/{run_id}/stream", params={"after": too_big}),
    ):
        assert response.status_code == 422, response.text
        assert response.json()["type"] == PROBLEM + "validation-error"
