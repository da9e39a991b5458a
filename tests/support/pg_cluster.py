"""A throwaway PostgreSQL 15 cluster that a test may stop, restart and kill (R11, R18).

The shared server on 127.0.0.1:5432 must never be restarted: other tests use it. A chaos
test that restarts Postgres gets its own cluster instead: ``initdb`` into a temporary
directory, ``pg_ctl start`` on a free TCP port of 127.0.0.1 (trust authentication, no Unix
socket), and ``pg_ctl stop``/``start``/``restart`` at will. The binaries come from
``/usr/lib/postgresql/15/bin`` (``PLANEXEC_PG_BINDIR`` overrides). PostgreSQL refuses to run
as root, so when the test runs as root every command runs as the ``postgres`` OS user
(the child process switches user before it starts) and the data directory is handed to
that user.

``fsync=off`` makes it quick: a fast shutdown still keeps every acknowledged commit (only a
host crash would lose them), and a restart takes about half a second. The directory is a
fresh one under the system temp dir (pytest's ``tmp_path`` is private to root).

Usage::

    with PgCluster() as cluster:
        url = cluster.url("postgres")
        cluster.restart()
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

BINDIR = Path(os.environ.get("PLANEXEC_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
OS_USER = "postgres"


def available() -> bool:
    """Whether ``initdb`` and ``pg_ctl`` are installed (tests skip otherwise)."""
    return (BINDIR / "initdb").exists() and (BINDIR / "pg_ctl").exists()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """One private cluster: ``init()`` once, then ``start``/``stop``/``restart``/``kill``."""

    def __init__(self, root: Path | None = None, port: int | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="planexec-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = port or free_port()
        self._as_other = os.geteuid() == 0
        self.restarts = 0

    def url(self, database: str = "postgres") -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<database>``."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True, timeout_s: float = 60.0) -> str:
        command = [str(BINDIR / args[0]), *args[1:]]
        # As root, the child switches to the postgres user itself (setgid/setuid before exec):
        # no runuser, which lives in /usr/sbin, off a plain user's PATH.
        user = pwd.getpwnam(OS_USER) if self._as_other else None
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=self.root,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def init(self) -> PgCluster:
        """``initdb`` the data directory (trust auth, UTF8) and configure the server."""
        self.root.mkdir(parents=True, exist_ok=True)
        if self._as_other:
            user = pwd.getpwnam(OS_USER)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self.root.chmod(0o755)
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync",
        )  # fmt: skip
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": "''",
            "fsync": "off",
            "full_page_writes": "off",
            "max_connections": "100",
            "shared_buffers": "32MB",
            "log_min_messages": "warning",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``smart``, ``fast`` or ``immediate``: a crash) and wait."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, down_s: float = 0.0, mode: str = "fast") -> tuple[float, float]:
        """Stop, stay down ``down_s`` seconds, start again.

        Returns:
            (the monotonic time the server went down, the time it accepted connections
            again), in seconds.
        """
        self.stop(mode)
        down = time.monotonic()
        time.sleep(down_s)
        self.start()
        self.restarts += 1
        return down, time.monotonic()

    def running(self) -> bool:
        """Whether ``pg_ctl status`` finds the server running."""
        out = self._run("pg_ctl", "-D", str(self.data), "status", check=False)
        return "server is running" in out

    def destroy(self) -> None:
        """Stop the server (immediately) if it runs and delete its directory."""
        if self.data.exists() and self.running():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        self.init().start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.destroy()
