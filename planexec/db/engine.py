"""The async SQLAlchemy engine (asyncpg driver) and URL handling."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .embedded import start_embedded

if TYPE_CHECKING:
    from planexec.settings import CommonSettings


def to_asyncpg_url(url: str) -> str:
    """Normalise a Postgres URL to the ``postgresql+asyncpg://`` dialect SQLAlchemy needs.

    Accepts ``postgres://``, ``postgresql://`` and ``postgresql+<driver>://`` forms.

    Raises:
        ValueError: for a URL that is not Postgres (planexec never uses SQLite).

    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+")[0] not in {"postgres", "postgresql"}:
        raise ValueError(f"PLANEXEC_DATABASE_URL must be a postgresql:// URL, got {scheme!r}")
    return f"postgresql+asyncpg://{rest}"


def database_url_for(settings: CommonSettings) -> str:
    """The database URL to use: ``settings.database_url``, else the embedded server's.

    Starting the embedded server is a blocking call of a second or two; call this once at
    process start, not per request.
    """
    if settings.database_url:
        return to_asyncpg_url(settings.database_url)
    return start_embedded(settings.data_dir).url()


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 5) -> AsyncEngine:
    """Create the process's async engine.

    No ``pool_pre_ping``: it costs a round trip per checkout. A connection broken by a server
    restart raises a disconnect error instead, which invalidates the pool, and the request
    fails with a retryable 503.
    """
    return create_async_engine(
        to_asyncpg_url(url),
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
    )
