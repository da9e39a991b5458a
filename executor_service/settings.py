"""Executor service and worker settings (environment prefix ``PLANEXEC_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from planexec.settings import CommonSettings

from .engine.faults import parse_fault


class ExecutorSettings(CommonSettings):
    """Everything the executor API and its workers read; passed to ``create_app(settings)``."""

    executor_host: str = "127.0.0.1"
    """Interface the executor API listens on."""
    executor_port: int = Field(default=8200, ge=1, le=65535)
    """TCP port of the executor API."""
    planner_url: str | None = None
    """Base URL of the planner (``http://127.0.0.1:8100``): dispatch claims and plan fetches."""
    service_api_key: SecretStr | None = None
    """API key with the ``planexec:dispatch`` scope the executor presents to the planner."""
    catalog_config: Path | None = None
    """YAML file that lists the tool sources (built-ins, OpenAPI documents, MCP servers)."""
    accepted_schema_ids: list[str] = Field(default_factory=lambda: ["planexec.plan/v1"])
    """Plan schema ids this executor runs; other plans are refused."""
    worker_concurrency: int = Field(default=8, ge=1, le=1000)
    """Runs one worker process drives at once."""
    step_concurrency: int = Field(default=16, ge=1, le=1000)
    """Steps one worker process runs at once, across its runs."""
    tool_concurrency: dict[str, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=dict
    )
    """Calls of a tool in flight at once across all workers, by tool name
    (``{"sink.effect": 2}``); tools not named are not capped (``engine.slots``, R15)."""
    tenant_tool_concurrency: dict[str, Annotated[int, Field(ge=1, le=100_000)]] = Field(
        default_factory=dict
    )
    """Calls of a tool in flight at once for each tenant, across all workers, by tool name."""
    lease_ttl_s: float = Field(default=30.0, ge=0.5, le=3600)
    """How long a run lease lasts without a heartbeat, in seconds."""
    heartbeat_s: float | None = Field(default=None, gt=0)
    """Heartbeat interval in seconds; default a third of ``lease_ttl_s``."""
    db_command_timeout_s: float = Field(default=30.0, gt=0, le=3600)
    """Seconds an engine statement may take before the worker gives up on it and retries
    (a black-holed connection, RELIABILITY R18, is found this way); unknown-outcome commits
    are then read back before being resent."""
    db_connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    """Seconds opening a database connection may take."""
    poll_s: float = Field(default=1.0, gt=0, le=60)
    """Slowest interval at which an idle worker looks for work, in seconds."""
    dispatch_wait_s: float = Field(default=10.0, ge=0, le=30)
    """Long-poll time of a dispatch claim against the planner, in seconds."""
    drain_s: float = Field(default=20.0, ge=0, le=600)
    """On SIGTERM, how long in-flight steps may finish before their leases are released."""
    max_output_bytes: int = Field(default=1_048_576, ge=1024)
    """Largest tool output stored for a step, in bytes (canonical JSON)."""
    liveness_file: Path | None = None
    """A file the worker touches at least every ``poll_s`` seconds while its loop is alive
    (for container healthchecks: stale mtime = stuck worker)."""
    http_allow_networks: list[str] = Field(default_factory=list)
    """CIDRs ``http.request`` may reach although private or loopback (e.g. ``127.0.0.1/32``)."""
    http_allow_hosts: list[str] = Field(default_factory=list)
    """Host globs ``http.request`` may reach; empty = any public host."""
    http_allow_ports: list[int] = Field(default_factory=lambda: [80, 443])
    """Ports ``http.request`` may connect to."""
    llm_base_url: str | None = None
    """OpenAI-compatible server for the ``llm.complete`` tool."""
    llm_api_key: SecretStr | None = None
    """API key of that server."""
    llm_model: str = "gpt-4o-mini"
    """Model ``llm.complete`` uses."""

    max_recoveries: int = Field(default=5, ge=3, le=1000)
    """Times a run may be recovered from a lost worker in a row, with no step succeeding in
    between, before it is dead-lettered (a poison step); ``POST /v1/runs/{id}/resume``.
    At least 3: a run's first two recoveries may share crashes with a poison run leased
    with it; from then on it is leased alone, so only its own crashes count."""
    max_replans: int = Field(default=3, ge=0, le=100)
    """Replans one run may make after ``on_failure: replan`` failures."""
    approval_timeout_s: float | None = Field(default=None, gt=0, le=31_536_000)
    """Default life of an approval gate in seconds (a step's ``approval_timeout_s`` wins);
    an expired gate counts as a rejection. None: gates wait until decided."""
    approval_webhook_url: str | None = None
    """URL that receives an ``approval.requested`` event (Standard Webhooks, signed with the
    signing key) whenever a gate opens."""
    run_budget_usd: float | None = Field(default=None, ge=0)
    """Default cost cap of one run in USD (``budget_usd`` of ``POST /v1/runs`` wins)."""
    tenant_budget_usd: float | None = Field(default=None, ge=0)
    """What one tenant may spend per UTC day across its runs, in USD; None: no cap."""
    fault: str | None = None
    """Test-only fault injection, ``<point>[:<step_id>]`` (``engine.faults``); refused in
    ``env=prod``."""

    @model_validator(mode="after")
    def _check_fault(self) -> ExecutorSettings:
        parse_fault(self.fault)
        if self.fault and self.env == "prod":
            raise ValueError("PLANEXEC_FAULT is for tests; it is refused when env=prod")
        return self

    @property
    def heartbeat_interval_s(self) -> float:
        """Seconds between lease renewals."""
        return self.heartbeat_s if self.heartbeat_s is not None else self.lease_ttl_s / 3
