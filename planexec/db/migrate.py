"""Run the Alembic migrations of both schemas (``planner`` and ``executor``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

from .engine import to_asyncpg_url


def alembic_config(url: str) -> Config:
    """An Alembic ``Config`` for the packaged ``migrations`` directory and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.set_main_option("sqlalchemy.url", to_asyncpg_url(url).replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (blocking; call off the event loop).

    Raises:
        alembic.util.CommandError: when the revision is unknown.
        sqlalchemy.exc.OperationalError: when the database cannot be reached.

    """
    command.upgrade(alembic_config(url), revision)
