"""Test databases: the Postgres on 127.0.0.1:5432 when it answers, else the embedded one.

Migrations run once into a template database; each test gets a clone (``CREATE DATABASE ...
TEMPLATE``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from planexec.db import start_embedded, upgrade

LOCAL_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _local_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            return True
    except OSError:
        return False


def admin_dsn() -> str:
    """A DSN of the maintenance database of the test server (starting it if embedded)."""
    if os.environ.get("PLANEXEC_TEST_ADMIN_DSN"):
        return os.environ["PLANEXEC_TEST_ADMIN_DSN"]
    if _local_answers():
        return LOCAL_DSN
    server = start_embedded(Path(__file__).resolve().parent.parent / ".data" / "test")
    return f"postgresql://postgres@/postgres?host={server.socket_dir}"


def with_database(dsn: str, name: str) -> str:
    """``dsn`` pointing at database ``name`` instead."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{name}"))


class TestDatabases:
    """Creates the migrated template once and hands out clones of it."""

    def __init__(self) -> None:
        self.admin = admin_dsn()
        self.template = f"planexec_tmpl_{uuid.uuid4().hex[:10]}"
        self.created: list[str] = []

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def setup(self) -> None:
        await self._admin(f'CREATE DATABASE "{self.template}"')
        await asyncio.to_thread(upgrade, with_database(self.admin, self.template))

    async def clone(self) -> str:
        name = f"planexec_t_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"')
        self.created.append(name)
        return with_database(self.admin, name)

    async def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)

    async def teardown(self) -> None:
        for name in list(self.created):
            await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await self._admin(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
