"""Start planexec services as processes for end-to-end tests."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx2

PLANEXEC = str(Path(sys.executable).parent / "planexec")
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def eventually(check: Callable[[], T], timeout_s: float = 30.0, interval_s: float = 0.1) -> T:
    """Call ``check`` until it returns without raising, or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return check()
        except Exception as exc:
            last = exc
            time.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s} s: {last!r}")


async def until(
    check: Callable[[], Awaitable[T]], timeout_s: float = 30.0, interval_s: float = 0.05
) -> T:
    """Await ``check`` until it returns without raising; fail after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            return await check()
        except Exception as exc:
            last = exc
        await asyncio.sleep(interval_s)
    raise AssertionError(f"not true within {timeout_s} s: {last!r}")


class Service:
    """One planexec process; its output goes to a log file shown when a test fails."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [PLANEXEC, *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def base_env(db_url: str, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
    env |= {
        "PLANEXEC_DATABASE_URL": db_url,
        "PLANEXEC_ENV": "test",
        "PLANEXEC_SIGNING_KEY": "e" * 40,
        "PLANEXEC_LOG_LEVEL": "info",
    }
    env |= {k: str(v) for k, v in extra.items()}
    return env


def wait_healthy(url: str, service: Service) -> None:
    def check() -> None:
        if service.proc.poll() is not None:
            raise SystemExit(f"{service.name} exited: {service.log()}")
        httpx2.get(url + "/v1/healthz", timeout=2).raise_for_status()

    try:
        eventually(check, timeout_s=60)
    except SystemExit as exc:
        raise AssertionError(str(exc)) from None
