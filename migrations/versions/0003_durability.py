"""Durability: run modes and lineage, dead letters, budgets, gates with deadlines, sagas.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UPGRADE = """
ALTER TABLE executor.runs
    ADD COLUMN mode text NOT NULL DEFAULT 'normal'
        CHECK (mode IN ('normal', 'replay', 'dry_run')),
    ADD COLUMN parent_run_id uuid,
    ADD COLUMN fork_from_step text,
    ADD COLUMN key_scope text,
    ADD COLUMN dedup_key text,
    ADD COLUMN request_hash text,
    ADD COLUMN recovery_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN replans integer NOT NULL DEFAULT 0,
    ADD COLUMN budget_usd double precision CHECK (budget_usd >= 0),
    ADD COLUMN spent_usd double precision NOT NULL DEFAULT 0,
    ADD COLUMN tool_specs jsonb NOT NULL DEFAULT '{}';
UPDATE executor.runs SET dedup_key = 'plan:' || plan_id || ':' || plan_version;
ALTER TABLE executor.runs DROP CONSTRAINT runs_tenant_plan_id_plan_version_key;
ALTER TABLE executor.runs ADD CONSTRAINT runs_dedup_key UNIQUE (tenant, dedup_key);
ALTER TABLE executor.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE executor.runs ADD CONSTRAINT runs_status_check CHECK (status IN ('pending',
    'running', 'paused', 'needs_attention', 'dead_letter', 'succeeded', 'failed',
    'cancelled'));
DROP INDEX executor.runs_runnable;
CREATE INDEX runs_runnable ON executor.runs (created_at)
    WHERE status IN ('pending', 'running', 'paused');
CREATE INDEX runs_by_plan ON executor.runs (tenant, plan_id, created_at DESC);

ALTER TABLE executor.steps
    ADD COLUMN args_hash text,
    ADD COLUMN gate_deadline timestamptz;
ALTER TABLE executor.steps DROP CONSTRAINT steps_status_check;
ALTER TABLE executor.steps ADD CONSTRAINT steps_status_check CHECK (status IN ('blocked',
    'ready', 'running', 'succeeded', 'failed', 'skipped', 'awaiting_approval',
    'needs_attention', 'compensating', 'compensated', 'cancelled'));

ALTER TABLE executor.attempts
    ADD COLUMN kind text NOT NULL DEFAULT 'action' CHECK (kind IN ('action', 'compensation'));
ALTER TABLE executor.attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE executor.attempts ADD PRIMARY KEY (run_id, step_id, kind, attempt);

ALTER TABLE executor.approvals ADD COLUMN args_hash text;

-- A run's row is rewritten by every group commit: leave room in its page for HOT updates.
ALTER TABLE executor.runs SET (fillfactor = 50);
CREATE TABLE executor.tenant_spend (
    tenant    text NOT NULL,
    day       date NOT NULL,
    spent_usd double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, day)
)
"""

DOWNGRADE = """
DROP TABLE executor.tenant_spend;
ALTER TABLE executor.approvals DROP COLUMN args_hash;
DELETE FROM executor.attempts WHERE kind = 'compensation';
ALTER TABLE executor.attempts DROP CONSTRAINT attempts_pkey;
ALTER TABLE executor.attempts ADD PRIMARY KEY (run_id, step_id, attempt);
ALTER TABLE executor.attempts DROP COLUMN kind;
UPDATE executor.steps SET status = 'succeeded' WHERE status = 'compensating';
ALTER TABLE executor.steps DROP CONSTRAINT steps_status_check;
ALTER TABLE executor.steps ADD CONSTRAINT steps_status_check CHECK (status IN ('blocked',
    'ready', 'running', 'succeeded', 'failed', 'skipped', 'awaiting_approval',
    'needs_attention', 'compensated', 'cancelled'));
ALTER TABLE executor.steps DROP COLUMN args_hash, DROP COLUMN gate_deadline;
DROP INDEX executor.runs_by_plan;
DROP INDEX executor.runs_runnable;
CREATE INDEX runs_runnable ON executor.runs (created_at) WHERE status IN ('pending', 'running');
UPDATE executor.runs SET status = 'needs_attention' WHERE status = 'dead_letter';
ALTER TABLE executor.runs DROP CONSTRAINT runs_status_check;
ALTER TABLE executor.runs ADD CONSTRAINT runs_status_check CHECK (status IN ('pending',
    'running', 'paused', 'needs_attention', 'succeeded', 'failed', 'cancelled'));
ALTER TABLE executor.runs DROP CONSTRAINT runs_dedup_key;
CREATE TEMP TABLE derived_runs AS SELECT run_id FROM executor.runs
    WHERE mode <> 'normal' OR parent_run_id IS NOT NULL OR dedup_key NOT LIKE 'plan:%';
DELETE FROM executor.approvals WHERE run_id IN (SELECT run_id FROM derived_runs);
DELETE FROM executor.run_events WHERE run_id IN (SELECT run_id FROM derived_runs);
DELETE FROM executor.attempts WHERE run_id IN (SELECT run_id FROM derived_runs);
DELETE FROM executor.steps WHERE run_id IN (SELECT run_id FROM derived_runs);
DELETE FROM executor.runs WHERE run_id IN (SELECT run_id FROM derived_runs);
ALTER TABLE executor.runs ADD CONSTRAINT runs_tenant_plan_id_plan_version_key
    UNIQUE (tenant, plan_id, plan_version);
ALTER TABLE executor.runs DROP COLUMN mode, DROP COLUMN parent_run_id,
    DROP COLUMN fork_from_step, DROP COLUMN key_scope, DROP COLUMN dedup_key,
    DROP COLUMN request_hash, DROP COLUMN recovery_attempts, DROP COLUMN replans,
    DROP COLUMN budget_usd, DROP COLUMN spent_usd, DROP COLUMN tool_specs
"""


def upgrade() -> None:
    for statement in UPGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
