"""Postgres access shared by both services: engine, embedded server, migrations."""

from .embedded import EmbeddedPostgres, start_embedded
from .engine import create_engine, database_url_for, to_asyncpg_url
from .migrate import upgrade

__all__ = [
    "EmbeddedPostgres",
    "create_engine",
    "database_url_for",
    "start_embedded",
    "to_asyncpg_url",
    "upgrade",
]
