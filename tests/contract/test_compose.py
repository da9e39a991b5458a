"""docker-compose.yml and the collector config stay true to the code.

No Docker engine runs here: the files are parsed and checked against the settings classes, the
``planexec`` argument parser, the services' routes, the image's entrypoint and each other. Each
check returns the problems it finds; the ``*_reports_*`` tests break a copy on purpose and
assert the check says so. The Dockerfile and the build context: ``test_dockerfile.py``; the
demo's services (httpbin, demo-init, demo), volume and catalog config: ``test_compose_demo.py``.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import yaml
from pydantic import AliasChoices, SecretStr, ValidationError

from executor_service.settings import ExecutorSettings
from planexec.cli import build_parser
from planexec.settings import PLACEHOLDER_SECRET, CommonSettings
from planner_service.settings import PlannerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"

PUBLISHED_PORTS = {"planner": 8100, "executor": 8200, "jaeger": 16686}
"""Service -> container port that must be published on the same host port."""
SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "planner": PlannerSettings,
    "executor": ExecutorSettings,
    "worker": ExecutorSettings,
    "migrate": CommonSettings,
}
"""The services run from the planexec image, and the settings class each one reads."""
DEMO_SERVICES = {
    "httpbin": "planexec.demo.httpbin_server",
    "demo-init": "planexec.demo",
    "demo": "planexec.demo",
}
"""The demo's services, also run from the planexec image: service -> ``python -m`` module."""
ENV_SETTINGS: dict[str, type[CommonSettings]] = SERVICE_SETTINGS | {"demo": CommonSettings}
"""Service -> the settings class its ``PLANEXEC_*`` variables must be fields of (the demo
reads ``CommonSettings`` for the database it creates its keys in)."""
EXPECTED_SERVICES = {*SERVICE_SETTINGS, *DEMO_SERVICES, "postgres", "otel-collector", "jaeger"}
LISTEN_FIELDS = {"planner": ("host", "port"), "executor": ("executor_host", "executor_port")}
"""Services that serve HTTP -> settings fields of their address (``--host``/``--port`` win)."""
SERVICE_URLS = {
    ("planner", "PLANEXEC_CATALOG_URL"): ("executor", "/v1/tools"),
    ("executor", "PLANEXEC_PLANNER_URL"): ("planner", ""),
    ("worker", "PLANEXEC_PLANNER_URL"): ("planner", ""),
}
"""(service, variable) -> the service the URL must reach and the route it names ('' = base)."""
SERVICE_KEY_HOLDERS = {"planner", "executor", "worker"}
"""Services that present the ``planexec:dispatch`` service key (``PLANEXEC_SERVICE_API_KEY``)."""
PER_PROCESS = {
    "OTEL_SERVICE_NAME",
    "PLANEXEC_EXECUTOR_HOST",
    "PLANEXEC_EXECUTOR_PORT",
    "PLANEXEC_LIVENESS_FILE",
    "PLANEXEC_WORKER_CONCURRENCY",
    "PLANEXEC_STEP_CONCURRENCY",
}
"""Variables the executor and the worker may set differently: none of them shapes the catalog."""
ONE_SHOT = {"migrate", "demo-init", "demo"}
NO_HEALTHCHECK = {"otel-collector": "the image is FROM scratch: no shell, curl or wget to probe"}
REQUIRED_DEPENDENCIES = {
    ("migrate", "postgres"): "service_healthy",
    ("executor", "migrate"): "service_completed_successfully",
    ("planner", "migrate"): "service_completed_successfully",
    ("planner", "executor"): "service_healthy",  # its catalog comes from the executor
    ("worker", "migrate"): "service_completed_successfully",
    ("worker", "planner"): "service_healthy",
    ("worker", "executor"): "service_healthy",
    # mcp-server-git starts only on an existing repository, which demo-init creates.
    ("executor", "demo-init"): "service_completed_successfully",
    ("worker", "demo-init"): "service_completed_successfully",
    ("demo", "planner"): "service_healthy",
    ("demo", "executor"): "service_healthy",
    ("demo", "worker"): "service_healthy",
    ("demo", "httpbin"): "service_healthy",
}
OTEL_SDK_VARIABLES = {
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
}
"""Standard variables of the OpenTelemetry SDK environment specification, read by the SDK."""
REQUIRED_STAND_IN = "r" * 40
"""Value used for ``${VAR:?message}``: the operator must set one, at least 32 bytes."""
Compose = dict[str, Any]


