"""A TCP proxy that can black-hole traffic: the network partition of R18 (RELIABILITY §2).

Clients connect to the proxy's port on 127.0.0.1; each connection is forwarded to the
upstream ``host:port``. ``partition()`` black-holes every connection, open and new, the way a
dropped link or a firewall ``DROP`` rule does: connections are accepted (or stay open) but no
byte passes in either direction and no FIN or RST is sent, so a client only notices through
its own timeouts. Bytes sent during the partition wait (the proxy stops reading once it
holds a chunk, so senders fill their socket buffers) and are delivered after ``heal()``, as
TCP retransmits them once the link is back: a statement a client gave up on may still reach
the server after the heal, which is the stale write a lease fence must stop. Connections
opened during the partition hang until the heal. ``reset()`` closes every connection at once.

It runs in a thread with its own event loop, so a test's own loop (and blocking calls) do
not slow it down::

    with TcpProxy("127.0.0.1", 5432) as proxy:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/db"
        proxy.partition(); ...; proxy.heal()

(Toxiproxy does the same as a server binary, which is not installable here.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

_CHUNK = 65_536


class TcpProxy:
    """Forwards 127.0.0.1:``port`` to ``upstream_host:upstream_port``; can black-hole."""

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._healed = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self.connections = 0
        """Connections accepted so far."""
        self.held_bytes = 0
        """Bytes that arrived during a partition."""
        self.delivered_late_bytes = 0
        """Of those, bytes delivered after the heal (the rest: their connection ended)."""

    # -- control (any thread) -----------------------------------------------------------------

    def start(self) -> TcpProxy:
        """Listen and forward (healed)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def partition(self) -> None:
        """Black-hole every connection: accept, hold what arrives, never answer or close."""
        self._loop.call_soon_threadsafe(self._healed.clear)

    def heal(self) -> None:
        """Forward again."""
        self._loop.call_soon_threadsafe(self._healed.set)

    @property
    def partitioned(self) -> bool:
        """Whether traffic is black-holed now."""
        return not self._healed.is_set()

    def reset(self) -> None:
        """Close every open connection (both sides see the connection end)."""
        self._loop.call_soon_threadsafe(self._close_all)

    def stop(self) -> None:
        """Close the listener and every connection; stop the thread."""
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the loop -------------------------------------------------------------------------------

    async def _listen(self) -> None:
        self._healed.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(client_w)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            await self._healed.wait()  # a connection made during a partition hangs
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
            self._writers.add(upstream_w)
            await asyncio.gather(self._pump(client_r, upstream_w), self._pump(upstream_r, client_w))
        except OSError:
            pass
        finally:
            for writer in (client_w, upstream_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy ``reader`` to ``writer``; while partitioned, hold what was read until healed."""
        try:
            while True:
                data = await reader.read(_CHUNK)
                if not data:
                    break
                if not self._healed.is_set():
                    self.held_bytes += len(data)
                    await self._healed.wait()
                    self.delivered_late_bytes += len(data)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            # The end of a connection is news too: it does not cross a partition.
            await self._healed.wait()
            # The other direction must end too (a half-closed Postgres link is useless).
            if not writer.is_closing():
                writer.close()

    def _close_all(self) -> None:
        for writer in list(self._writers):
            transport = writer.transport
            with contextlib.suppress(OSError):
                transport.abort()
        self._writers.clear()

    async def _shutdown(self) -> None:
        self._healed.set()
        if self._server is not None:
            self._server.close()
            self._close_all()
            await self._server.wait_closed()
        self._close_all()
