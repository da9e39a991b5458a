"""The Dockerfile, its build context and the commands run in its image stay true to the project.

No Docker engine runs here: the Dockerfile, ``.dockerignore``, ``pyproject.toml`` and the
``docker compose run`` command docker-compose.yml tells operators to run are parsed and checked
against each other, the source tree and the ``planexec`` argument parser; the shell snippets of
the Dockerfile that name paths run here, with this interpreter.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

from pydantic import ValidationError

from planexec.cli import build_parser
from planexec.web import DISPATCH_SCOPE
from shared_schemas import Principal, Role
from tests.contract.test_compose import COMPOSE_FILE, Compose, environment, load_compose

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
IMAGE_DEMO_ASSETS = "/opt/planexec/demo"
"""Where the image links the installed ``planexec/demo/assets`` (the planner's demo dirs)."""
IMAGE_DEMO_DATA = "/var/lib/planexec-demo"
"""The demo data directory the image creates for the non-root user (compose mounts a volume)."""
PIP_INSTALL = re.compile(
    r"pip install (?:--\S+ )*[\"']?\.(?:\[(?P<extras>[\w,-]+)\])?[\"']?(?:\s|$)"
)
"""``pip install .`` or ``pip install ".[extra,...]"``: the project from the build context."""
KEY_COMMAND = re.compile(r"docker compose run --rm (?:-T )?(?P<service>[\w-]+) (?P<args>[\w:. -]+)")
"""The command the message of a missing ``PLANEXEC_SERVICE_API_KEY`` tells operators to run."""


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [
        (parts[0].upper(), parts[1].strip() if len(parts) > 1 else "")
        for parts in (line.strip().split(None, 1) for line in joined.splitlines() if line.strip())
    ]


def final_stage() -> dict[str, str]:
    """The last stage's instructions (the image that runs); a repeated one keeps its last."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return dict(instructions[last_from:]) | {"FROM": instructions[last_from][1]}


def image_entrypoint() -> list[str]:
    """The image's exec-form ENTRYPOINT: what ``docker compose run SERVICE ARGS`` prefixes."""
    entrypoint: list[str] = json.loads(final_stage()["ENTRYPOINT"])
    return entrypoint


def test_dockerfile_runs_planexec_as_non_root_from_an_installed_project() -> None:
    final = final_stage()
    assert final["FROM"].startswith("python:3.11-slim")
    assert image_entrypoint() == [*PYPROJECT["project"]["scripts"]] == ["planexec"]
    assert final.get("USER", "root").split(":")[0] not in {"root", "0"}
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    runs = [args for op, args in instructions if op == "RUN"]
    assert not any(re.search(r"pip install -e", run) for run in runs)
    assert "org.opencontainers.image.title" in final.get("LABEL", "")


def installed_extras(runs: list[str]) -> set[str]:
    """The extras of the ``pip install .[...]`` of the Dockerfile's RUN instructions.

    Raises:
        AssertionError: when no RUN installs the project from the build context.
    """
    installs = [m for run in runs for m in PIP_INSTALL.finditer(run)]
    assert installs, "no RUN installs the project (pip install .)"
    return {e for m in installs for e in (m["extras"] or "").split(",") if e}


def apt_problems(runs: list[str]) -> list[str]:
    """Debian packages: only git (mcp-server-git drives it), lean, and no apt lists kept."""
    problems = []
    for run in runs:
        for command in re.split(r"&&|;", run):
            words = command.split()
            if words[:2] != ["apt-get", "install"]:
                continue
            packages = [w for w in words[2:] if not w.startswith("-")]
            if packages != ["git"]:
                problems.append(f"apt-get installs {packages}, not just git")
            if "--no-install-recommends" not in words:
                problems.append("apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists/*" not in run:
                problems.append("the apt lists stay in the image layer")
    return problems


def test_image_holds_the_demo_tool_servers_and_git() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    runs = [args for op, args in instructions if op == "RUN"]
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert installed_extras(runs) == {"demo"}  # never the test tooling
    demo = {re.split(r"[<>=\[ ]", d)[0] for d in extras["demo"]}
    assert {"mcp-server-git", "mcp-server-time", "httpbin"} <= demo
    assert apt_problems(runs) == []
    assert installed_extras(['pip install ".[demo,test]"']) == {"demo", "test"}
    assert installed_extras(["/opt/planexec/bin/pip install ."]) == set()
    assert apt_problems(["apt-get update && apt-get install -y git curl"]) == [
        "apt-get installs ['git', 'curl'], not just git",
        "apt-get install without --no-install-recommends",
        "the apt lists stay in the image layer",
    ]


def demo_paths_run() -> str:
    """The final stage's RUN that links the demo assets and creates the demo data directory."""
    runs = [args for op, args in final_stage_instructions() if op == "RUN"]
    (run,) = [run for run in runs if IMAGE_DEMO_ASSETS in run]
    return run


def final_stage_instructions() -> list[tuple[str, str]]:
    """Every instruction of the last stage, in order."""
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    last_from = max(i for i, (op, _) in enumerate(instructions) if op == "FROM")
    return instructions[last_from:]


def test_image_links_the_installed_demo_assets_and_owns_the_demo_data_directory() -> None:
    run = demo_paths_run()
    link, _, make_dir = run.partition("&&")
    words = shlex.split(link, posix=True)
    assert words[:2] == ["ln", "-s"] and words[-1] == IMAGE_DEMO_ASSETS
    # The link target is a shell substitution: run its python snippet here. In an installed
    # project it names site-packages/planexec/demo/assets; in this checkout, the source tree.
    (snippet,) = re.findall(r"python -c '([^']+)'", link)
    printed = subprocess.run(
        [sys.executable, "-c", snippet], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(printed) == ROOT / "planexec" / "demo" / "assets"
    assert (Path(printed) / "policies" / "demo.cedar").is_file()
    assert shlex.split(make_dir) == [
        "install",
        "-d",
        "-o",
        "planexec",
        "-g",
        "planexec",
        IMAGE_DEMO_DATA,
    ]
    # After the virtualenv is copied in (the snippet imports from it), before USER (as root).
    final = final_stage_instructions()
    at = final.index(("RUN", run))
    assert any(op == "COPY" and "--from=build" in args for op, args in final[:at])
    assert "USER" in [op for op, _ in final[at:]]


def test_instructions_join_continuations_and_drop_comments() -> None:
    text = '# c\nFROM a AS b\nRUN x \\\n && y\nentrypoint ["p"]\n'
    assert dockerfile_instructions(text) == [
        ("FROM", "a AS b"),
        ("RUN", "x   && y"),
        ("ENTRYPOINT", '["p"]'),
    ]


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


def installed_packages() -> list[Path]:
    """Top-level package directories ``pip install .`` installs (setuptools ``find`` include)."""
    includes = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    return [
        p
        for p in sorted(ROOT.iterdir())
        if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, g) for g in includes)
    ]


def test_build_context_holds_the_project_and_no_local_state() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    packages = [p.name for p in installed_packages()]
    assert {"shared_schemas", "planner_service", "executor_service", "planexec"} <= set(packages)
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"]]
    needed += [f"{package}/__init__.py" for package in packages]
    assert [path for path in needed if dockerignored(path, patterns)] == []
    local_state = [".venv/bin/python", ".data/pg/PG_VERSION", ".env", ".git/HEAD", "tests/pg.py"]
    assert all(dockerignored(path, patterns) for path in local_state)
    assert dockerignored("planexec/__pycache__/cli.cpython-311.pyc", patterns)
    assert not dockerignored("planexec/cli.py", ["*", "!planexec/"])
    assert dockerignored("planexec/cli.py", ["*", "!planexec/", "planexec/cli.py"])


def unpackaged_data_files(package_data: dict[str, list[str]]) -> list[str]:
    """Non-Python files in the installed packages that no ``package-data`` glob ships."""
    missing = []
    for package in installed_packages():
        for path in sorted(package.rglob("*")):
            if not path.is_file() or path.suffix in {".py", ".pyc", ".typed"}:
                continue
            if "__pycache__" in path.parts:
                continue
            relative = path.relative_to(package).as_posix()
            globs = package_data.get(package.name, [])
            if not any(fnmatch.fnmatchcase(relative, glob) for glob in globs):
                missing.append(f"{package.name}/{relative}")
    return missing


def test_every_data_file_the_code_reads_is_installed_in_the_image() -> None:
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert unpackaged_data_files(package_data) == []
    without_policies = {k: [g for g in v if g != "policies/*"] for k, v in package_data.items()}
    assert "planner_service/policies/defaults.cedar" in unpackaged_data_files(without_policies)


# --- `docker compose run --rm -T migrate keys create ...` ----------------------------------------


def header_comment() -> str:
    """The leading comment of docker-compose.yml, ``#`` and line continuations removed."""
    lines = COMPOSE_FILE.read_text(encoding="utf-8").split("\n\n", 1)[0].splitlines()
    return " ".join(" ".join(ln.lstrip("#").rstrip("\\") for ln in lines).split())


def key_command_problems(
    compose: Compose, header: str, parser: argparse.ArgumentParser, entrypoint: list[str]
) -> list[str]:
    """The service key message's command runs ``planexec keys create`` for a dispatch key.

    ``docker compose run SERVICE ARGS`` runs the service's entrypoint (else the image's) with
    ``ARGS``; the key must have the scope the planner's dispatch routes require.
    """
    services = compose["services"]
    message = environment(services["planner"]).get("PLANEXEC_SERVICE_API_KEY") or ""
    match = KEY_COMMAND.search(message)
    if match is None:
        return ["PLANEXEC_SERVICE_API_KEY: the message names no docker compose run command"]
    problems = []
    service = services.get(match["service"], {})
    if "build" not in service or service.get("entrypoint", entrypoint) != ["planexec"]:
        problems.append(f"`run {match['service']} ...` does not run planexec from this image")
    try:
        parsed = parser.parse_args(match["args"].split())
        roles = frozenset(Role(r) for r in parsed.role)
        Principal(tenant=parsed.tenant, subject="cli", roles=roles, scopes=frozenset(parsed.scope))
        creates = parsed.keys_command == "create" and DISPATCH_SCOPE in parsed.scope
    except (SystemExit, AttributeError, TypeError, ValidationError):
        creates = False
    if not creates:
        problems.append(f"`planexec {match['args']}` creates no {DISPATCH_SCOPE} key")
    if match["args"] not in header:
        problems.append("the header comment does not show the command that creates the key")
    return problems


def test_the_service_key_message_tells_a_command_that_creates_the_key() -> None:
    compose = load_compose()
    assert key_command_problems(compose, header_comment(), build_parser(), image_entrypoint()) == []


def test_key_command_check_reports_a_command_that_would_not_make_the_key() -> None:
    compose = load_compose()
    env = compose["services"]["planner"]["environment"]
    message = env["PLANEXEC_SERVICE_API_KEY"]
    env["PLANEXEC_SERVICE_API_KEY"] = message.replace("planexec:dispatch}", "planexec:read}")
    compose["services"]["migrate"]["entrypoint"] = ["python"]
    header = header_comment().replace("--role operator", "--role operator --subject svc")
    assert key_command_problems(compose, header, build_parser(), ["planexec"]) == [
        "`run migrate ...` does not run planexec from this image",
        "`planexec keys create --tenant system --role operator --scope planexec:read` creates"
        " no planexec:dispatch key",
        "the header comment does not show the command that creates the key",
    ]
    del compose["services"]["migrate"]["entrypoint"]
    for old, new in [("--tenant system", "--tenant _system"), ("--role operator", "--role root")]:
        env["PLANEXEC_SERVICE_API_KEY"] = message.replace(old, new)
        args = "keys create --tenant system --role operator --scope planexec:dispatch"
        assert key_command_problems(compose, header_comment(), build_parser(), ["python"]) == [
            "`run migrate ...` does not run planexec from this image",
            f"`planexec {args.replace(old, new)}` creates no planexec:dispatch key",
            "the header comment does not show the command that creates the key",
        ]
