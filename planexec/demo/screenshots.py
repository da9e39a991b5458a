"""``python -m planexec.demo.screenshots``: the console's screenshots, taken from the demo.

Starts the stack of ``make run`` (``DemoStack``) on a fresh temporary data directory, runs the
demo intents, then submits intent 1 once more (``POST /v1/plans`` with ``options.execute``)
and leaves its run waiting at the approval gate of ``demo.webhook-needs-approval``. With an
operator, approver and submitter key of tenant ``demo`` it logs in at ``/ui/login`` in
headless Chromium (Debian's ``chromium`` and ``chromium-driver``, driven by Selenium) and
saves four full-page screens: ``runs.png`` (the demo's runs), ``run.png`` (the offsite saga:
failed, its reservations compensated), ``approvals.png`` (the waiting gate) and ``plan.png``
(the plan of intent 1: versions, policy decisions, provenance). Then it stops the stack.

Exit status: 0 when the four files were written; 1 when a demo outcome or a screen was not
the expected one; 2 when Chromium, chromedriver or Selenium is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2

from planexec.auth import ApiKeyStore
from planexec.db import create_engine
from shared_schemas import Role

from .scenario import Demo, intents
from .stack import DemoStack

if TYPE_CHECKING:
    from selenium.webdriver import Chrome

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WIDTH, HEIGHT = 1400, 900
"""Browser window in CSS pixels; a screenshot grows the height to the page's (up to
``MAX_HEIGHT``)."""
MAX_HEIGHT = 3000
SAGA = 6
"""Index in ``intents()`` of the offsite saga (payment fails, reservations compensated)."""


class ScreenshotError(Exception):
    """A demo outcome or a console screen was not the one the screenshots must show."""


@dataclass(frozen=True)
class Targets:
    """What the screens show: ids found through the public APIs after the demo ran."""

    runs: list[str]
    """Every run of tenant ``demo``."""
    saga_run: str
    saga_steps: list[str]
    gated_run: str
    plan_id: str
    """The plan of the demo's intent 1."""


def check_browser() -> str | None:
    """None when Chromium, chromedriver and Selenium are installed, else what is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        return (
            f"{' and '.join(missing)} not found: install the Debian packages chromium and"
            " chromium-driver (apt-get install chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed: pip install -e '.[test,demo]' (make screenshots does)"
    return None


def free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it on 127.0.0.1, else a free ephemeral port."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port: int = spare.getsockname()[1]
        return port


async def operator_key(database_url: str) -> str:
    """A new key of ``ops@demo`` in tenant ``demo`` with every role a console user can hold."""
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    try:
        issued = await ApiKeyStore(engine).create(
            tenant="demo",
            subject="ops@demo",
            roles=[Role.OPERATOR, Role.APPROVER, Role.SUBMITTER],
            description="console screenshots",
        )
    finally:
        await engine.dispose()
    return issued.token


def leave_gate_open(demo: Demo) -> str:
    """Submit intent 1 again and follow its run until its gate opens; do not approve.

    Returns:
        The id of the run, paused at its approval gate.

    Raises:
        ScreenshotError: when no plan, no run or no gate came of it.
    """
    item = intents(demo.stack)[0]
    demo.say(f"\n━━ For the approvals screen: {item.title}, left waiting")
    plan = demo.submit(item, execute=True)
    if plan is None or plan["status"] != "ready":
        raise ScreenshotError("intent 1 was not planned ready")
    run_id = demo.wait_for_run(plan["plan_id"])
    if run_id is None:
        raise ScreenshotError("no run of intent 1 was created within 60 s")
    outcome = demo.follow(run_id, approve=False)
    if outcome != "paused":
        raise ScreenshotError(f"the run of intent 1 ended {outcome} instead of waiting")
    return run_id


def find_targets(stack: DemoStack, key: str, gated_run: str) -> Targets:
    """Find the runs and the plan to show through the planner's and the executor's APIs."""
    headers = {"X-API-Key": key}
    with httpx2.Client(timeout=30, headers=headers) as client:
        plans = client.get(f"{stack.planner_url}/v1/plans", params={"limit": 200}).json()
        runs = client.get(f"{stack.executor_url}/v1/runs", params={"limit": 200}).json()

        def oldest_plan(intent: str) -> str:
            found = sorted(
                (p["created_at"], p["plan_id"]) for p in plans["items"] if p["intent"] == intent
            )
            if not found:
                raise ScreenshotError(f"no plan of {intent!r}")
            return str(found[0][1])

        listed = intents(stack)
        saga_plan = oldest_plan(listed[SAGA].intent)
        saga = [r for r in runs["items"] if r["plan_id"] == saga_plan]
        if len(saga) != 1 or saga[0]["status"] != "failed":
            raise ScreenshotError(f"the offsite saga has runs {saga}, not one failed run")
        saga_run = str(saga[0]["run_id"])
        detail = client.get(f"{stack.executor_url}/v1/runs/{saga_run}").json()
    return Targets(
        runs=[str(r["run_id"]) for r in runs["items"]],
        saga_run=saga_run,
        saga_steps=[s["id"] for s in detail["plan"]["steps"]],
        gated_run=gated_run,
        plan_id=oldest_plan(listed[0].intent),
    )


@contextlib.contextmanager
def chromium() -> Iterator[Chrome]:
    """Headless Chromium over WebDriver; Selenium Manager is never asked for a driver."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WIDTH},{HEIGHT}",
        "--no-first-run",
        "--disable-extensions",
    ):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
    except WebDriverException as exc:
        raise ScreenshotError(f"{CHROMEDRIVER} did not start {CHROMIUM}: {exc.msg}") from exc
    try:
        yield driver
    finally:
        driver.quit()


