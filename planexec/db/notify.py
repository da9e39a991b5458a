"""Wake-ups over Postgres ``LISTEN``/``NOTIFY``, so idle waiters need not poll fast.

One dedicated asyncpg connection per process listens on the channels; a ``NOTIFY`` sets the
channel's ``asyncio.Event``. Waiters still poll at a slow interval, so a lost notification
(e.g. while reconnecting) only delays work, never loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import asyncpg
import structlog

_log = structlog.get_logger("planexec.notify")


def asyncpg_dsn(url: str) -> str:
    """A DSN asyncpg accepts from a SQLAlchemy-style ``postgresql+asyncpg://`` URL."""
    _scheme, sep, rest = url.partition("://")
    return f"postgresql://{rest}" if sep else url


def _set_event(event: asyncio.Event, *_: object) -> None:
    event.set()


class Notifier:
    """Listens on channels and exposes one wake-up event per channel."""

    def __init__(self, url: str, channels: list[str]) -> None:
        self._dsn = asyncpg_dsn(url)
        self._events = {channel: asyncio.Event() for channel in channels}
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None

    def event(self, channel: str) -> asyncio.Event:
        """The event set whenever ``channel`` is notified."""
        return self._events[channel]

    async def wait(self, channel: str, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` seconds for a notification; True when one came."""
        event = self._events[channel]
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            return False
        event.clear()
        return True

    async def start(self) -> None:
        """Connect and listen; reconnects in the background when the connection drops."""
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                self._conn = await asyncpg.connect(self._dsn)
                for channel in self._events:
                    await self._conn.add_listener(channel, self._on_notify)
                closed = asyncio.Event()
                self._conn.add_termination_listener(functools.partial(_set_event, closed))
                for event in self._events.values():
                    event.set()  # anything may have happened while not listening
                await closed.wait()
            except (OSError, asyncpg.PostgresError) as exc:
                _log.warning("notify_listener_down", error=str(exc))
            await asyncio.sleep(1.0)

    def _on_notify(self, _conn: Any, _pid: int, channel: str, _payload: str) -> None:
        event = self._events.get(channel)
        if event is not None:
            event.set()

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._conn is not None and not self._conn.is_closed():
            await self._conn.close()
