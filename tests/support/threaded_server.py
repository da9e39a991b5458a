"""An ASGI app served by uvicorn in a daemon thread of the test process, on a given socket."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp


class ThreadedServer:
    """Serve ``app`` on ``sock``; ``start()`` returns once connections are accepted."""

    def __init__(self, app: ASGIApp, sock: socket.socket, name: str) -> None:
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._sock = sock
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name=name
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Run the server thread and wait until it serves.

        Raises:
            RuntimeError: when it is not serving within ``timeout_s`` seconds.
        """
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"{self._thread.name} did not start")
            time.sleep(0.01)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the server to exit and join its thread."""
        self._server.should_exit = True
        self._thread.join(timeout=timeout_s)
