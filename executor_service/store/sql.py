"""SQL of the run store. Each statement is one round trip and, in autocommit, one commit."""

from __future__ import annotations

CREATE_RUN = """
WITH run AS (
    INSERT INTO executor.runs (tenant, run_id, plan_id, plan_version, content_hash,
        catalog_version, policy_version, plan, policy_decisions, status, created_by,
        traceparent, next_seq, mode, parent_run_id, fork_from_step, key_scope, dedup_key,
        request_hash, budget_usd, tool_specs)
    VALUES (:tenant, :run_id, :plan_id, :version, :content_hash, :catalog_version,
        :policy_version, CAST(:plan AS jsonb), CAST(:decisions AS jsonb), 'pending',
        :created_by, :traceparent, 2, :mode, :parent_run_id, :fork_from_step, :key_scope,
        :dedup_key, :request_hash, :budget_usd, CAST(:tool_specs AS jsonb))
    ON CONFLICT (tenant, dedup_key) DO NOTHING
    RETURNING tenant, run_id
), steps AS (
    INSERT INTO executor.steps (tenant, run_id, step_id, status, output, resolved_args,
        attempts, finished_at)
    SELECT run.tenant, run.run_id, s.step_id, s.status, s.output, s.resolved_args,
        coalesce(s.attempts, 0), CASE WHEN s.status = 'succeeded' THEN now() END
    FROM run, jsonb_to_recordset(CAST(:steps AS jsonb)) AS s(step_id text, status text,
        output jsonb, resolved_args jsonb, attempts integer)
    RETURNING 1
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload, trace_id)
    SELECT run.tenant, run.run_id, 1, 'run.created', CAST(:event AS jsonb), :trace_id FROM run
    RETURNING 1
), notified AS (
    SELECT pg_notify('planexec_runs', '') FROM run
)
SELECT (SELECT run_id FROM run) AS created, (SELECT count(*) FROM notified) AS notified,
    (SELECT count(*) FROM steps) AS steps, (SELECT count(*) FROM event) AS events
"""

EXISTING_RUN = """
SELECT run_id, request_hash FROM executor.runs WHERE tenant = :tenant AND dedup_key = :dedup_key
"""

_CLAIM = """
WITH picked AS (
    -- The values before the claim: a lease token still set means the last holder never
    -- let go, so this claim is a recovery; past :max_recoveries recoveries in a row the run
    -- is dead-lettered instead of driven.
    SELECT run_id, lease_token IS NOT NULL AS recovered,
        lease_token IS NOT NULL AND recovery_attempts >= :max_recoveries AS dead
    FROM executor.runs
    WHERE status IN ('pending', 'running', 'paused')
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
      AND CASE WHEN status = 'paused' THEN wake_at <= now()
               ELSE wake_at IS NULL OR wake_at <= now() END
      -- A run recovered twice in a row without progress is suspect (a poison step?): it
      -- is leased alone, so that the crashes it causes are not charged to innocent runs.
      AND __SUSPECTS__
    ORDER BY created_at
    LIMIT __LIMIT__
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE executor.runs r
    SET lease_owner = CASE WHEN k.dead THEN NULL ELSE :worker END,
        lease_token = CASE WHEN k.dead THEN NULL ELSE gen_random_uuid() END,
        lease_expires_at = CASE WHEN k.dead THEN NULL
            ELSE now() + make_interval(secs => :ttl_s) END,
        status = CASE WHEN k.dead THEN 'dead_letter' ELSE 'running' END,
        recovery_attempts = r.recovery_attempts + k.recovered::integer,
        next_seq = r.next_seq + 1, updated_at = now(), wake_at = NULL
    FROM picked k
    WHERE r.run_id = k.run_id
    RETURNING r.tenant, r.run_id, r.plan, r.policy_decisions, r.lease_token, r.next_seq - 1 AS seq,
        r.cancel_requested, r.traceparent, r.created_at, r.status, r.mode, r.parent_run_id,
        r.key_scope, r.content_hash, r.budget_usd, r.spent_usd, r.tool_specs, r.replans,
        r.recovery_attempts, k.recovered
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT c.tenant, c.run_id, c.seq,
        CASE WHEN c.status = 'dead_letter' THEN 'run.dead_lettered' ELSE 'run.leased' END,
        CASE WHEN c.status = 'dead_letter'
            THEN jsonb_build_object('recovery_attempts', c.recovery_attempts,
                'reason', 'the run was recovered too many times without progress')
            ELSE jsonb_build_object('worker', :worker, 'recovered', c.recovered) END
    FROM claimed c
    RETURNING 1
)
SELECT c.*, now() AS db_now,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', s.step_id, 'status', s.status,
        'attempts', s.attempts, 'output', s.output, 'error', s.error,
        'resolved_args', s.resolved_args, 'args_hash', s.args_hash,
        'gate_deadline', s.gate_deadline, 'finished_at', s.finished_at,
        'first_started_at', s.first_started_at)), '[]')
     FROM executor.steps s WHERE s.run_id = c.run_id) AS steps,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', a.step_id, 'attempt', a.attempt,
        'kind', a.kind, 'idempotency_key', a.idempotency_key)), '[]')
     FROM executor.attempts a WHERE a.run_id = c.run_id AND a.status = 'started') AS open_attempts,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', p.step_id,
        'decision', p.decision, 'by', p.decided_by, 'comment', p.comment,
        'args_hash', p.args_hash)), '[]')
     FROM executor.approvals p WHERE p.run_id = c.run_id) AS approvals,
    (SELECT coalesce(sum(t.spent_usd), 0) FROM executor.tenant_spend t
     WHERE t.tenant = c.tenant AND t.day = current_date) AS tenant_spent_usd,
    (SELECT count(*) FROM event) AS events
FROM claimed c
"""

