"""Export the contract's JSON Schemas to ``shared_schemas/jsonschema/*.json``.

Run ``python -m shared_schemas.export`` (``make schemas``); ``--check`` exits 1 when the
committed files differ from the models, which is what the drift test asserts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pydantic import BaseModel

from .events import RunEvent
from .plan import Plan, PlanDraft, RetryPolicy, Step
from .policy import PolicyDecision
from .principal import Principal
from .problem import ProblemDetails
from .tool import ToolCatalog, ToolSpec
from .validation import ValidationIssue, ValidationReport

SCHEMA_DIR = Path(__file__).parent / "jsonschema"
BASE_ID = "https://planexec.dev/schemas/"

MODELS: dict[str, type[BaseModel]] = {
    "plan": Plan,
    "plan_draft": PlanDraft,
    "step": Step,
    "retry_policy": RetryPolicy,
    "tool_spec": ToolSpec,
    "tool_catalog": ToolCatalog,
    "validation_issue": ValidationIssue,
    "validation_report": ValidationReport,
    "policy_decision": PolicyDecision,
    "principal": Principal,
    "run_event": RunEvent,
    "problem_details": ProblemDetails,
}
"""File stem -> model; every file is ``<stem>.json``."""


def render(stem: str, model: type[BaseModel]) -> str:
    """The JSON Schema (Draft 2020-12) document of ``model`` as committed text."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE_ID}{stem}.json",
        **model.model_json_schema(mode="validation"),
    }
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def drift(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing, stale or unexpected in ``directory``."""
    expected = {f"{stem}.json": render(stem, model) for stem, model in MODELS.items()}
    present = {p.name for p in directory.glob("*.json")}
    stale = [
        name
        for name, text in expected.items()
        if name not in present or (directory / name).read_text(encoding="utf-8") != text
    ]
    return sorted(stale + [name for name in present if name not in expected])


def write(directory: Path = SCHEMA_DIR) -> None:
    """Write every schema file and remove files of models that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem, model in MODELS.items():
        (directory / f"{stem}.json").write_text(render(stem, model), encoding="utf-8")
    for path in directory.glob("*.json"):
        if path.stem not in MODELS:
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: write the schemas, or with ``--check`` report drift."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if files are out of date")
    args = parser.parse_args(argv)
    if args.check:
        stale = drift()
        for name in stale:
            print(f"out of date: shared_schemas/jsonschema/{name}", file=sys.stderr)
        return 1 if stale else 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())
