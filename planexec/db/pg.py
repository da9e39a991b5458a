"""Direct asyncpg access for the few statements on the execution hot path.

SQLAlchemy's async layer costs about 0.7 ms per statement here (measured: the executor's
commit statement takes 1.15 ms through it and 0.47 ms as an asyncpg prepared statement), which
is more than the commit itself. The engine's per-step statements therefore go straight to an
asyncpg pool; everything else uses SQLAlchemy.

The database may restart or become unreachable under a running worker (RELIABILITY R11,
R18). The pool then needs no ping per checkout: asyncpg marks a connection closed as soon as
the server's FATAL or the socket's end arrives and ``acquire`` opens a new one; a statement
that was in flight raises an error ``is_transient`` recognises, and the caller retries it
(with ``backoff_s``) or, for a write, first finds out whether it landed. A black-holed
connection (a partition: no FIN, no RST) is found by ``command_timeout_s``.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg

from .notify import asyncpg_dsn

_PARAM = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True)
class NamedQuery:
    """A SQL text with ``:name`` parameters turned into asyncpg's ``$n``."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        """Positional arguments in ``$n`` order.

        Raises:
            KeyError: for a parameter missing from ``params``.
        """
        return [params[name] for name in self.names]


def named(sql: str) -> NamedQuery:
    """Compile ``:name`` placeholders (not ``::casts``) to ``$1, $2, ...``."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return NamedQuery(_PARAM.sub(replace, sql), tuple(names))


async def _init(conn: asyncpg.Connection) -> None:
    # jsonb and json travel as text we serialise ourselves; results come back decoded.
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(
            type_name, encoder=str, decoder=json.loads, schema="pg_catalog", format="text"
        )


async def _no_reset(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's ``RESET ALL; UNLISTEN *; ...`` on release.

    It is a round trip (and a counted transaction) per statement; this pool's statements
    never change session state, so there is nothing to reset.
    """


async def create_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    command_timeout_s: float | None = None,
    connect_timeout_s: float = 60.0,
) -> asyncpg.Pool:
    """An asyncpg pool for ``url`` (SQLAlchemy-style URLs are accepted).

    Args:
        url: The database URL.
        min_size: Connections opened at once and kept open.
        max_size: Most connections open at a time.
        command_timeout_s: Seconds a statement may take before the client gives up on it
            (``TimeoutError``; the server is asked to cancel it). None: no limit, so a
            black-holed connection hangs its caller for good.
        connect_timeout_s: Seconds opening a connection may take (``TimeoutError``).

    Raises:
        OSError, asyncpg.PostgresError: when the first connection cannot be opened.
    """
    pool: asyncpg.Pool = await asyncpg.create_pool(
        asyncpg_dsn(url),
        min_size=min_size,
        max_size=max_size,
        init=_init,
        reset=_no_reset,
        command_timeout=command_timeout_s,
        timeout=connect_timeout_s,
    )
    return pool


_TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable; TimeoutError (a command or connect timeout) too
    asyncpg.PostgresConnectionError,  # SQLSTATE class 08: the connection does not exist, ...
    asyncpg.CannotConnectNowError,  # 57P03: the database system is starting up/shutting down
    asyncpg.AdminShutdownError,  # 57P01: terminating connection due to administrator command
    asyncpg.CrashShutdownError,  # 57P02: another server process crashed
    asyncpg.TooManyConnectionsError,  # 53300
    asyncpg.InterfaceError,  # the connection is closed (client side)
    # "cannot switch to state 12; another operation (2) is in progress": a connection whose
    # server sent its FATAL and went away, handed out again before the close was noticed
    # (met under R11). Protocol state of a dying connection, not an error of the statement.
    asyncpg.InternalClientError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether a database error may pass by itself: the server restarting or unreachable.

    Such an error says nothing about the statement: a write may or may not have been
    committed (the connection can break after the commit, before its answer). Errors of
    the statement itself (a constraint, a syntax error) are not transient.
    """
    return isinstance(exc, _TRANSIENT_TYPES)


def backoff_s(failures: int, *, base_s: float = 0.1, cap_s: float = 5.0) -> float:
    """Seconds to wait after ``failures`` failures in a row (>= 1).

    Capped exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
    And Jitter"): uniform in ``[0, min(cap_s, base_s * 2**failures)]``.
    """
    return random.uniform(0, min(cap_s, base_s * 2 ** min(failures, 20)))