CLAIM_RUNS = _CLAIM.replace("__SUSPECTS__", "recovery_attempts < 2").replace("__LIMIT__", ":limit")
"""Lease up to ``:limit`` runnable runs that are not suspects (index ``runs_runnable``)."""
CLAIM_SUSPECT = _CLAIM.replace("__SUSPECTS__", "recovery_attempts >= 2").replace("__LIMIT__", "1")
"""Lease one suspect run, alone. Its own statement, so that its literal predicate matches
the partial index ``runs_suspect`` (migration 0005) and the claim reads no backlog."""


_COMMIT_FENCE = """
WITH fence AS (
    UPDATE executor.runs
    SET next_seq = next_seq + CAST(:n AS integer), updated_at = now(),
        status = coalesce(CAST(:run_status AS text), status),
        error = coalesce(CAST(:run_error AS jsonb), error),
        finished_at = CASE WHEN CAST(:finished AS boolean) THEN now() ELSE finished_at END,
        lease_owner = CASE WHEN CAST(:release AS boolean) THEN NULL ELSE lease_owner END,
        lease_expires_at = CASE WHEN CAST(:release AS boolean) THEN NULL
            ELSE lease_expires_at END,
        lease_token = CASE WHEN CAST(:release AS boolean) THEN NULL ELSE lease_token END,
        wake_at = CAST(:wake_at AS timestamptz),
        spent_usd = spent_usd + CAST(:spent_usd AS double precision),
        recovery_attempts = CASE WHEN CAST(:progress AS boolean) THEN 0
            ELSE recovery_attempts END
    WHERE run_id = :run_id AND lease_token = :token
    RETURNING tenant, next_seq - CAST(:n AS integer) AS first_seq, cancel_requested
), step_rows AS (
    UPDATE executor.steps s
    SET status = u.status, attempts = u.attempts, output = u.output, error = u.error,
        resolved_args = u.resolved_args, next_attempt_at = u.next_attempt_at,
        first_started_at = u.first_started_at, finished_at = u.finished_at,
        args_hash = u.args_hash, gate_deadline = u.gate_deadline
    FROM fence, jsonb_to_recordset(CAST(:steps AS jsonb)) AS u(step_id text, status text,
        attempts integer, output jsonb, error jsonb, resolved_args jsonb,
        next_attempt_at timestamptz, first_started_at timestamptz, finished_at timestamptz,
        args_hash text, gate_deadline timestamptz)
    WHERE s.run_id = :run_id AND s.step_id = u.step_id
    RETURNING 1
), attempt_rows AS (
    INSERT INTO executor.attempts (tenant, run_id, step_id, kind, attempt, idempotency_key,
        status, started_at, finished_at, duration_s, error, worker)
    SELECT fence.tenant, :run_id, a.step_id, a.kind, a.attempt, a.idempotency_key, a.status,
        a.started_at, a.finished_at, a.duration_s, a.error, :worker
    FROM fence, jsonb_to_recordset(CAST(:attempts AS jsonb)) AS a(step_id text, kind text,
        attempt integer, idempotency_key text, status text, started_at timestamptz,
        finished_at timestamptz, duration_s double precision, error jsonb)
    ON CONFLICT (run_id, step_id, kind, attempt) DO UPDATE
        SET status = EXCLUDED.status, finished_at = EXCLUDED.finished_at,
            duration_s = EXCLUDED.duration_s, error = EXCLUDED.error
        WHERE executor.attempts.status = 'started'
    RETURNING 1
), event_rows AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, step_id, attempt, payload,
        trace_id)
    SELECT fence.tenant, :run_id, fence.first_seq + e.i, e.type, e.step_id, e.attempt,
        e.payload, e.trace_id
    FROM fence, jsonb_to_recordset(CAST(:events AS jsonb)) AS e(i integer, type text,
        step_id text, attempt integer, payload jsonb, trace_id text)
    RETURNING 1
), notified AS (
    SELECT pg_notify('planexec_runs', '') FROM fence WHERE CAST(:notify AS boolean)
)"""

