"""The committed JSON Schema files match the pydantic models."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from shared_schemas.export import MODELS, SCHEMA_DIR, drift, render, write


def test_committed_schemas_match_models() -> None:
    assert drift() == [], "run `make schemas` and commit shared_schemas/jsonschema/"


def test_drift_detects_a_stale_file(tmp_path: Path) -> None:
    write(tmp_path)
    assert drift(tmp_path) == []
    (tmp_path / "step.json").write_text("{}", encoding="utf-8")
    (tmp_path / "obsolete.json").write_text("{}", encoding="utf-8")
    assert drift(tmp_path) == ["obsolete.json", "step.json"]


def test_exported_schemas_are_valid_draft_2020_12_with_field_descriptions() -> None:
    for stem in MODELS:
        schema = json.loads((SCHEMA_DIR / f"{stem}.json").read_text(encoding="utf-8"))
        jsonschema.Draft202012Validator.check_schema(schema)
    step = json.loads(render("step", MODELS["step"]))
    assert step["properties"]["timeout_s"]["description"].startswith("Timeout of one attempt")
    assert step["additionalProperties"] is False
