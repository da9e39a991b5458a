"""Planner and executor schemas; planner tables: keys, plans, versions, provenance, cache.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UPGRADE = """
CREATE SCHEMA IF NOT EXISTS planner;
CREATE SCHEMA IF NOT EXISTS executor;

CREATE TABLE planner.api_keys (
    key_id      text PRIMARY KEY,
    tenant      text NOT NULL,
    subject     text NOT NULL,
    roles       text[] NOT NULL,
    scopes      text[] NOT NULL DEFAULT '{}',
    digest      text NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON planner.api_keys (tenant);

CREATE TABLE planner.plans (
    tenant         text NOT NULL,
    plan_id        uuid NOT NULL,
    latest_version integer NOT NULL CHECK (latest_version >= 1),
    status         text NOT NULL,
    intent         text NOT NULL,
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, plan_id)
);
CREATE INDEX plans_listing ON planner.plans (tenant, created_at DESC, plan_id DESC);
CREATE INDEX plans_by_status ON planner.plans (tenant, status, created_at DESC, plan_id DESC);

CREATE TABLE planner.plan_versions (
    tenant           text NOT NULL,
    plan_id          uuid NOT NULL,
    version          integer NOT NULL CHECK (version >= 1),
    status           text NOT NULL CHECK (status IN ('ready', 'rejected', 'awaiting_approval')),
    body             jsonb NOT NULL,
    content_hash     text NOT NULL,
    signature        text NOT NULL,
    validation       jsonb NOT NULL,
    policy_decisions jsonb NOT NULL,
    options          jsonb NOT NULL DEFAULT '{}',
    cache_hit        boolean NOT NULL DEFAULT false,
    cached_from      jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, plan_id, version),
    FOREIGN KEY (tenant, plan_id) REFERENCES planner.plans (tenant, plan_id)
);

CREATE TABLE planner.generation_attempts (
    tenant         text NOT NULL,
    plan_id        uuid NOT NULL,
    version        integer NOT NULL,
    attempt        integer NOT NULL CHECK (attempt >= 1),
    backend        text NOT NULL,
    model          text,
    prompt_version text,
    messages       jsonb NOT NULL DEFAULT '[]',
    parameters     jsonb NOT NULL DEFAULT '{}',
    raw_response   text,
    input_tokens   integer,
    output_tokens  integer,
    latency_s      double precision NOT NULL DEFAULT 0,
    error          text,
    issues         jsonb NOT NULL DEFAULT '[]',
    cache_hit      boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, plan_id, version, attempt),
    FOREIGN KEY (tenant, plan_id, version)
        REFERENCES planner.plan_versions (tenant, plan_id, version)
);

CREATE TABLE planner.idempotency_keys (
    tenant       text NOT NULL,
    key          text NOT NULL,
    request_hash text NOT NULL,
    plan_id      uuid NOT NULL,
    version      integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, key)
);

CREATE TABLE planner.plan_cache (
    tenant     text NOT NULL,
    cache_key  text NOT NULL,
    plan_id    uuid NOT NULL,
    version    integer NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, cache_key)
);

CREATE TABLE planner.catalogs (
    catalog_version text PRIMARY KEY,
    tools           jsonb NOT NULL,
    source          text NOT NULL,
    synced_at       timestamptz NOT NULL DEFAULT now()
);
"""

DOWNGRADE = """
DROP TABLE planner.catalogs;
DROP TABLE planner.plan_cache;
DROP TABLE planner.idempotency_keys;
DROP TABLE planner.generation_attempts;
DROP TABLE planner.plan_versions;
DROP TABLE planner.plans;
DROP TABLE planner.api_keys;
DROP SCHEMA executor;
DROP SCHEMA planner;
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