def load_compose() -> Compose:
    compose: Compose = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    return compose


class UnsetVariableError(ValueError):
    """A ``${VAR}`` without default or error message: compose would substitute ''."""


_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|(?P<bare>\w+))"
)


def interpolate(text: str, host_env: Mapping[str, str]) -> str:
    """Compose's variable substitution (``$$``, ``${V}``, ``${V:-d}``, ``${V-d}``, ``${V:?e}``)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name, op, arg = match["braced"] or match["bare"], match["op"], match["arg"] or ""
        value = host_env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in {":-", "-"}:
            return arg if missing else str(value)
        if op in {":?", "?"}:
            return REQUIRED_STAND_IN if missing else str(value)
        if value is None:
            raise UnsetVariableError(name)
        return value

    return _VARIABLE.sub(substitute, text)


def environment(service: Mapping[str, Any]) -> dict[str, str | None]:
    """A service's ``environment`` (map or ``KEY=VALUE`` list); ``None`` = passed through."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        return {k: v for k, _, v in (item.partition("=") for item in raw)}
    return {k: None if v is None else str(v) for k, v in raw.items()}


def resolved_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """The variables a container gets on a host that sets none (pass-throughs stay unset)."""
    return {k: interpolate(v, {}) for k, v in environment(service).items() if v is not None}


def settings_env_names(cls: type[CommonSettings]) -> set[str]:
    """Every environment variable ``cls`` reads: prefix + field name, or its validation aliases."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.add(f"{prefix}{field_name}")
    return {name.upper() for name in names}


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def port_mappings(service: Mapping[str, Any]) -> set[tuple[int, int]]:
    """``(host port, container port)`` pairs of short (``[ip:]host:container``) or long syntax."""
    pairs: set[tuple[int, int]] = set()
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            pairs.add((int(entry.get("published") or entry["target"]), int(entry["target"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        pairs.add((int(parts[-2]) if len(parts) > 1 else int(parts[-1]), int(parts[-1])))
    return pairs


def healthcheck_urls(service: Mapping[str, Any]) -> list[SplitResult]:
    test = (service.get("healthcheck") or {}).get("test") or []
    joined = " ".join(test) if isinstance(test, list) else str(test)
    return [urlsplit(url) for url in re.findall(r"https?://[^\s'\"]+", joined)]


def listen_address(name: str, service: Mapping[str, Any]) -> tuple[str, int] | None:
    """Where a planexec API listens: ``--host``/``--port`` flags, else settings, else defaults."""
    if name not in LISTEN_FIELDS:
        return None
    command = list(service.get("command") or [])
    env = resolved_environment(service)
    values = []
    for flag, field in zip(("--host", "--port"), LISTEN_FIELDS[name], strict=True):
        default = SERVICE_SETTINGS[name].model_fields[field].default
        value = env.get(f"PLANEXEC_{field.upper()}", default)
        values.append(command[command.index(flag) + 1] if flag in command else value)
    return str(values[0]), int(values[1])


def duration_s(text: str) -> float:
    """A compose duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text))


def app_routes() -> dict[str, set[str]]:
    """Service -> the paths its FastAPI app serves (built, not started)."""
    from executor_service.app import create_app as executor_app
    from planner_service.app import create_app as planner_app

    apps = {
        "planner": planner_app(PlannerSettings(_env_file=None, env="dev")),
        "executor": executor_app(ExecutorSettings(_env_file=None, env="dev")),
    }
    return {name: set(app.openapi()["paths"]) for name, app in apps.items()}


# --- checks: each returns the problems it finds ---------------------------------------------


def env_problems(compose: Compose) -> list[str]:
    problems = []
    shared = compose.get("x-planexec-env", {})
    common = settings_env_names(CommonSettings) | OTEL_SDK_VARIABLES
    problems += [
        f"x-planexec-env: {k} is no CommonSettings field" for k in shared if k not in common
    ]
    for name, service in compose["services"].items():
        cls = ENV_SETTINGS.get(name)
        for key in environment(service):
            if cls is None and (key.startswith("PLANEXEC_") or key in OTEL_SDK_VARIABLES):
                problems.append(f"{name}: {key} set on a service that is not planexec")
            elif cls is not None and key not in settings_env_names(cls) | OTEL_SDK_VARIABLES:
                problems.append(f"{name}: {key} is no field of {cls.__name__}")
    return problems


