"""The README lists every problem type and the two set-up commands."""

from __future__ import annotations

import re
from pathlib import Path

from planexec.errors import ERROR_TYPES

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_readme_lists_every_problem_type_with_its_status() -> None:
    row = r"\| `(https://planexec\.dev/problems/[a-z-]+)` \| (\d{3}) \|"
    listed = dict(re.findall(row, README))
    expected = {err.type_uri(): str(err.status) for err in ERROR_TYPES}
    assert listed == expected


def test_readme_names_the_two_commands() -> None:
    assert "make run" in README
    assert "make test" in README
