"""Settings: environment prefix, placeholder secrets refused outside dev."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from planexec.settings import PLACEHOLDER_SECRET
from planner_service.settings import PlannerSettings


def test_reads_planexec_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PLANEXEC_PORT", "9123")
    monkeypatch.setenv("PLANEXEC_MAX_REPAIRS", "4")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    settings = PlannerSettings(_env_file=None)
    assert settings.port == 9123
    assert settings.max_repairs == 4
    assert settings.llm_api_key is not None
    assert settings.llm_api_key.get_secret_value() == "sk-test"


def test_placeholder_signing_key_accepted_in_dev_only() -> None:
    assert (
        PlannerSettings(env="dev", _env_file=None).signing_key.get_secret_value()
        == PLACEHOLDER_SECRET
    )
    for env in ("test", "prod"):
        with pytest.raises(ValidationError, match="placeholder"):
            PlannerSettings(env=env, _env_file=None)


def test_short_signing_key_refused_outside_dev() -> None:
    with pytest.raises(ValidationError, match="32 bytes"):
        PlannerSettings(env="prod", signing_key="short", _env_file=None)
    ok = PlannerSettings(env="prod", signing_key="x" * 32, _env_file=None)
    assert ok.signing_key_bytes == b"x" * 32
