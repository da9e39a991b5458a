"""``make demo``: the whole main job on real tool servers, as a newcomer runs it."""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def quiet_ports(count: int) -> list[str]:
    """``count`` distinct free TCP ports below Linux's ephemeral range (32768-60999).

    The demo binds them seconds later, after Postgres and the migrations: a port from the
    ephemeral range may meanwhile become the source port of an outgoing connection or be
    handed to another test's ``bind(0)``.
    """
    ports: list[str] = []
    while len(ports) < count:
        port = random.randrange(20000, 32000)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            if str(port) not in ports:
                ports.append(str(port))
    return ports


def section(out: str, n: int) -> str:
    """The transcript of demo intent ``n`` (from its ``━━ n.`` header to the next one)."""
    found = re.search(rf"━━ {n}\. .*?(?=\n━━ |\n\d+/\d+ demo outcomes)", out, re.DOTALL)
    assert found, f"no section {n} in:\n{out[-4000:]}"
    return found.group(0)


def stop_leftover_postgres(pgdata: Path) -> None:
    """Stop the embedded Postgres if the demo left it running (fast shutdown, by its pid).

    The planner and the executor die of the SIGTERM the demo sends them (uvicorn re-raises
    it), so their handles on the shared server are never released and the last process
    does not stop it; a killed worker leaves its handle too.
    """
    pid_file = pgdata / "postmaster.pid"
    if pid_file.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)


@pytest.mark.timeout(300)
def test_make_demo_brings_everything_up_and_every_outcome_is_the_expected_one(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANEXEC_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    ports = quiet_ports(3)
    try:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "planexec.demo",
                "--exit",
                "--data-dir",
                str(tmp_path / "data"),
                "--planner-port",
                ports[0],
                "--executor-port",
                ports[1],
                "--httpbin-port",
                ports[2],
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=280,
            check=False,
        )
    finally:
        stop_leftover_postgres(tmp_path / "data" / "pg")
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "8/8 demo outcomes as expected" in out
    assert "waits for an approval" in out and "approved by lead@demo" in out
    assert "curl -X POST" in out
    assert "retry scheduled" in out or "attempt 1  succeeded" in out  # the flaky upstream
    assert "[demo.no-hard-reset]" in out
    branches = subprocess.run(
        ["git", "branch", "--list"],
        cwd=tmp_path / "data" / "demo-repo",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "release/1.0" in branches  # the branch exists in the real repository

    # 6. The worker holding the run's lease is killed; another one recovers the run.
    crash = section(out, 6)
    owner = re.search(r"lease_owner (\S+) is (worker-\d); crunch in flight there", crash)
    assert owner, crash
    killed = owner.group(2)
    assert re.search(r"\$ kill -9 \d+ ", crash), crash
    assert f"{killed} exited -9" in crash
    taker = re.search(r"run +leased by (worker-\d) \((\S+)\), recovered: true", crash)
    assert taker and taker.group(1) != killed and taker.group(2) != owner.group(1), crash
    assert re.search(r"crunch +attempt 1  succeeded", crash), crash
    assert "fetch ran once, before the crash" in crash
    assert f"fetch #1 succeeded on {killed} · crunch #1 succeeded on {taker.group(1)}" in crash
    assert "worker-3 is ready: two workers again" in crash
    assert "✔ outcome: succeeded (expected succeeded)" in crash
    stopped = out[out.rindex("planexec demo: stopped") :]
    assert f"{killed} -9" in stopped and "worker-3 0" in stopped

    # 7. The payment fails for good; both reservations are undone, the latest first.
    saga = section(out, 7)
    assert re.search(r"deposit +attempt 1  failed .*http_4xx: HTTP 402", saga), saga
    assert "attempt 2" not in saga  # a 4xx is not retried
    undone = re.findall(r"(\w+) +compensation (started|succeeded)", saga)
    assert undone == [
        ("catering", "started"),
        ("catering", "succeeded"),
        ("venue", "started"),
        ("venue", "succeeded"),
    ], saga
    assert "steps: venue compensated · catering compensated · deposit failed" in saga
    assert "✔ outcome: compensated (expected compensated)" in saga

    # 8. The dry run of intent 1: every step simulated, the approval gate passes by itself.
    preview = section(out, 8)
    assert '"mode": "dry_run"' in preview  # the curl that started it
    simulated = re.findall(r"(\w+) +attempt 1  succeeded .* simulated \(dry_run\)", preview)
    assert simulated == ["log", "summarise", "post"], preview
    assert "waits for an approval" not in preview and "approved by" not in preview
    assert "nothing was called: 3 of 3 steps simulated" in preview
    assert "the plan's only run is this dry run" in preview  # execute: false, not dispatched
    assert "✔ outcome: succeeded (expected succeeded)" in preview