class Console:
    """The console at ``<executor>/ui`` in a browser session."""

    def __init__(self, driver: Chrome, executor_url: str) -> None:
        self.driver = driver
        self.ui = f"{executor_url}/ui"

    def wait_for(self, css: str, timeout_s: float = 20.0) -> None:
        """Wait until an element matching ``css`` is on the page.

        Raises:
            ScreenshotError: when none is there within ``timeout_s`` seconds.
        """
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout_s).until(
                expected_conditions.presence_of_element_located((By.CSS_SELECTOR, css))
            )
        except TimeoutException as exc:
            url = self.driver.current_url
            raise ScreenshotError(f"{css} not found on {url} within {timeout_s:g} s") from exc

    def login(self, key: str) -> None:
        """Log in through the login form."""
        from selenium.webdriver.common.by import By

        self.driver.get(f"{self.ui}/login")
        self.driver.find_element(By.CSS_SELECTOR, "#api_key").send_keys(key)
        self.driver.find_element(By.CSS_SELECTOR, "#login").click()
        self.wait_for("#logout")

    def shoot(self, path: str, ready: list[str], target: Path) -> None:
        """Open ``/ui<path>``, wait for every selector of ``ready``, save the whole page."""
        self.driver.get(self.ui + path)
        for css in ready:
            self.wait_for(css)
        self.driver.execute_script("window.scrollTo(0, 0)")
        height = int(self.driver.execute_script("return document.documentElement.scrollHeight"))
        # The window is taller than its viewport by the (headless) browser's own frame.
        frame = int(self.driver.execute_script("return window.outerHeight - window.innerHeight"))
        self.driver.set_window_size(WIDTH, max(HEIGHT, min(height, MAX_HEIGHT)) + frame)
        try:
            if not self.driver.save_screenshot(str(target)):
                raise ScreenshotError(f"Chromium could not save {target}")
        finally:
            self.driver.set_window_size(WIDTH, HEIGHT)


def take(console: Console, key: str, targets: Targets, out: Path) -> list[Path]:
    """Log in and save the four screens under ``out``; the files written."""
    console.login(key)
    saga = targets.saga_run
    screens = [
        ("runs.png", "/runs", [f'#runs tr[data-run="{r}"]' for r in targets.runs]),
        (
            "run.png",
            f"/runs/{saga}",
            ['#run-summary[data-run-status="failed"]', "#dag", "#attempts"]
            + [f"#node-{s}" for s in targets.saga_steps]
            + ['#dag .node[data-status="compensated"]'],
        ),
        ("approvals.png", "/approvals", [f"#gate-{targets.gated_run}-post"]),
        ("plan.png", f"/plans/{targets.plan_id}", ["#versions", "#plan-steps", "#provenance"]),
    ]
    written = []
    for name, path, ready in screens:
        console.shoot(path, ready, out / name)
        written.append(out / name)
    return written


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(prog="planexec-demo-screenshots", description=__doc__)
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("docs/screenshots"),
        help="where the PNGs go (default: docs/screenshots, linked from the README)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the demo's database and logs here (default: a temporary directory, removed"
        " at exit)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the demo, take the screenshots, stop the stack; the exit status."""
    args = build_parser().parse_args(argv)
    missing = check_browser()
    if missing:
        print(f"planexec screenshots: {missing}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="planexec-demo-"))
        # Registered before the embedded Postgres registers its own stop: atexit runs them
        # last-in first-out, so the server is stopped before its files are removed.
        atexit.register(shutil.rmtree, data_dir, ignore_errors=True)
    else:
        data_dir = args.data_dir.resolve()
    # The demo's own database, never one named by the environment.
    os.environ.pop("PLANEXEC_DATABASE_URL", None)
    stack = DemoStack(data_dir, free_port(8100), free_port(8200), free_port(8300))

    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, interrupt)
    started = time.monotonic()
    written: list[Path] = []
    try:
        print(f"planexec screenshots: the demo stack on {data_dir}", flush=True)
        stack.make_repo()
        keys = asyncio.run(stack.prepare())
        stack.start(keys, stack.write_catalog())
        demo = Demo(stack, keys, sys.stdout)
        if not demo.run_all():
            raise ScreenshotError("a demo outcome was not the expected one (transcript above)")
        gated_run = leave_gate_open(demo)
        assert stack.database_url is not None  # set by prepare()
        key = asyncio.run(operator_key(stack.database_url))
        targets = find_targets(stack, key, gated_run)
        with chromium() as driver:
            written = take(Console(driver, stack.executor_url), key, targets, out)
    except (ScreenshotError, RuntimeError) as exc:  # RuntimeError: a process did not start
        print(f"planexec screenshots: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("\nplanexec screenshots: interrupted", file=sys.stderr)
    finally:
        codes = stack.stop()
        print(f"planexec screenshots: stopped ({', '.join(f'{k} {v}' for k, v in codes.items())})")
    if not written:
        return 1
    took = time.monotonic() - started
    print(f"planexec screenshots: {len(written)} screens in {took:.1f} s:")
    for path in written:
        print(f"  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
