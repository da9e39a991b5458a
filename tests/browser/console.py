"""Helpers of the browser tests: the running stack's API, and a Selenium-driven Chromium."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

from ..e2e.conftest import Pair
from ..e2e.processes import eventually
from ..support.recording_server import RecordingServer
from ..support.scripted_llm import ScriptedLLM

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
T = TypeVar("T")


@dataclass
class Console:
    """The running planner + executor + worker, and the tool and LLM fakes they talk to."""

    pair: Pair
    keys: dict[str, str]
    sink: RecordingServer
    llm: ScriptedLLM

    @property
    def ui(self) -> str:
        return self.pair.executor + "/ui"

    def h(self, who: str) -> dict[str, str]:
        return {"X-API-Key": self.keys[who]}

    def plan(self, steps: list[dict[str, Any]], intent: str, who: str = "submitter") -> Any:
        """A ready plan version made from a draft."""
        response = httpx2.post(
            f"{self.pair.planner}/v1/plans",
            json={"intent": intent, "draft": {"steps": steps}},
            headers=self.h(who),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        plan = response.json()
        assert plan["status"] == "ready", plan
        return plan

    def start(self, plan: dict[str, Any], who: str = "submitter") -> str:
        """Run a plan version now; its run id."""
        response = httpx2.post(
            f"{self.pair.executor}/v1/runs",
            json={"plan_id": plan["plan_id"], "version": plan["version"]},
            headers=self.h(who),
            timeout=30,
        )
        assert response.status_code == 201, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def run(self, run_id: str, who: str = "operator") -> Any:
        response = httpx2.get(
            f"{self.pair.executor}/v1/runs/{run_id}", headers=self.h(who), timeout=30
        )
        assert response.status_code == 200, response.text
        return response.json()

    def wait_status(self, run_id: str, *statuses: str, timeout_s: float = 30) -> Any:
        def check() -> Any:
            run = self.run(run_id)
            assert run["status"] in statuses, run["status"]
            return run

        return eventually(check, timeout_s=timeout_s)

    def effect_step(
        self, step_id: str, name: str, *, undo: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """An ``http.request`` step that makes effect ``name`` at the sink, optionally undone
        by an ``undo-<name>`` effect."""
        step: dict[str, Any] = {
            "id": step_id,
            "tool": "http.request",
            "args": {"method": "POST", "url": f"{self.sink.base_url}/effects/{name}", "json": {}},
            "retry": {"max_attempts": 1},
            **extra,
        }
        if undo:
            step["compensation"] = {
                "tool": "http.request",
                "args": {
                    "method": "POST",
                    "url": f"{self.sink.base_url}/effects/undo-{name}",
                    "json": {"undo": {"$ref": f"{step_id}.output/json/effect"}},
                },
            }
        return step

    def effects(self) -> list[str]:
        """Names of the effects the sink made, in order."""
        return [e["name"] for e in self.sink.log() if e["outcome"] == "effect"]


class Browser:
    """A headless Chromium driven over WebDriver, pointed at the console."""

    def __init__(self, driver: webdriver.Chrome, console: Console) -> None:
        self.driver = driver
        self.console = console

    @classmethod
    @contextlib.contextmanager
    def start(cls, console: Console) -> Iterator[Browser]:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for arg in (
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-dev-shm-usage",
            "--disable-gpu",
            "--window-size=1400,1000",
            "--no-first-run",
            "--disable-extensions",
        ):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(
            options=options, service=Service(executable_path=str(CHROMEDRIVER))
        )
        try:
            yield cls(driver, console)
        finally:
            driver.quit()

    def open(self, path: str) -> None:
        """Load ``/ui<path>``."""
        self.driver.get(self.console.ui + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def find_all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        return self.find(css).text

    def path(self) -> str:
        """The current URL without the executor's origin."""
        url: str = self.driver.current_url
        return url.removeprefix(self.console.pair.executor)

    def wait(self, check: Callable[[], T], timeout_s: float = 20) -> T:
        return eventually(check, timeout_s=timeout_s, interval_s=0.05)

    def login(self, who: str) -> None:
        """Log in through the login form with the key ``who``."""
        self.open("/login")
        if not self.path().startswith("/ui/login"):  # a session is open: end it first
            self.logout()
        self.find("#api_key").send_keys(self.console.keys[who])
        self.find("#login").click()
        self.wait(lambda: self._assert(not self.path().startswith("/ui/login"), self.path()))

    def logout(self) -> None:
        self.find("#logout").click()
        self.wait(lambda: self._assert(self.path().startswith("/ui/login"), self.path()))

    def node(self, step_id: str) -> WebElement:
        """The DAG node of a step (an SVG ``g``)."""
        return self.find(f"#node-{step_id}")

    def node_fill(self, step_id: str) -> str:
        """The computed fill colour of a DAG node's box, e.g. ``rgb(22, 163, 74)``."""
        fill: str = self.find(f"#node-{step_id} rect").value_of_css_property("fill")
        return fill

    def screenshot(self, path: Path) -> None:
        """Save the whole page (the window grows to the document's height) as PNG."""
        self.driver.execute_script("window.scrollTo(0, 0)")
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1400, max(700, min(int(height) + 40, 3000)))
        try:
            assert self.driver.save_screenshot(str(path)), path
        finally:
            self.driver.set_window_size(1400, 1000)

    def console_errors(self) -> list[str]:
        """Messages the page logged at level SEVERE (CSP violations, script errors) so far."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE"]

    @staticmethod
    def _assert(condition: bool, detail: object) -> None:
        assert condition, detail
