"""``docker compose run --rm demo`` runs the demo of ``make demo`` against the compose stack.

No Docker engine runs here. The demo's services (httpbin, demo-init, demo) are checked against
the demo's argument parsers, the services they reach, the Dockerfile's paths and each other;
the catalog config demo-init writes is written here by the same command and loaded by the
executor's registry, with real MCP servers. The demo itself ran against processes started
like the compose services (see the report of issue 6); ``tests/e2e/test_demo.py`` runs the
same intents on ``make demo``'s own stack.
"""

from __future__ import annotations

import contextlib
import copy
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from httpbin import app as httpbin_app

from executor_service.tools.netguard import BlockedTargetError, NetPolicy
from executor_service.tools.registry import CatalogConfigError, build_registry
from planexec.demo.__main__ import build_parser as demo_parser
from planexec.demo.__main__ import main as demo_main
from planexec.demo.external import catalog_path
from planexec.demo.httpbin_server import build_parser as httpbin_parser
from planexec.demo.stack import DemoStack
from planexec.settings import CommonSettings
from tests.contract.test_compose import (
    COMPOSE_FILE,
    DEMO_SERVICES,
    Compose,
    environment,
    healthcheck_urls,
    listen_address,
    load_compose,
    resolved_environment,
    settings_env_names,
)
from tests.contract.test_dockerfile import IMAGE_DEMO_ASSETS, IMAGE_DEMO_DATA

ROOT = Path(__file__).resolve().parents[2]
CATALOG_READERS = ("executor", "worker")
"""Services that read the catalog config demo-init writes (``PLANEXEC_CATALOG_CONFIG``)."""
DATA_USERS = ("demo-init", "executor", "worker", "demo")
"""Services that mount the demo data volume: the intents name the repository's path there."""
TEMPLATE_DIRS = (ROOT / "planner_service" / "templates", ROOT / "planexec" / "demo" / "assets")


def module_args(compose: Compose, name: str) -> list[str]:
    """The arguments of ``python -m MODULE`` a demo service runs (its command)."""
    return [str(arg) for arg in compose["services"][name].get("command") or []]


def parsed(compose: Compose, name: str) -> Any:
    """The service's command parsed by its module's parser; None when it does not parse."""
    parser = httpbin_parser() if name == "httpbin" else demo_parser()
    try:
        return parser.parse_args(module_args(compose, name))
    except SystemExit:
        return None


def reaches(url: str | None, compose: Compose, target: str) -> bool:
    """Whether ``url`` names service ``target`` at the port it listens on."""
    services = compose["services"]
    if target == "httpbin":
        options = parsed(compose, "httpbin")
        port = options.port if options is not None else None
    else:
        address = listen_address(target, services[target])
        port = address[1] if address else None
    split = urlsplit(url or "")
    return (split.hostname, split.port) == (target, port) and split.path.rstrip("/") == ""


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> named volume (or host path) of a service's short-syntax volumes."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = str(volume).split(":")
        out[target] = source
    return out


# --- checks: each returns the problems it finds ---------------------------------------------


def command_problems(compose: Compose) -> list[str]:
    """The demo services run their module with arguments that parse, in the right mode."""
    services = compose["services"]
    problems = []
    for name, module in DEMO_SERVICES.items():
        if services[name].get("entrypoint") != ["python", "-m", module]:
            problems.append(f"{name}: the entrypoint is not python -m {module}")
        if parsed(compose, name) is None:
            problems.append(f"{name}: `{shlex.join(module_args(compose, name))}` does not parse")
    init, demo, httpbin = (parsed(compose, n) for n in ("demo-init", "demo", "httpbin"))
    if init is not None and not init.init:
        problems.append("demo-init: no --init")
    if demo is not None and not demo.external:
        problems.append("demo: no --external")
    if httpbin is not None and httpbin.host != "0.0.0.0":
        problems.append(f"httpbin: listens on {httpbin.host}, unreachable from other containers")
    return problems


def url_problems(compose: Compose) -> list[str]:
    """The demo reaches the planner and the executor; the catalog names the httpbin service."""
    problems = []
    demo, init = parsed(compose, "demo"), parsed(compose, "demo-init")
    for flag, target in (("planner_url", "planner"), ("executor_url", "executor")):
        url = getattr(demo, flag, None)
        if not reaches(url, compose, target):
            problems.append(f"demo: --{flag.replace('_', '-')} {url} does not reach {target}")
    if not reaches(getattr(init, "httpbin_url", None), compose, "httpbin"):
        problems.append("demo-init: --httpbin-url does not reach httpbin")
    httpbin = compose["services"]["httpbin"]
    routes = {rule.rule for rule in httpbin_app.url_map.iter_rules()}
    options = parsed(compose, "httpbin")
    for url in healthcheck_urls(httpbin):
        if (url.port, url.path in routes) != (getattr(options, "port", None), True):
            problems.append(f"httpbin: healthcheck probes {url.geturl()}, not its own route")
    return problems