def healthcheck_problems(compose: Compose) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        if name in ONE_SHOT:
            continue
        if name in NO_HEALTHCHECK:
            if check:
                problems.append(f"{name} has a healthcheck now: remove it from NO_HEALTHCHECK")
            continue
        test = (check or {}).get("test")
        if not isinstance(test, list) or len(test) < 2 or test[0] not in {"CMD", "CMD-SHELL"}:
            problems.append(f"{name}: no healthcheck test command")
        elif "build" in service and test[:2] != ["CMD", "python"]:
            problems.append(f"{name}: python:3.11-slim has no curl or wget; probe with python")
        elif check.get("disable"):
            problems.append(f"{name}: healthcheck disabled")
    return problems


def reachable(services: Mapping[str, Any], start: str) -> set[str]:
    """Every service ``start`` waits for, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in services.get(todo.pop(), {}).get("depends_on") or {}:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def dependency_problems(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = []
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            condition = spec.get("condition") if isinstance(spec, dict) else None
            if target not in services:
                problems.append(f"{name} depends on unknown service {target}")
            elif condition == "service_healthy" and not services[target].get("healthcheck"):
                problems.append(f"{name} waits for {target} to be healthy; it has no healthcheck")
            elif condition == "service_completed_successfully" and target not in ONE_SHOT:
                problems.append(f"{name} waits for long-running {target} to complete")
        if name in reachable(services, name):
            problems.append(f"{name} waits for itself through a depends_on cycle")
    for (name, target), condition in REQUIRED_DEPENDENCIES.items():
        spec = (services.get(name, {}).get("depends_on") or {}).get(target)
        if not isinstance(spec, dict) or spec.get("condition") != condition:
            problems.append(f"{name} must depend on {target} with {condition}")
    return problems


def port_problems(compose: Compose) -> list[str]:
    services = compose["services"]
    problems = []
    for name, port in PUBLISHED_PORTS.items():
        service = services.get(name, {})
        if (port, port) not in port_mappings(service):
            problems.append(f"{name}: container port {port} not published as {port}")
        if name in LISTEN_FIELDS:
            if listen_address(name, service) != ("0.0.0.0", port):
                problems.append(f"{name}: listens on {listen_address(name, service)}, not :{port}")
            if {url.port for url in healthcheck_urls(service)} != {port}:
                problems.append(f"{name}: healthcheck probes {healthcheck_urls(service)}")
    return problems


def url_problems(compose: Compose, routes: Mapping[str, set[str]]) -> list[str]:
    """URLs between the services reach the right service, port and route."""
    services = compose["services"]
    problems = []
    for (name, variable), (target, path) in SERVICE_URLS.items():
        url = urlsplit(resolved_environment(services[name]).get(variable, ""))
        address = listen_address(target, services[target])
        if address is None or (url.hostname, url.port) != (target, address[1]):
            problems.append(f"{name}: {variable} does not reach {target} at {address}")
        elif url.path.rstrip("/") != path or (path and path not in routes[target]):
            problems.append(f"{name}: {variable} names {url.path!r}, not {target}'s {path!r}")
    for name, paths in routes.items():
        problems += [
            f"{name}: healthcheck probes {url.path}, no route of {name}"
            for url in healthcheck_urls(services[name])
            if url.path not in paths
        ]
    return problems


def worker_problems(compose: Compose) -> list[str]:
    """The worker's liveness probe, its stop grace and its catalog (the executor's)."""
    worker, executor = compose["services"]["worker"], compose["services"]["executor"]
    env = resolved_environment(worker)
    problems = []
    liveness = env.get("PLANEXEC_LIVENESS_FILE")
    if not liveness or liveness not in " ".join((worker.get("healthcheck") or {}).get("test", [])):
        problems.append("worker: the healthcheck does not read PLANEXEC_LIVENESS_FILE")
    drain = float(env.get("PLANEXEC_DRAIN_S", ExecutorSettings.model_fields["drain_s"].default))
    grace = duration_s(str(worker.get("stop_grace_period", "10s")))
    if grace <= drain:
        problems.append(f"worker: stop_grace_period {grace:g} s <= PLANEXEC_DRAIN_S {drain:g} s")
    ours, theirs = environment(worker), environment(executor)
    differ = (ours.keys() ^ theirs.keys()) | {
        k for k in ours.keys() & theirs.keys() if ours[k] != theirs[k]
    }
    problems += [f"worker and executor differ on {k}" for k in sorted(differ - PER_PROCESS)]
    return problems


def command_problems(compose: Compose, parser: argparse.ArgumentParser) -> list[str]:
    """Every planexec service runs a real subcommand whose flags parse."""
    known = subcommands(parser)
    problems = []
    for name in SERVICE_SETTINGS:
        command = compose["services"][name].get("command")
        if not isinstance(command, list) or not command:
            problems.append(f"{name}: command must be an exec-form list")
        elif command[0] not in known:
            problems.append(f"{name}: `planexec {command[0]}` is no subcommand of {sorted(known)}")
        else:
            try:
                parser.parse_args(command)
            except SystemExit:
                problems.append(f"{name}: `planexec {' '.join(command)}` does not parse")
    return problems


# --- compose ----------------------------------------------------------------------------------


def test_services_are_exactly_the_stack() -> None:
    compose = load_compose()
    assert set(compose["services"]) == EXPECTED_SERVICES
    built = {name for name, service in compose["services"].items() if "build" in service}
    assert built == {*SERVICE_SETTINGS, *DEMO_SERVICES}, "planexec processes run the image"


@pytest.mark.parametrize(
    "check",
    [env_problems, healthcheck_problems, dependency_problems, port_problems, worker_problems],
)
def test_compose_passes(check: Any) -> None:
    assert check(load_compose()) == []


def test_commands_parse_and_urls_reach_real_routes() -> None:
    compose = load_compose()
    assert command_problems(compose, build_parser()) == []
    assert url_problems(compose, app_routes()) == []


@pytest.mark.parametrize("name", sorted(SERVICE_SETTINGS))
def test_settings_from_compose_env_validate_under_prod(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    compose = load_compose()
    service = compose["services"][name]
    cls = SERVICE_SETTINGS[name]
    for var in os.environ:
        if var.startswith(("PLANEXEC_", "OTEL_")) or var in settings_env_names(cls):
            monkeypatch.delenv(var)
    env = resolved_environment(service)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = cls(_env_file=None)
    assert settings.env == "prod"
    assert settings.signing_key.get_secret_value() == REQUIRED_STAND_IN
    for key, value in env.items():  # every variable set reaches its field with that value
        field = key.removeprefix("PLANEXEC_").lower()
        if key.startswith("PLANEXEC_") and field in cls.model_fields:
            read = getattr(settings, field)
            if isinstance(read, SecretStr):
                read = read.get_secret_value()
            assert (str(read).lower() if isinstance(read, bool) else str(read)) == value
    db = urlsplit(settings.database_url or "")
    postgres = environment(compose["services"]["postgres"])
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert db.path == f"/{postgres['POSTGRES_DB']}"
    if name in LISTEN_FIELDS:
        host, port = (getattr(settings, field) for field in LISTEN_FIELDS[name])
        assert (host, port) == listen_address(name, service) == ("0.0.0.0", PUBLISHED_PORTS[name])
    required_key = env.get("PLANEXEC_SERVICE_API_KEY") == REQUIRED_STAND_IN  # ${VAR:?message}
    assert required_key == (name in SERVICE_KEY_HOLDERS)


@pytest.mark.parametrize(
    ("age_s", "healthy"), [(0.0, True), (5.0, True), (120.0, False), (None, False)]
)
def test_worker_healthcheck_fails_on_a_stale_or_missing_liveness_file(
    tmp_path: Path, age_s: float | None, healthy: bool
) -> None:
    worker = load_compose()["services"]["worker"]
    test = worker["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    local = tmp_path / "alive"
    if age_s is not None:
        local.touch()
        os.utime(local, (time.time() - age_s, time.time() - age_s))
    code = test[3].replace(resolved_environment(worker)["PLANEXEC_LIVENESS_FILE"], str(local))
    assert code != test[3]
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert (result.returncode == 0) is healthy, result.stderr


def test_interpolation_and_durations_follow_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${NOPE-d} $$HOME", env) == "x d  d $HOME"
    assert interpolate("${NOPE:?must be set}", env) == REQUIRED_STAND_IN
    with pytest.raises(UnsetVariableError):
        interpolate("${NOPE}", env)
    assert [duration_s(d) for d in ("30s", "1m30s", "1h", "250ms")] == [30, 90, 3600, 0.25]


def test_env_check_reports_a_variable_that_is_no_settings_field() -> None:
    compose = load_compose()
    services = compose["services"]
    services["planner"]["environment"]["PLANEXEC_NOT_A_FIELD"] = "1"
    services["executor"]["environment"]["PLANEXEC_PORT"] = "8200"  # the planner's
    services["migrate"]["environment"]["PLANEXEC_SERVICE_API_KEY"] = "${PLANEXEC_SERVICE_API_KEY}"
    services["jaeger"]["environment"] = {"PLANEXEC_ENV": "prod"}
    assert env_problems(compose) == [
        "migrate: PLANEXEC_SERVICE_API_KEY is no field of CommonSettings",
        "executor: PLANEXEC_PORT is no field of ExecutorSettings",
        "planner: PLANEXEC_NOT_A_FIELD is no field of PlannerSettings",
        "jaeger: PLANEXEC_ENV set on a service that is not planexec",
    ]


def test_a_placeholder_signing_key_would_stop_the_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    service = copy.deepcopy(load_compose()["services"]["migrate"])
    service["environment"]["PLANEXEC_SIGNING_KEY"] = f"${{UNSET_KEY:-{PLACEHOLDER_SECRET}}}"
    for key, value in resolved_environment(service).items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match="placeholder"):
        CommonSettings(_env_file=None)


def test_checks_report_broken_healthchecks_ports_and_dependencies() -> None:
    compose = load_compose()
    services = compose["services"]
    services["planner"]["healthcheck"]["test"] = ["CMD", "curl", "-f", "http://127.0.0.1:8100/"]
    del services["jaeger"]["healthcheck"]
    del services["worker"]["healthcheck"]
    services["otel-collector"]["healthcheck"] = {"test": ["CMD", "true"]}
    assert healthcheck_problems(compose) == [
        "planner: python:3.11-slim has no curl or wget; probe with python",
        "worker: no healthcheck test command",
        "otel-collector has a healthcheck now: remove it from NO_HEALTHCHECK",
        "jaeger: no healthcheck test command",
    ]
    assert "otel-collector waits for jaeger to be healthy; it has no healthcheck" in (
        dependency_problems(compose)
    )
    services["executor"]["depends_on"]["planner"] = {"condition": "service_started"}
    del services["worker"]["depends_on"]["executor"]
    assert [p for p in dependency_problems(compose) if "jaeger" not in p] == [
        "executor waits for itself through a depends_on cycle",
        "planner waits for itself through a depends_on cycle",
        "demo waits for worker to be healthy; it has no healthcheck",
        "worker must depend on executor with service_healthy",
    ]
    services["executor"]["ports"] = ["18200:8200"]
    services["executor"]["environment"]["PLANEXEC_EXECUTOR_HOST"] = "127.0.0.1"
    services["planner"]["command"] = ["planner", "--port", "9000"]
    assert port_problems(compose) == [
        "planner: listens on ('0.0.0.0', 9000), not :8100",
        "executor: container port 8200 not published as 8200",
        "executor: listens on ('127.0.0.1', 8200), not :8200",
    ]


def test_url_and_worker_checks_report_what_would_break_the_pair() -> None:
    compose = load_compose()
    services = compose["services"]
    services["planner"]["environment"]["PLANEXEC_CATALOG_URL"] = "http://executor:8200/v1/catalog"
    services["worker"]["environment"]["PLANEXEC_PLANNER_URL"] = "http://127.0.0.1:8100"
    services["executor"]["healthcheck"]["test"][-1] = "urlopen('http://127.0.0.1:8200/health')"
    assert url_problems(compose, app_routes()) == [
        "planner: PLANEXEC_CATALOG_URL names '/v1/catalog', not executor's '/v1/tools'",
        "worker: PLANEXEC_PLANNER_URL does not reach planner at ('0.0.0.0', 8100)",
        "executor: healthcheck probes /health, no route of executor",
    ]
    services["worker"]["environment"]["PLANEXEC_LIVENESS_FILE"] = "/tmp/elsewhere"
    del services["worker"]["stop_grace_period"]
    services["executor"]["environment"]["PLANEXEC_CATALOG_CONFIG"] = "/etc/planexec/tools.yaml"
    assert worker_problems(compose) == [
        "worker: the healthcheck does not read PLANEXEC_LIVENESS_FILE",
        "worker: stop_grace_period 10 s <= PLANEXEC_DRAIN_S 20 s",
        "worker and executor differ on PLANEXEC_CATALOG_CONFIG",
        "worker and executor differ on PLANEXEC_PLANNER_URL",
    ]


def test_command_check_reports_what_would_not_run() -> None:
    compose = load_compose()
    services = compose["services"]
    services["migrate"]["command"] = ["migrat"]
    services["planner"]["command"] = ["planner", "--no-such-flag"]
    services["worker"]["command"] = ["worker", "--concurrency", "many"]
    problems = command_problems(compose, build_parser())
    assert problems[0] == "planner: `planexec planner --no-such-flag` does not parse"
    assert problems[1] == "worker: `planexec worker --concurrency many` does not parse"
    assert problems[2].startswith("migrate: `planexec migrat` is no subcommand")
    assert len(problems) == 3


# --- collector and Jaeger ---------------------------------------------------------------------


def collector_config_path(compose: Compose) -> Path:
    """The host file mounted where the collector's ``--config`` flag points."""
    collector = compose["services"]["otel-collector"]
    flag = next(arg for arg in collector["command"] if arg.startswith("--config="))
    target = flag.removeprefix("--config=")
    for volume in collector["volumes"]:
        source, mounted, *_ = str(volume).split(":")
        if mounted == target:
            return ROOT / source
    raise AssertionError(f"nothing is mounted at {target}")


