"""Tool concurrency slots: per-tool and per-tenant caps that hold across workers (R15).

A row is one holder of, or waiter for, a slot of a capped tool. It lives as long as the run
lease it names: a row whose run no longer has that lease token, or whose lease expired
(database clock), counts for nothing and is swept by the next acquire or release of the tool.
A worker that dies therefore frees its slots when its leases expire, never earlier, and a
reclaimed run (new token) waits behind the dead worker's slot until then.

Acquire and release run in functions that first take a transaction-scoped advisory lock on
the tool, so the count-and-grant is serial per tool and the statement holds nothing after it
commits. Waiters are granted in ticket order (FIFO), skipping one whose tenant is at its cap.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = (
    """
CREATE TABLE executor.tool_slots (
    tool        text NOT NULL,
    holder      uuid NOT NULL,
    tenant      text NOT NULL,
    run_id      uuid NOT NULL,
    step_id     text NOT NULL,
    lease_token uuid NOT NULL,
    ticket      bigint GENERATED ALWAYS AS IDENTITY,
    queued_at   timestamptz NOT NULL DEFAULT now(),
    granted_at  timestamptz,
    PRIMARY KEY (tool, holder)
)""",
    "CREATE INDEX tool_slots_queue ON executor.tool_slots (tool, ticket)",
    """
CREATE FUNCTION executor.grant_tool_slots(p_tool text, p_cap integer, p_tenant_cap integer)
RETURNS integer LANGUAGE plpgsql AS $$
-- Sweep rows of dead leases, then grant waiters in ticket order while the caps allow.
-- The caller holds the tool's advisory lock. Each grant notifies 'planexec_slots' with the
-- holder id. Returns the number of slots held after the grants.
DECLARE
    v_held integer;
    v_tenant_held integer;
    w record;
BEGIN
    DELETE FROM executor.tool_slots s
    WHERE s.tool = p_tool AND NOT EXISTS (
        SELECT 1 FROM executor.runs r
        WHERE r.run_id = s.run_id AND r.lease_token = s.lease_token
          AND r.lease_expires_at > now());
    SELECT count(*) INTO v_held FROM executor.tool_slots
    WHERE tool = p_tool AND granted_at IS NOT NULL;
    FOR w IN SELECT holder, tenant FROM executor.tool_slots
             WHERE tool = p_tool AND granted_at IS NULL ORDER BY ticket LOOP
        EXIT WHEN p_cap IS NOT NULL AND v_held >= p_cap;
        IF p_tenant_cap IS NOT NULL THEN
            SELECT count(*) INTO v_tenant_held FROM executor.tool_slots
            WHERE tool = p_tool AND tenant = w.tenant AND granted_at IS NOT NULL;
            CONTINUE WHEN v_tenant_held >= p_tenant_cap;
        END IF;
        UPDATE executor.tool_slots SET granted_at = now()
        WHERE tool = p_tool AND holder = w.holder;
        v_held := v_held + 1;
        PERFORM pg_notify('planexec_slots', w.holder::text);
    END LOOP;
    RETURN v_held;
END
$$""",
    """
CREATE FUNCTION executor.acquire_tool_slot(p_tool text, p_holder uuid, p_tenant text,
    p_run_id uuid, p_step_id text, p_lease_token uuid, p_cap integer, p_tenant_cap integer)
RETURNS TABLE (granted boolean, held integer, queued integer) LANGUAGE plpgsql AS $$
-- Queue the holder (once; a repeated call keeps its ticket) and grant what can be granted.
-- A holder whose run lease is not live is not queued: granted is false and queued 0.
DECLARE
    v_held integer;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('planexec.tool_slot:' || p_tool, 0));
    INSERT INTO executor.tool_slots (tool, holder, tenant, run_id, step_id, lease_token)
    SELECT p_tool, p_holder, p_tenant, p_run_id, p_step_id, p_lease_token
    FROM executor.runs r
    WHERE r.run_id = p_run_id AND r.lease_token = p_lease_token AND r.lease_expires_at > now()
    ON CONFLICT (tool, holder) DO NOTHING;
    v_held := executor.grant_tool_slots(p_tool, p_cap, p_tenant_cap);
    RETURN QUERY
    SELECT coalesce(bool_or(s.holder = p_holder AND s.granted_at IS NOT NULL), false),
        v_held, count(*) FILTER (WHERE s.granted_at IS NULL)::integer
    FROM executor.tool_slots s WHERE s.tool = p_tool;
END
$$""",
    """
CREATE FUNCTION executor.release_tool_slot(p_tool text, p_holder uuid, p_cap integer,
    p_tenant_cap integer)
RETURNS boolean LANGUAGE plpgsql AS $$
-- Give a slot (or a place in the queue) back and grant the next waiters. True when the
-- holder still had a row.
DECLARE
    v_found boolean;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('planexec.tool_slot:' || p_tool, 0));
    DELETE FROM executor.tool_slots WHERE tool = p_tool AND holder = p_holder;
    v_found := FOUND;
    PERFORM executor.grant_tool_slots(p_tool, p_cap, p_tenant_cap);
    RETURN v_found;
END
$$""",
)
"""Statements in order; function bodies contain semicolons, so no splitting on them."""

DOWNGRADE = """
DROP FUNCTION executor.release_tool_slot(text, uuid, integer, integer);
DROP FUNCTION executor.acquire_tool_slot(text, uuid, text, uuid, text, uuid, integer, integer);
DROP FUNCTION executor.grant_tool_slots(text, integer, integer);
DROP TABLE executor.tool_slots
"""


def upgrade() -> None:
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE.split(";\n"):
        if statement.strip():
            op.execute(statement)
