"""The real ``httpbin`` Flask app (PyPI ``httpbin``) on loopback, in a background thread.

``with HttpbinServer() as httpbin: httpbin.base_url`` serves it on ``127.0.0.1`` and a free port
with werkzeug's threaded server; ``start()`` / ``stop()`` do the same for fixtures. As a process:
``python -m planexec.demo.httpbin_server [--host H] --port N`` prints ``READY port=<port>`` once
listening, and stops on SIGINT or SIGTERM (as PID 1 of a container, too).
"""

from __future__ import annotations

import argparse
import signal
import threading

from httpbin import app
from werkzeug.serving import BaseWSGIServer, make_server


class HttpbinServer:
    """httpbin on ``host:port`` (port 0 picks a free one) in a daemon thread of this process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://<host>:<port>``, no trailing slash."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> HttpbinServer:
        """Bind and serve; returns once the socket listens."""
        server = self._server = make_server(self.host, self.port, app, threaded=True)
        self.port = server.server_port
        self._thread = threading.Thread(target=server.serve_forever, daemon=True, name="httpbin")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, join the thread and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> HttpbinServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``--host`` (default ``127.0.0.1``), ``--port`` (default 0: any free)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface (0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Serve httpbin until interrupted (``--host``, ``--port``)."""
    options = build_parser().parse_args(argv)

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    # PID 1 of a container gets no default SIGTERM action: without a handler, `docker compose
    # stop` would wait for its timeout and then kill.
    signal.signal(signal.SIGTERM, interrupt)
    server = make_server(options.host, options.port, app, threaded=True)
    print(f"READY port={server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
