"""The shipped demo catalog file matches the demo catalog the tests plan against."""

from __future__ import annotations

import json
from pathlib import Path

from planner_service.catalog import parse_catalog

from ..support.demo_catalog import demo_catalog

SHIPPED = Path(__file__).resolve().parents[2] / "planner_service" / "catalogs" / "demo.json"


def test_shipped_demo_catalog_is_current() -> None:
    shipped = parse_catalog(json.loads(SHIPPED.read_text(encoding="utf-8")))
    assert shipped == demo_catalog(), "regenerate planner_service/catalogs/demo.json"
