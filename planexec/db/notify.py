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

    PING_S = 30.0
    """Seconds between liveness pings of an idle listening connection."""

    def __init__(self, url: str, channels: list[str], *, connect_timeout_s: float = 60.0) -> None:
        self._dsn = asyncpg_dsn(url)
        self._connect_timeout_s = connect_timeout_s
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
                self._conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout_s)
                for channel in self._events:
                    await self._conn.add_listener(channel, self._on_notify)
                closed = asyncio.Event()
                self._conn.add_termination_listener(functools.partial(_set_event, closed))
                for event in self._events.values():
                    event.set()  # anything may have happened while not listening
                while not closed.is_set():
                    # A partitioned link ends with neither FIN nor RST: ping now and then,
                    # so that a dead listener is replaced instead of waiting forever.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closed.wait(), self.PING_S)
                    if not closed.is_set():
                        await self._conn.execute("SELECT 1", timeout=self._connect_timeout_s)
            except Exception as exc:  # any failure: listen again (waiters also poll)
                _log.warning("notify_listener_down", error=f"{type(exc).__name__}: {exc}")
            await self._close()
            await asyncio.sleep(1.0)

    async def _close(self) -> None:
        """Drop the listening connection, if any."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # no goodbye round trip: the link may be dead

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
        await self._close()