def traces_problems(config: dict[str, Any], compose: Compose) -> list[str]:
    """The traces pipeline: an OTLP receiver in, an OTLP exporter to the jaeger service out."""
    problems = []
    service = config.get("service", {})
    for kind in ("receivers", "processors", "exporters"):
        for pipeline in service.get("pipelines", {}).values():
            problems += [
                f"{kind}: {c} undefined" for c in pipeline.get(kind, []) if c not in config[kind]
            ]
    traces = service.get("pipelines", {}).get("traces", {})
    otlp_in = [r for r in traces.get("receivers", []) if r.split("/")[0] == "otlp"]
    if not otlp_in or set(config["receivers"][otlp_in[0]]["protocols"]) != {"grpc", "http"}:
        problems.append("traces: no OTLP receiver with grpc and http")
    targets = {
        urlsplit("//" + config["exporters"][e]["endpoint"].split("://")[-1]).hostname
        for e in traces.get("exporters", [])
        if e.split("/")[0] in {"otlp", "otlphttp"} and e in config["exporters"]
    }
    if "jaeger" not in targets or "jaeger" not in compose["services"]:
        problems.append(f"traces: no OTLP exporter to the jaeger service (to {targets})")
    if "health_check" not in service.get("extensions", []):
        problems.append("health_check extension not enabled")
    elif config["extensions"]["health_check"]["endpoint"] != "0.0.0.0:13133":
        problems.append("health_check must listen on 0.0.0.0:13133")
    return problems