_COMMIT_APPROVALS = """, approval_rows AS (
    INSERT INTO executor.approvals (tenant, run_id, step_id, decision, decided_by, comment,
        args_hash)
    SELECT fence.tenant, :run_id, d.step_id, d.decision, d.by, d.comment, d.args_hash
    FROM fence, jsonb_to_recordset(CAST(:approvals AS jsonb)) AS d(step_id text,
        decision text, by text, comment text, args_hash text)
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING 1
)"""

_COMMIT_SPEND = """, spend AS (
    INSERT INTO executor.tenant_spend (tenant, day, spent_usd)
    SELECT fence.tenant, current_date, CAST(:spent_usd AS double precision) FROM fence
    ON CONFLICT (tenant, day) DO UPDATE
        SET spent_usd = executor.tenant_spend.spent_usd + EXCLUDED.spent_usd
    RETURNING 1
)"""

_COMMIT_RESULT = """
SELECT (SELECT count(*) FROM fence) AS fenced,
    (SELECT bool_or(cancel_requested) FROM fence) AS cancel_requested,
    (SELECT count(*) FROM step_rows) AS steps,
    (SELECT count(*) FROM attempt_rows) AS attempts,
    (SELECT count(*) FROM event_rows) AS events,
    (SELECT count(*) FROM notified) AS notified
"""


def commit_sql(*, approvals: bool, spend: bool) -> str:
    """The fenced group commit; the approvals and tenant-spend writes only when needed.

    Every data-modifying CTE runs even when it writes nothing, and opening a table costs
    on every statement: the common commit (no decision, nothing spent) leaves them out.
    """
    return (
        _COMMIT_FENCE
        + (_COMMIT_APPROVALS if approvals else "")
        + (_COMMIT_SPEND if spend else "")
        + _COMMIT_RESULT
    )


HEARTBEAT = """
UPDATE executor.runs SET lease_expires_at = now() + make_interval(secs => :ttl_s)
WHERE run_id = :run_id AND lease_token = :token
RETURNING cancel_requested,
    (SELECT count(*) FROM executor.approvals p WHERE p.run_id = :run_id) AS approvals
"""

NEW_APPROVALS = """
SELECT step_id, decision, decided_by AS by, comment, args_hash FROM executor.approvals
WHERE run_id = :run_id
"""

