"""Fixtures of the browser tests: one real stack for the package, headless Chromium per module.

The planner, the executor (which serves the console at ``/ui``) and a worker run as processes
(``start_pair`` of the end-to-end tests) on one database for the whole package; the recording
server is the tool target and a scripted OpenAI-compatible server plays the LLM. Chromium and
chromedriver are the Debian packages (``.ci/run`` installs them); Selenium Manager is never
asked for anything, because both paths are given.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from shared_schemas import Role

from ..e2e.conftest import start_pair
from ..pg import TestDatabases
from ..support.recording_server import RecordingServer
from ..support.scripted_llm import ScriptedLLM
from .console import CHROMEDRIVER, CHROMIUM, Browser, Console

GATE_POLICY = """
@id("console.payments-need-approval")
forbid (principal, action == Planexec::Action::"invoke_unattended", resource)
when { resource.name == "http.request" && context.step_id == "pay" };
"""
"""Any ``http.request`` step called ``pay`` waits for an approver."""


@pytest.fixture(scope="package")
async def console_db(databases: TestDatabases) -> AsyncIterator[str]:
    """One migrated database for every browser test (the stack is started once)."""
    url = await databases.clone()
    try:
        yield url
    finally:
        await databases.drop(url)


@pytest.fixture(scope="package")
async def console_keys(console_db: str) -> dict[str, str]:
    """The keys of ``tests/e2e/conftest.py::keys_for`` (that fixture is per test, the stack
    here per package), plus ``lead``: an acme approver and operator."""
    engine = create_engine(console_db, pool_size=1, max_overflow=0)
    store = ApiKeyStore(engine)

    async def make(tenant: str, subject: str, *roles: Role, scopes: tuple[str, ...] = ()) -> str:
        issued = await store.create(tenant=tenant, subject=subject, roles=roles, scopes=scopes)
        return issued.token

    try:
        return {
            "service": await make(
                "system", "system-operator", Role.OPERATOR, scopes=("planexec:dispatch",)
            ),
            "submitter": await make("acme", "ana@acme", Role.SUBMITTER, scopes=("http:request",)),
            "approver": await make("acme", "rita@acme", Role.APPROVER),
            "operator": await make("acme", "ops@acme", Role.OPERATOR),
            "lead": await make("acme", "lead@acme", Role.APPROVER, Role.OPERATOR),
            "other": await make(
                "globex", "eve@globex", Role.SUBMITTER, Role.APPROVER, Role.OPERATOR
            ),
        }
    finally:
        await engine.dispose()


@pytest.fixture(scope="package")
def console(
    console_db: str, console_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    """Planner, executor and worker as processes, with the sink and the scripted LLM."""
    root = tmp_path_factory.mktemp("console")
    policies = root / "policies"
    policies.mkdir()
    (policies / "console.cedar").write_text(GATE_POLICY, encoding="utf-8")
    with RecordingServer() as sink, ScriptedLLM() as llm:
        port = sink.base_url.rsplit(":", 1)[1]
        env = {
            "PLANEXEC_HTTP_ALLOW_NETWORKS": '["127.0.0.1/32"]',
            "PLANEXEC_HTTP_ALLOW_PORTS": f"[{port}]",
            "PLANEXEC_POLICY_DIR": str(policies),
            "PLANEXEC_APPROVAL_TIMEOUT_S": "3600",
            "PLANEXEC_LEASE_TTL_S": "3",
            "PLANEXEC_LLM_BASE_URL": llm.base_url,
            "PLANEXEC_LLM_API_KEY": "sk-test",
            "PLANEXEC_LLM_MODEL": "scripted-model",
        }
        with start_pair(console_db, console_keys, root, env) as pair:
            yield Console(pair, console_keys, sink, llm)


@pytest.fixture(scope="module")
def browser(console: Console) -> Iterator[Browser]:
    """One headless Chromium session per test module."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"the browser tests need the Debian packages chromium and chromium-driver"
            f" ({CHROMIUM}, {CHROMEDRIVER}); .ci/run installs them"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # belt and braces: never download a driver
    with Browser.start(console) as running:
        yield running


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    """Where the tests save the screens they check render (a temporary directory; the
    screenshots in ``docs/screenshots/`` come from the demo: ``make screenshots``)."""
    return tmp_path
