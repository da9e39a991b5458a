"""docker-compose.yml, the Dockerfile and the collector config stay true to the code.

No Docker engine runs here: the files are parsed and checked against the settings classes, the
``planexec`` argument parser and each other. Each check returns the problems it finds; the
``*_reports_*`` tests break a copy on purpose and assert the check says so.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, ValidationError

from planexec.cli import build_parser
from planexec.settings import PLACEHOLDER_SECRET, CommonSettings
from planner_service.settings import PlannerSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

PUBLISHED_PORTS = {"planner": 8100, "executor": 8200, "jaeger": 16686}
"""Service -> container port that must be published on the same host port."""
SERVICE_SETTINGS: dict[str, type[CommonSettings]] = {
    "planner": PlannerSettings,
    "migrate": CommonSettings,
    "executor": CommonSettings,  # until ExecutorSettings exists
    "worker": CommonSettings,  # until ExecutorSettings exists
}
"""The services run from the planexec image, and the settings class each one reads."""
EXPECTED_SERVICES = {*SERVICE_SETTINGS, "postgres", "otel-collector", "jaeger"}
NOT_YET_IMPLEMENTED = {"executor", "worker"}
"""Subcommands the stack runs that ``planexec`` does not have yet (they land with issue 5)."""
ONE_SHOT = {"migrate"}
NO_HEALTHCHECK = {"otel-collector": "the image is FROM scratch: no shell, curl or wget to probe"}
PENDING_HEALTHCHECK = {"worker": "no port and no liveness signal until `planexec worker` exists"}
REQUIRED_DEPENDENCIES = {
    ("migrate", "postgres"): "service_healthy",
    ("planner", "migrate"): "service_completed_successfully",
    ("executor", "migrate"): "service_completed_successfully",
    ("worker", "migrate"): "service_completed_successfully",
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


def healthcheck_url_ports(service: Mapping[str, Any]) -> set[int]:
    test = (service.get("healthcheck") or {}).get("test") or []
    joined = " ".join(test) if isinstance(test, list) else str(test)
    return {int(port) for port in re.findall(r"https?://[\w.-]+:(\d+)", joined)}


def listen_port(service: Mapping[str, Any]) -> int | None:
    """The port a planexec process listens on: its ``--port`` flag, else ``PLANEXEC_PORT``."""
    command = list(service.get("command") or [])
    if "--port" in command:
        return int(command[command.index("--port") + 1])
    port = resolved_environment(service).get("PLANEXEC_PORT")
    return int(port) if port else None


# --- checks: each returns the problems it finds ---------------------------------------------


def env_problems(compose: Compose) -> list[str]:
    problems = []
    shared = compose.get("x-planexec-env", {})
    common = settings_env_names(CommonSettings) | OTEL_SDK_VARIABLES
    problems += [
        f"x-planexec-env: {k} is no CommonSettings field" for k in shared if k not in common
    ]
    for name, service in compose["services"].items():
        cls = SERVICE_SETTINGS.get(name)
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
        if name in NO_HEALTHCHECK or name in PENDING_HEALTHCHECK:
            if check:
                problems.append(f"{name} has a healthcheck now: remove it from the exemptions")
            continue
        test = (check or {}).get("test")
        if not isinstance(test, list) or len(test) < 2 or test[0] not in {"CMD", "CMD-SHELL"}:
            problems.append(f"{name}: no healthcheck test command")
        elif name in SERVICE_SETTINGS and test[:2] != ["CMD", "python"]:
            problems.append(f"{name}: python:3.11-slim has no curl or wget; probe with python")
        elif check.get("disable"):
            problems.append(f"{name}: healthcheck disabled")
    return problems


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
        if name in SERVICE_SETTINGS:
            if listen_port(service) != port:
                problems.append(f"{name}: listens on {listen_port(service)}, publishes {port}")
            if healthcheck_url_ports(service) != {port}:
                problems.append(f"{name}: healthcheck probes {healthcheck_url_ports(service)}")
    return problems


def command_problems(compose: Compose, parser: argparse.ArgumentParser) -> list[str]:
    known = subcommands(parser)
    problems = []
    for name in SERVICE_SETTINGS:
        command = compose["services"][name].get("command")
        if not isinstance(command, list) or not command:
            problems.append(f"{name}: command must be an exec-form list")
            continue
        if command[0] in NOT_YET_IMPLEMENTED:
            if command[0] in known:
                problems.append(
                    f"`planexec {command[0]}` exists: remove it from NOT_YET_IMPLEMENTED"
                )
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
    assert built == set(SERVICE_SETTINGS), "every planexec process runs the image built here"


@pytest.mark.parametrize(
    "check", [env_problems, healthcheck_problems, dependency_problems, port_problems]
)
def test_compose_passes(check: Any) -> None:
    assert check(load_compose()) == []


def test_commands_are_planexec_subcommands() -> None:
    assert command_problems(load_compose(), build_parser()) == []
    used = {load_compose()["services"][name]["command"][0] for name in SERVICE_SETTINGS}
    assert used >= NOT_YET_IMPLEMENTED, "NOT_YET_IMPLEMENTED names a command the stack runs"
    assert set(PENDING_HEALTHCHECK) <= NOT_YET_IMPLEMENTED, (
        "the worker exists now: give its service a healthcheck and drop PENDING_HEALTHCHECK"
    )


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
    for key, value in resolved_environment(service).items():
        monkeypatch.setenv(key, value)
    settings = cls(_env_file=None)
    assert settings.env == "prod"
    assert settings.signing_key.get_secret_value() == REQUIRED_STAND_IN
    db = urlsplit(settings.database_url or "")
    postgres = environment(compose["services"]["postgres"])
    assert (db.hostname, db.port) == ("postgres", 5432)
    assert (db.username, db.password) == (postgres["POSTGRES_USER"], postgres["POSTGRES_PASSWORD"])
    assert db.path == f"/{postgres['POSTGRES_DB']}"
    if isinstance(settings, PlannerSettings):
        assert (settings.host, settings.port) == ("0.0.0.0", PUBLISHED_PORTS["planner"])


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${NOPE-d} $$HOME", env) == "x d  d $HOME"
    assert interpolate("${NOPE:?must be set}", env) == REQUIRED_STAND_IN
    with pytest.raises(UnsetVariableError):
        interpolate("${NOPE}", env)


def test_env_check_reports_a_variable_that_is_no_settings_field() -> None:
    compose = load_compose()
    compose["services"]["planner"]["environment"]["PLANEXEC_NOT_A_FIELD"] = "1"
    compose["services"]["executor"]["environment"]["PLANEXEC_PORT"] = "8200"  # planner-only
    compose["services"]["jaeger"]["environment"] = {"PLANEXEC_ENV": "prod"}
    assert env_problems(compose) == [
        "planner: PLANEXEC_NOT_A_FIELD is no field of PlannerSettings",
        "executor: PLANEXEC_PORT is no field of CommonSettings",
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
    services["worker"]["healthcheck"] = {"test": ["CMD", "true"]}
    assert healthcheck_problems(compose) == [
        "planner: python:3.11-slim has no curl or wget; probe with python",
        "worker has a healthcheck now: remove it from the exemptions",
        "jaeger: no healthcheck test command",
    ]
    assert "otel-collector waits for jaeger to be healthy; it has no healthcheck" in (
        dependency_problems(compose)
    )
    services["planner"]["depends_on"]["migrate"]["condition"] = "service_started"
    assert "planner must depend on migrate with service_completed_successfully" in (
        dependency_problems(compose)
    )
    services["executor"]["ports"] = ["18200:8200"]
    services["planner"]["environment"]["PLANEXEC_PORT"] = "9000"
    assert port_problems(compose) == [
        "planner: listens on 9000, publishes 8100",
        "executor: container port 8200 not published as 8200",
    ]


def test_command_check_reports_unknown_and_landed_subcommands() -> None:
    compose = load_compose()
    compose["services"]["migrate"]["command"] = ["migrat"]
    compose["services"]["planner"]["command"] = ["planner", "--no-such-flag"]
    parser = build_parser()
    next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).add_parser(
        "worker"
    )
    problems = command_problems(compose, parser)
    assert problems[0].startswith("planner: `planexec planner --no-such-flag` does not parse")
    assert problems[1].startswith("migrate: `planexec migrat` is no subcommand")
    assert problems[2:] == ["`planexec worker` exists: remove it from NOT_YET_IMPLEMENTED"]


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


# --- Dockerfile and build context -------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1].strip() if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def test_dockerfile_runs_planexec_as_non_root_from_an_installed_project() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    final = instructions[last_from:]
    assert final[0][1].startswith("python:3.11-slim")
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["planexec"]
    user = dict(final).get("USER", "root").split(":")[0]
    assert user not in {"root", "0"}
    runs = [args for op, args in instructions if op == "RUN"]
    assert any(re.search(r"pip install (--\S+ )*\.(\s|$)", run) for run in runs)
    assert not any(re.search(r"\[test\]|pip install -e|apt-get install", run) for run in runs)
    assert "org.opencontainers.image.title" in dict(final).get("LABEL", "")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out (the last matching pattern wins)."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!").strip("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(prefix, glob) for prefix in prefixes):
            ignored = not negated
    return ignored


def test_build_context_holds_the_project_and_no_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [
        p.name
        for p in ROOT.iterdir()
        if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, g) for g in includes)
    ]
    assert len(packages) >= 4
    needed = ["pyproject.toml", project["project"]["readme"]]
    needed += [f"{package}/__init__.py" for package in packages]
    assert [path for path in needed if dockerignored(path, patterns)] == []
    local_state = [".venv/bin/python", ".data/pg/PG_VERSION", ".env", ".git/HEAD", "tests/pg.py"]
    assert all(dockerignored(path, patterns) for path in local_state)
    assert dockerignored("planexec/__pycache__/cli.cpython-311.pyc", patterns)
    assert not dockerignored("planexec/cli.py", ["*", "!planexec/"])
    assert dockerignored("planexec/cli.py", ["*", "!planexec/", "planexec/cli.py"])
