"""Dispatch queue (planner) and runs, steps, attempts, run events (executor).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UPGRADE = """
CREATE TABLE planner.dispatch (
    dispatch_id    uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    tenant         text NOT NULL,
    plan_id        uuid NOT NULL,
    version        integer NOT NULL,
    status         text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'acked')),
    lease_owner    text,
    lease_expires_at timestamptz,
    claims         integer NOT NULL DEFAULT 0,
    run_id         uuid,
    enqueued_at    timestamptz NOT NULL DEFAULT now(),
    acked_at       timestamptz,
    PRIMARY KEY (tenant, plan_id, version),
    FOREIGN KEY (tenant, plan_id, version)
        REFERENCES planner.plan_versions (tenant, plan_id, version)
);
CREATE INDEX dispatch_queued ON planner.dispatch (enqueued_at) WHERE status = 'queued';

CREATE TABLE executor.runs (
    tenant           text NOT NULL,
    run_id           uuid NOT NULL,
    plan_id          uuid NOT NULL,
    plan_version     integer NOT NULL,
    content_hash     text NOT NULL,
    catalog_version  text NOT NULL,
    policy_version   text NOT NULL,
    plan             jsonb NOT NULL,
    policy_decisions jsonb NOT NULL DEFAULT '[]',
    status           text NOT NULL CHECK (status IN ('pending', 'running', 'paused',
                         'needs_attention', 'succeeded', 'failed', 'cancelled')),
    created_by       text NOT NULL,
    traceparent      text,
    lease_owner      text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    wake_at          timestamptz,
    cancel_requested boolean NOT NULL DEFAULT false,
    next_seq         integer NOT NULL DEFAULT 1,
    error            jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (tenant, run_id),
    UNIQUE (tenant, plan_id, plan_version)
);
CREATE UNIQUE INDEX runs_by_id ON executor.runs (run_id);
CREATE INDEX runs_runnable ON executor.runs (created_at)
    WHERE status IN ('pending', 'running');
CREATE INDEX runs_listing ON executor.runs (tenant, created_at DESC, run_id DESC);

CREATE TABLE executor.steps (
    tenant           text NOT NULL,
    run_id           uuid NOT NULL,
    step_id          text NOT NULL,
    status           text NOT NULL CHECK (status IN ('blocked', 'ready', 'running',
                         'succeeded', 'failed', 'skipped', 'awaiting_approval',
                         'needs_attention', 'compensated', 'cancelled')),
    attempts         integer NOT NULL DEFAULT 0,
    resolved_args    jsonb,
    output           jsonb,
    error            jsonb,
    next_attempt_at  timestamptz,
    first_started_at timestamptz,
    finished_at      timestamptz,
    approval         jsonb,
    PRIMARY KEY (run_id, step_id),
    FOREIGN KEY (tenant, run_id) REFERENCES executor.runs (tenant, run_id)
);

CREATE TABLE executor.attempts (
    tenant          text NOT NULL,
    run_id          uuid NOT NULL,
    step_id         text NOT NULL,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    idempotency_key text NOT NULL,
    status          text NOT NULL CHECK (status IN ('started', 'succeeded', 'failed')),
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    duration_s      double precision,
    error           jsonb,
    worker          text,
    PRIMARY KEY (run_id, step_id, attempt)
);

CREATE TABLE executor.run_events (
    tenant   text NOT NULL,
    run_id   uuid NOT NULL,
    seq      integer NOT NULL CHECK (seq >= 1),
    type     text NOT NULL,
    step_id  text,
    attempt  integer,
    payload  jsonb NOT NULL DEFAULT '{}',
    trace_id text,
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX run_events_tenant ON executor.run_events (tenant, run_id, seq);

CREATE TABLE executor.approvals (
    tenant     text NOT NULL,
    run_id     uuid NOT NULL,
    step_id    text NOT NULL,
    decision   text NOT NULL CHECK (decision IN ('approve', 'reject')),
    decided_by text NOT NULL,
    comment    text,
    decided_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step_id)
);
"""

DOWNGRADE = """
DROP TABLE executor.approvals;
DROP TABLE executor.run_events;
DROP TABLE executor.attempts;
DROP TABLE executor.steps;
DROP TABLE executor.runs;
DROP TABLE planner.dispatch;
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
