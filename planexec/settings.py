"""Settings shared by both services (pydantic-settings, environment prefix ``PLANEXEC_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRET = "dev-only-change-me"
"""The shipped default of every secret; accepted only when ``env`` is ``dev``."""


class CommonSettings(BaseSettings):
    """Settings every planexec process reads.

    Values come from the environment (``PLANEXEC_<FIELD>``), then a ``.env`` file, then the
    defaults below. Placeholder secrets are refused outside ``env=dev``.
    """

    model_config = SettingsConfigDict(
        env_prefix="PLANEXEC_",
        env_file=".env",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    env: Literal["dev", "test", "prod"] = "dev"
    """Deployment kind; ``prod`` and ``test`` refuse placeholder secrets."""
    database_url: str | None = None
    """SQLAlchemy URL of Postgres (``postgresql+asyncpg://...``); unset = embedded server."""
    data_dir: Path = Path(".data")
    """Where the embedded Postgres keeps its files (and other local state)."""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    """Connections kept in each process's pool."""
    db_max_overflow: int = Field(default=5, ge=0, le=200)
    """Extra connections the pool may open under load."""
    signing_key: SecretStr = SecretStr(PLACEHOLDER_SECRET)
    """HMAC-SHA256 key that signs plan content hashes (at least 32 bytes outside dev)."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    """Largest accepted request body, in bytes; larger bodies get 413."""
    max_body_depth: int = Field(default=64, ge=2, le=512)
    """Deepest nesting of arrays and objects in a JSON request body; deeper gets 422
    ``limit-exceeded`` (``limit: max_body_depth``)."""
    max_body_items: int = Field(default=10_000, ge=1, le=10_000_000)
    """Most items of one array (or members of one object) in a JSON request body; more gets
    422 ``limit-exceeded`` (``limit: max_body_items``)."""
    max_number_length: int = Field(default=100, ge=20, le=4000)
    """Longest number literal in a JSON request body, in characters; longer gets 422
    ``limit-exceeded`` (``limit: max_number_length``)."""
    auth_cache_ttl_s: float = Field(default=5.0, ge=0, le=300)
    """How long a verified API key is remembered per process, in seconds (0 = never)."""
    auth_failure_limit: int | None = Field(default=20, ge=1, le=100_000)
    """Failed authentications (malformed, unknown, wrong-secret or revoked keys; console
    logins included) one client address may make per ``auth_failure_window_s``; past it every
    request from that address that presents a key gets 429 ``rate-limited`` with
    ``Retry-After`` until the moving window has room again, without the key being checked.
    Counted per process, in memory. Unset = no limit."""
    auth_failure_window_s: int = Field(default=60, ge=1, le=86_400)
    """Moving window of ``auth_failure_limit``, in seconds."""
    tenant_rate_limit: int | None = Field(default=None, ge=1, le=10_000_000)
    """Authenticated API requests one tenant may make per ``tenant_rate_window_s`` to this
    process; past it 429 ``rate-limited`` with ``Retry-After``. Keys with the
    ``planexec:dispatch`` scope (the executor's service key) and unauthenticated routes
    (health, metrics) are not counted. Counted per process, in memory (N processes allow up to
    N times this). Unset = no limit."""
    tenant_rate_window_s: int = Field(default=60, ge=1, le=86_400)
    """Window of ``tenant_rate_limit``, in seconds (sliding window counter)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Minimum level of structured log lines."""
    log_json: bool = True
    """Emit logs as JSON lines (false: human-readable console lines)."""
    docs_enabled: bool = True
    """Serve ``/docs`` and ``/openapi.json``."""
    otel_exporter: Literal["none", "console", "otlp", "memory"] | None = None
    """Where spans go: ``otlp`` (OTLP/HTTP, configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables), ``console``, ``memory`` (tests) or ``none``; unset = ``otlp`` when
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set, else ``none``."""
    metrics_host: str = "127.0.0.1"
    """Interface of the Prometheus ``/metrics`` listener of a worker process."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Port of a worker process's Prometheus ``/metrics`` listener (unset = none; the planner
    and the executor API serve ``/metrics`` on their own port)."""
    retention_days: float | None = Field(default=None, gt=0)
    """Age in days after which ``planexec prune`` deletes the events of finished runs and the
    provenance (generation attempts) of plan versions; unset = keep them until a prune is
    given ``--older-than``."""
    retention_batch: int = Field(default=1000, ge=1, le=100_000)
    """Most rows ``planexec prune`` deletes per transaction."""

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Self:
        if self.env == "dev":
            return self
        key = self.signing_key.get_secret_value()
        if key == PLACEHOLDER_SECRET:
            raise ValueError(
                f"PLANEXEC_SIGNING_KEY is a placeholder; set a real key for env={self.env}"
            )
        if len(key.encode()) < 32:
            raise ValueError("PLANEXEC_SIGNING_KEY must be at least 32 bytes outside env=dev")
        if self.env == "prod" and self.otel_exporter == "memory":
            raise ValueError("PLANEXEC_OTEL_EXPORTER=memory is for tests; refused for env=prod")
        return self

    @property
    def signing_key_bytes(self) -> bytes:
        """The signing key as bytes."""
        return self.signing_key.get_secret_value().encode()