def volume_problems(compose: Compose) -> list[str]:
    """One named volume holds the demo data, at the same path wherever it is used."""
    services = compose["services"]
    problems = []
    data_dirs = {getattr(parsed(compose, n), "data_dir", None) for n in ("demo-init", "demo")}
    if len(data_dirs) != 1:
        return [f"demo-init and demo use different data dirs: {sorted(map(str, data_dirs))}"]
    (data_dir,) = data_dirs
    sources = {mounts(services[name]).get(str(data_dir)) for name in DATA_USERS}
    if None in sources or len(sources) != 1:
        problems.append(f"{', '.join(DATA_USERS)} do not all mount one volume at {data_dir}")
    elif (volume := sources.pop()) not in (compose.get("volumes") or {}):
        problems.append(f"{volume} is no named volume")
    if str(data_dir) != IMAGE_DEMO_DATA:
        problems.append(f"{data_dir} is not the image's {IMAGE_DEMO_DATA} (owned by planexec)")
    expected = str(catalog_path(Path(str(data_dir))))
    for name in CATALOG_READERS:
        if resolved_environment(services[name]).get("PLANEXEC_CATALOG_CONFIG") != expected:
            problems.append(f"{name}: PLANEXEC_CATALOG_CONFIG is not {expected}")
    return problems


def placement_problems(compose: Compose) -> list[str]:
    """`up` starts the tools; only `run demo` (profile demo) runs the intents."""
    problems = []
    for name, service in compose["services"].items():
        profiles = service.get("profiles")
        if name == "demo" and profiles != ["demo"]:
            problems.append("demo: not in profile demo, so `docker compose up` would run it")
        elif name != "demo" and profiles:
            problems.append(f"{name}: in profiles {profiles}; the executor needs it on `up`")
    if compose["services"]["demo"].get("restart") != "no":
        problems.append("demo: restarts after it exits")
    return problems


def planner_asset_dirs(compose: Compose) -> dict[str, Path]:
    """The planner's demo policy and template dirs, as files of this checkout."""
    env = resolved_environment(compose["services"]["planner"])
    out = {}
    for variable in ("PLANEXEC_POLICY_DIR", "PLANEXEC_TEMPLATES_DIR"):
        value = env.get(variable, "")
        relative = Path(value).relative_to(IMAGE_DEMO_ASSETS) if value else None
        out[variable] = ROOT / "planexec" / "demo" / "assets" / str(relative or "-missing-")
    return out


# --- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "check", [command_problems, url_problems, volume_problems, placement_problems]
)
def test_demo_services_pass(check: Any) -> None:
    assert check(load_compose()) == []


def test_the_demo_reads_only_the_database_url() -> None:
    compose = load_compose()
    env = resolved_environment(compose["services"]["demo"])
    assert set(env) == {"PLANEXEC_DATABASE_URL"} <= settings_env_names(CommonSettings)
    assert env["PLANEXEC_DATABASE_URL"] == compose["x-planexec-env"]["PLANEXEC_DATABASE_URL"]
    assert environment(compose["services"]["demo-init"]) == {}
    assert environment(compose["services"]["httpbin"]) == {}


def test_the_planner_gets_the_demo_policies_and_templates_of_make_run() -> None:
    dirs = planner_asset_dirs(load_compose())
    assert dirs == {
        "PLANEXEC_POLICY_DIR": ROOT / "planexec/demo/assets/policies",
        "PLANEXEC_TEMPLATES_DIR": ROOT / "planexec/demo/assets/templates",
    }
    assert [p.name for p in dirs["PLANEXEC_POLICY_DIR"].iterdir()] == ["demo.cedar"]
    assert (dirs["PLANEXEC_TEMPLATES_DIR"] / "flaky_upstream.yaml").is_file()


def test_the_header_tells_how_to_run_the_demo() -> None:
    header = COMPOSE_FILE.read_text(encoding="utf-8").split("\n\n", 1)[0]
    assert "docker compose run --rm demo" in header


def demo_tools() -> set[str]:
    """Every tool a demo template (shipped or the demo's) names."""
    tools = set()
    for directory in TEMPLATE_DIRS:
        for path in directory.rglob("*.yaml"):
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
            if isinstance(document, dict) and "steps" in document:
                tools |= {step["tool"] for step in document["steps"]}
    return tools


def sources(config: dict[str, Any]) -> dict[str, Any]:
    """A catalog config without its addresses: what decides the tool names."""
    return {
        "builtins": config["builtins"],
        "openapi": [(s["prefix"], Path(s["document"]).name) for s in config["openapi"]],
        "mcp": [
            (s["name"], Path(s["command"][0]).name, s.get("write_scopes")) for s in config["mcp"]
        ],
    }


