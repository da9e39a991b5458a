"""Planner service settings (environment prefix ``PLANEXEC_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr

from planexec.settings import CommonSettings


class PlannerSettings(CommonSettings):
    """Everything the planner service reads at start; passed to ``create_app(settings)``."""

    host: str = "127.0.0.1"
    """Interface the planner API listens on."""
    port: int = Field(default=8100, ge=1, le=65535)
    """TCP port of the planner API."""
    default_backend: Literal["template", "openai", "draft"] = "template"
    """Backend used when a request names none; ``openai`` needs ``llm_base_url`` or a key."""
    templates_dir: Path | None = None
    """A deployment's own plan templates (YAML), tried before the shipped ones."""
    policy_dir: Path | None = None
    """A deployment's own Cedar policies, added to the shipped defaults."""
    catalog_url: str | None = None
    """Executor ``GET /v1/tools`` URL the catalog is synced from; unset = ``catalog_file``."""
    catalog_file: Path | None = None
    """A JSON tool catalog (``{"tools": [...]}``) used when no executor is configured."""
    catalog_refresh_s: float = Field(default=60.0, gt=0)
    """How often the catalog is re-synced from the executor, in seconds."""
    service_api_key: SecretStr | None = None
    """API key the planner presents to the executor (a service principal)."""
    llm_base_url: str | None = None
    """Base URL of an OpenAI-compatible server; unset = api.openai.com when a key is set."""
    llm_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("PLANEXEC_LLM_API_KEY", "OPENAI_API_KEY")
    )
    """API key of the model server (``PLANEXEC_LLM_API_KEY`` or ``OPENAI_API_KEY``)."""
    llm_model: str = "gpt-4o-mini"
    """Model name sent to the model server."""
    llm_seed: int = 7
    """Sampling seed sent with every request (temperature is always 0)."""
    llm_timeout_s: float = Field(default=60.0, gt=0)
    """Timeout of one model call, in seconds."""
    llm_prompt_token_budget: int = Field(default=6000, ge=500)
    """Token budget of the rendered catalog in the prompt (estimated as characters / 4)."""
    redact_patterns: list[str] = Field(default_factory=list)
    """Extra regular expressions of secrets removed from provenance before it is written."""
    max_repairs: int = Field(default=2, ge=0, le=10)
    """Default number of repair rounds after a failed generation."""
    cache_ttl_s: float = Field(default=3600.0, ge=0)
    """How long a generated plan body is reused for the same request, in seconds; 0 = off."""
    max_intent_bytes: int = Field(default=16_384, ge=1)
    """Largest accepted intent, in UTF-8 bytes."""
    max_json_depth: int = Field(default=32, ge=2)
    """Deepest accepted nesting of ``context`` and step ``args``."""
    max_steps: int = Field(default=200, ge=1)
    """Most steps a plan may have."""
    max_plan_depth: int = Field(default=50, ge=1)
    """Longest dependency chain a plan may have."""
