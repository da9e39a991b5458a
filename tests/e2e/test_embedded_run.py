"""``planexec planner`` as a process on the embedded Postgres (PLANEXEC_DATABASE_URL unset)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2

PLANEXEC = str(Path(sys.executable).parent / "planexec")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check, timeout_s: float = 60.0, interval_s: float = 0.25):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return check()
        except Exception as exc:
            last = exc
            time.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s} s: {last!r}")


def test_planner_serves_docs_and_health_on_the_embedded_postgres(tmp_path: Path) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
    env |= {
        "PLANEXEC_DATA_DIR": str(tmp_path / "data"),
        "PLANEXEC_PORT": str(port),
        "PLANEXEC_CATALOG_FILE": str(Path("planner_service/catalogs/demo.json").resolve()),
        "PLANEXEC_LOG_JSON": "true",
    }
    proc = subprocess.Popen(
        [PLANEXEC, "planner", "--migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        health = eventually(lambda: httpx2.get(f"{base}/v1/healthz").raise_for_status().json())
        assert health == {"status": "ok", "service": "planexec-planner", "database": "ok"}
        docs = httpx2.get(f"{base}/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")[-2000:]
    # the last process using the embedded server stops it
    eventually(lambda: _stopped(tmp_path / "data" / "pg"), timeout_s=15)


def _stopped(pgdata: Path) -> bool:
    if (pgdata / "postmaster.pid").exists():
        raise AssertionError("embedded Postgres still running")
    return True