async def test_demo_init_writes_a_catalog_the_registry_loads_with_every_demo_tool(
    tmp_path: Path,
) -> None:
    args = module_args(load_compose(), "demo-init")
    args[args.index("--data-dir") + 1] = str(tmp_path / "compose")
    assert demo_main(args) == 0
    path = catalog_path(tmp_path / "compose")
    config = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert config["openapi"][0]["base_url"] == "http://httpbin:8300"
    assert config["http"]["allow_hosts"] == ["httpbin"]
    assert config["http"]["allow_ports"] == [8300]
    local = DemoStack(tmp_path / "local").write_catalog()
    assert sources(config) == sources(yaml.safe_load(local.read_text(encoding="utf-8")))
    async with contextlib.AsyncExitStack() as stack:  # starts mcp-server-git and -time
        registry = await build_registry(path, stack)
        names = {tool.name for tool in registry.catalog.tools}
    assert demo_tools() - names == set()
    assert {"git.git_log", "httpbin.post", "time.get_current_time"} <= demo_tools()


def test_the_catalog_lets_tools_reach_httpbin_on_the_compose_network_and_nothing_else(
    tmp_path: Path,
) -> None:
    args = module_args(load_compose(), "demo-init")
    args[args.index("--data-dir") + 1] = str(tmp_path)
    assert demo_main(args) == 0
    http = yaml.safe_load(catalog_path(tmp_path).read_text(encoding="utf-8"))["http"]
    policy = NetPolicy(
        allowed_ports=http["allow_ports"],
        allowed_hosts=http["allow_hosts"],
        allowed_networks=http["allow_networks"],
    )
    policy.check_url("http://httpbin:8300/post")
    for address in ("172.18.0.5", "10.0.3.7", "192.168.16.2"):  # Docker network addresses
        policy.check_address(address)
    for url in ("http://postgres:8300/", "http://httpbin:5432/", "http://169.254.169.254:8300/"):
        with pytest.raises(BlockedTargetError):
            policy.check_url(url)
    for address in ("169.254.169.254", "127.0.0.1"):
        with pytest.raises(BlockedTargetError):
            policy.check_address(address)


async def test_a_malformed_catalog_config_is_refused(tmp_path: Path) -> None:
    assert demo_main(["--init", "--data-dir", str(tmp_path), "--httpbin-url", "http://h:1"]) == 0
    path = catalog_path(tmp_path)
    good = yaml.safe_load(path.read_text(encoding="utf-8"))
    for breakage in ({"builtins": ["transform", "shell"]}, {"openapi": [{"prefix": "httpbin"}]}):
        path.write_text(yaml.safe_dump({**good, "mcp": [], **breakage}), encoding="utf-8")
        async with contextlib.AsyncExitStack() as stack:
            with pytest.raises(CatalogConfigError):
                await build_registry(path, stack)


def test_checks_report_what_would_break_the_demo() -> None:
    compose = load_compose()
    services = compose["services"]
    del services["demo"]["profiles"]
    services["httpbin"]["profiles"] = ["demo"]
    services["demo"]["command"] = ["--exit", "--planner-url", "http://planner:8200"]
    services["demo-init"]["command"][-1] = "http://httpbin:80"
    services["httpbin"]["command"] = ["--port", "8300"]
    services["worker"]["volumes"] = []
    services["executor"]["environment"]["PLANEXEC_CATALOG_CONFIG"] = "/etc/catalog.yaml"
    assert placement_problems(compose) == [
        "httpbin: in profiles ['demo']; the executor needs it on `up`",
        "demo: not in profile demo, so `docker compose up` would run it",
    ]
    assert command_problems(compose) == [
        "demo: no --external",
        "httpbin: listens on 127.0.0.1, unreachable from other containers",
    ]
    assert url_problems(compose) == [
        "demo: --planner-url http://planner:8200 does not reach planner",
        "demo: --executor-url None does not reach executor",
        "demo-init: --httpbin-url does not reach httpbin",
    ]
    assert volume_problems(compose) == [
        "demo-init and demo use different data dirs: ['.data', '/var/lib/planexec-demo']"
    ]
    services["demo"]["command"] = copy.deepcopy(load_compose()["services"]["demo"]["command"])
    assert volume_problems(compose) == [
        "demo-init, executor, worker, demo do not all mount one volume at /var/lib/planexec-demo",
        "executor: PLANEXEC_CATALOG_CONFIG is not /var/lib/planexec-demo/demo/catalog.yaml",
    ]
    services["planner"]["environment"]["PLANEXEC_POLICY_DIR"] = "/opt/planexec/demo/policy"
    assert not planner_asset_dirs(compose)["PLANEXEC_POLICY_DIR"].exists()
