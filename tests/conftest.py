"""Shared fixtures: real Postgres databases, a planner app, API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from planner_service.app import create_app
from planner_service.settings import PlannerSettings
from shared_schemas import Role

from .pg import TestDatabases
from .support.demo_catalog import demo_catalog


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[TestDatabases]:
    dbs = TestDatabases()
    await dbs.setup()
    try:
        yield dbs
    finally:
        await dbs.teardown()


@pytest.fixture
async def db_url(databases: TestDatabases) -> AsyncIterator[str]:
    """A fresh migrated database for one test."""
    url = await databases.clone()
    try:
        yield url
    finally:
        await databases.drop(url)


@dataclass
class Keys:
    """API keys of two tenants, for the planner app under test."""

    acme_submitter: str
    acme_approver: str
    globex_submitter: str
    make: Callable[..., Awaitable[str]]


@pytest.fixture(scope="session")
def demo_catalog_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo tool catalog as a JSON file, the way a deployment without an executor sets it."""
    path = tmp_path_factory.mktemp("catalog") / "demo_catalog.json"
    path.write_text(demo_catalog().model_dump_json(), encoding="utf-8")
    return path


@pytest.fixture
async def planner_settings(db_url: str, demo_catalog_file: Path) -> PlannerSettings:
    return PlannerSettings(
        database_url=db_url,
        env="test",
        signing_key="k" * 40,
        catalog_file=demo_catalog_file,
        _env_file=None,
    )


@pytest.fixture
async def planner(planner_settings: PlannerSettings) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client bound to a running planner app (lifespan entered) on a fresh database."""
    app = create_app(planner_settings)
    async with app.router.lifespan_context(app):
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://planner") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@pytest.fixture
async def keys(db_url: str) -> AsyncIterator[Keys]:
    engine = create_engine(db_url, pool_size=1, max_overflow=0)
    store = ApiKeyStore(engine)

    async def make(tenant: str, *roles: Role, scopes: tuple[str, ...] = ()) -> str:
        issued = await store.create(
            tenant=tenant, subject=f"{tenant}-user", roles=roles, scopes=scopes
        )
        return issued.token

    try:
        yield Keys(
            acme_submitter=await make("acme", Role.SUBMITTER),
            acme_approver=await make("acme", Role.APPROVER),
            globex_submitter=await make("globex", Role.SUBMITTER),
            make=make,
        )
    finally:
        await engine.dispose()