CREATE_REFUSED_RUN = """
WITH run AS (
    INSERT INTO executor.runs (tenant, run_id, plan_id, plan_version, content_hash,
        catalog_version, policy_version, plan, policy_decisions, status, created_by,
        traceparent, next_seq, error, finished_at, dedup_key)
    VALUES (:tenant, :run_id, :plan_id, :version, coalesce(:content_hash, ''),
        :catalog_version, :policy_version, CAST(:plan AS jsonb), CAST(:decisions AS jsonb),
        'failed', :created_by, :traceparent, 2, CAST(:error AS jsonb), now(), :dedup_key)
    ON CONFLICT (tenant, dedup_key) DO NOTHING
    RETURNING tenant, run_id
), steps AS (
    INSERT INTO executor.steps (tenant, run_id, step_id, status)
    SELECT run.tenant, run.run_id, s.step_id, 'cancelled'
    FROM run, jsonb_to_recordset(CAST(:steps AS jsonb)) AS s(step_id text)
    RETURNING 1
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT run.tenant, run.run_id, 1, 'run.refused', CAST(:error AS jsonb) FROM run
    RETURNING 1
)
SELECT (SELECT run_id FROM run) AS created, (SELECT count(*) FROM steps) AS steps,
    (SELECT count(*) FROM event) AS events
"""

CANCEL_IDLE = """
WITH run AS (
    UPDATE executor.runs SET status = 'cancelled', finished_at = now(), updated_at = now(),
        next_seq = next_seq + 1, cancel_requested = true
    WHERE tenant = :tenant AND run_id = :run_id AND lease_token IS NULL
      AND status IN ('pending', 'paused', 'needs_attention', 'dead_letter')
    RETURNING tenant, run_id, next_seq - 1 AS seq
), steps AS (
    UPDATE executor.steps s SET status = 'cancelled', finished_at = now()
    FROM run WHERE s.run_id = run.run_id
      AND s.status NOT IN ('succeeded', 'failed', 'skipped', 'compensated', 'cancelled')
    RETURNING 1
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT tenant, run_id, seq, 'run.cancelled', '{}'::jsonb FROM run
    RETURNING 1
)
SELECT (SELECT count(*) FROM run) AS cancelled, (SELECT count(*) FROM steps) AS steps,
    (SELECT count(*) FROM event) AS events
"""

REQUEST_CANCEL = """
UPDATE executor.runs SET cancel_requested = true, updated_at = now()
WHERE tenant = :tenant AND run_id = :run_id
  AND status NOT IN ('succeeded', 'failed', 'cancelled')
RETURNING status
"""

RECORD_APPROVAL = """
WITH gate AS (
    SELECT s.run_id, s.args_hash FROM executor.steps s
    JOIN executor.runs r ON r.run_id = s.run_id
    WHERE r.tenant = :tenant AND s.run_id = :run_id AND s.step_id = :step_id
      AND s.status = 'awaiting_approval'
      AND (s.gate_deadline IS NULL OR s.gate_deadline > now())
      AND (CAST(:args_hash AS text) IS NULL OR s.args_hash = CAST(:args_hash AS text))
), inserted AS (
    INSERT INTO executor.approvals (tenant, run_id, step_id, decision, decided_by, comment,
        args_hash)
    SELECT :tenant, run_id, :step_id, :decision, :by, :comment, args_hash FROM gate
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING run_id
), resumed AS (
    UPDATE executor.runs SET status = 'pending', updated_at = now(), wake_at = NULL
    WHERE run_id IN (SELECT run_id FROM inserted) AND status = 'paused'
    RETURNING run_id
), notified AS (
    SELECT pg_notify('planexec_runs', '') FROM inserted
)
SELECT (SELECT count(*) FROM gate) AS gated, (SELECT count(*) FROM inserted) AS recorded,
    (SELECT count(*) FROM resumed) AS resumed, (SELECT count(*) FROM notified) AS notified
"""