def test_collector_sends_traces_from_otlp_to_jaeger() -> None:
    compose = load_compose()
    config = yaml.safe_load(collector_config_path(compose).read_text(encoding="utf-8"))
    assert traces_problems(config, compose) == []
    assert compose["services"]["jaeger"]["image"].startswith("jaegertracing/")
    broken = copy.deepcopy(config)
    broken["service"]["pipelines"]["traces"]["exporters"] = ["debug"]
    broken["service"]["extensions"] = []
    assert traces_problems(broken, compose) == [
        "traces: no OTLP exporter to the jaeger service (to set())",
        "health_check extension not enabled",
    ]


def test_services_export_otlp_to_the_collector_receiver() -> None:
    compose = load_compose()
    config = yaml.safe_load(collector_config_path(compose).read_text(encoding="utf-8"))
    env = resolved_environment({"environment": compose["x-planexec-env"]})
    protocol = {"grpc": "grpc", "http/protobuf": "http", "http/json": "http"}[
        env["OTEL_EXPORTER_OTLP_PROTOCOL"]
    ]
    endpoint = urlsplit(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    receiver = config["receivers"]["otlp"]["protocols"][protocol]["endpoint"]
    assert endpoint.hostname == "otel-collector"
    assert endpoint.port == int(receiver.rsplit(":", 1)[1])