REPLAN = """
WITH fence AS (
    UPDATE executor.runs
    SET plan_version = :version, content_hash = :content_hash,
        catalog_version = :catalog_version, policy_version = :policy_version,
        plan = CAST(:plan AS jsonb), policy_decisions = CAST(:decisions AS jsonb),
        tool_specs = CAST(:tool_specs AS jsonb), replans = replans + 1,
        next_seq = next_seq + 1, updated_at = now()
    WHERE run_id = :run_id AND lease_token = :token
    RETURNING tenant, next_seq - 1 AS seq
), new_steps AS (
    SELECT u.* FROM fence, jsonb_to_recordset(CAST(:steps AS jsonb)) AS u(step_id text,
        status text, attempts integer, output jsonb, error jsonb, resolved_args jsonb,
        next_attempt_at timestamptz, first_started_at timestamptz, finished_at timestamptz,
        args_hash text, gate_deadline timestamptz)
), removed AS (
    DELETE FROM executor.steps s USING fence
    WHERE s.run_id = :run_id AND NOT (s.step_id = ANY(CAST(:keep AS text[])))
    RETURNING 1
), upserted AS (
    INSERT INTO executor.steps (tenant, run_id, step_id, status, attempts, output, error,
        resolved_args, next_attempt_at, first_started_at, finished_at, args_hash,
        gate_deadline)
    SELECT fence.tenant, :run_id, n.step_id, n.status, n.attempts, n.output, n.error,
        n.resolved_args, n.next_attempt_at, n.first_started_at, n.finished_at, n.args_hash,
        n.gate_deadline
    FROM fence, new_steps n
    ON CONFLICT (run_id, step_id) DO UPDATE
        SET status = EXCLUDED.status, attempts = EXCLUDED.attempts, output = EXCLUDED.output,
            error = EXCLUDED.error, resolved_args = EXCLUDED.resolved_args,
            next_attempt_at = EXCLUDED.next_attempt_at,
            first_started_at = EXCLUDED.first_started_at, finished_at = EXCLUDED.finished_at,
            args_hash = EXCLUDED.args_hash, gate_deadline = EXCLUDED.gate_deadline
    RETURNING 1
), stale_approvals AS (
    DELETE FROM executor.approvals p USING fence
    WHERE p.run_id = :run_id AND p.step_id NOT IN (
        SELECT step_id FROM new_steps WHERE status = 'succeeded')
    RETURNING 1
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT fence.tenant, :run_id, fence.seq, 'run.replanned', CAST(:event AS jsonb) FROM fence
    RETURNING 1
)
SELECT (SELECT count(*) FROM fence) AS fenced, (SELECT count(*) FROM removed) AS removed,
    (SELECT count(*) FROM upserted) AS upserted,
    (SELECT count(*) FROM stale_approvals) AS approvals, (SELECT count(*) FROM event) AS events
"""

RESUME = """
WITH run AS (
    UPDATE executor.runs SET status = 'pending', recovery_attempts = 0, updated_at = now(),
        next_seq = next_seq + 1, wake_at = NULL
    WHERE tenant = :tenant AND run_id = :run_id AND status = 'dead_letter'
    RETURNING tenant, run_id, next_seq - 1 AS seq
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT tenant, run_id, seq, 'run.resumed', jsonb_build_object('by', CAST(:by AS text)) FROM run
    RETURNING 1
), notified AS (
    SELECT pg_notify('planexec_runs', '') FROM run
)
SELECT (SELECT count(*) FROM run) AS resumed, (SELECT count(*) FROM event) AS events,
    (SELECT count(*) FROM notified) AS notified
"""

EXPIRE_GATES = """
WITH fence AS (
    SELECT tenant, run_id FROM executor.runs WHERE run_id = :run_id AND lease_token = :token
), inserted AS (
    INSERT INTO executor.approvals (tenant, run_id, step_id, decision, decided_by, comment,
        args_hash)
    SELECT fence.tenant, s.run_id, s.step_id, 'reject', 'system:deadline',
        'the approval deadline passed', s.args_hash
    FROM fence JOIN executor.steps s ON s.run_id = fence.run_id
    WHERE s.status = 'awaiting_approval' AND s.gate_deadline <= now()
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING 1
)
SELECT count(*) AS expired FROM inserted
"""
