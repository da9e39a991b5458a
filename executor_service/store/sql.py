"""SQL of the run store. Each statement is one round trip and, in autocommit, one commit."""

from __future__ import annotations

CREATE_RUN = """
WITH run AS (
    INSERT INTO executor.runs (tenant, run_id, plan_id, plan_version, content_hash,
        catalog_version, policy_version, plan, policy_decisions, status, created_by,
        traceparent, next_seq)
    VALUES (:tenant, :run_id, :plan_id, :version, :content_hash, :catalog_version,
        :policy_version, CAST(:plan AS jsonb), CAST(:decisions AS jsonb), 'pending',
        :created_by, :traceparent, 2)
    ON CONFLICT (tenant, plan_id, plan_version) DO NOTHING
    RETURNING tenant, run_id
), steps AS (
    INSERT INTO executor.steps (tenant, run_id, step_id, status)
    SELECT run.tenant, run.run_id, s.step_id, s.status
    FROM run, jsonb_to_recordset(CAST(:steps AS jsonb)) AS s(step_id text, status text)
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

CLAIM_RUNS = """
WITH picked AS (
    SELECT run_id FROM executor.runs
    WHERE status IN ('pending', 'running')
      AND (lease_expires_at IS NULL OR lease_expires_at < now())
      AND (wake_at IS NULL OR wake_at <= now())
    ORDER BY created_at
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE executor.runs r
    SET lease_owner = :worker, lease_token = gen_random_uuid(),
        lease_expires_at = now() + make_interval(secs => :ttl_s),
        status = 'running', next_seq = r.next_seq + 1, updated_at = now(), wake_at = NULL
    FROM picked WHERE r.run_id = picked.run_id
    RETURNING r.tenant, r.run_id, r.plan, r.policy_decisions, r.lease_token, r.next_seq - 1 AS seq,
        r.cancel_requested, r.traceparent, r.created_at
), event AS (
    INSERT INTO executor.run_events (tenant, run_id, seq, type, payload)
    SELECT c.tenant, c.run_id, c.seq, 'run.leased', jsonb_build_object('worker', :worker)
    FROM claimed c
    RETURNING 1
)
SELECT c.*,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', s.step_id, 'status', s.status,
        'attempts', s.attempts, 'output', s.output, 'error', s.error,
        'first_started_at', s.first_started_at)), '[]')
     FROM executor.steps s WHERE s.run_id = c.run_id) AS steps,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', a.step_id, 'attempt', a.attempt,
        'idempotency_key', a.idempotency_key)), '[]')
     FROM executor.attempts a WHERE a.run_id = c.run_id AND a.status = 'started') AS open_attempts,
    (SELECT coalesce(jsonb_agg(jsonb_build_object('step_id', p.step_id,
        'decision', p.decision, 'by', p.decided_by, 'comment', p.comment)), '[]')
     FROM executor.approvals p WHERE p.run_id = c.run_id) AS approvals,
    (SELECT count(*) FROM event) AS events
FROM claimed c
"""

COMMIT = """
WITH fence AS (
    UPDATE executor.runs
    SET next_seq = next_seq + CAST(:n AS integer), updated_at = now(),
        status = coalesce(CAST(:run_status AS text), status),
        error = coalesce(CAST(:run_error AS jsonb), error),
        finished_at = CASE WHEN CAST(:finished AS boolean) THEN now() ELSE finished_at END,
        lease_owner = CASE WHEN CAST(:release AS boolean) THEN NULL ELSE lease_owner END,
        lease_expires_at = CASE WHEN CAST(:release AS boolean) THEN NULL
            ELSE lease_expires_at END,
        lease_token = CASE WHEN CAST(:release AS boolean) THEN NULL ELSE lease_token END
    WHERE run_id = :run_id AND lease_token = :token
    RETURNING tenant, next_seq - CAST(:n AS integer) AS first_seq, cancel_requested
), step_rows AS (
    UPDATE executor.steps s
    SET status = u.status, attempts = u.attempts, output = u.output, error = u.error,
        resolved_args = u.resolved_args, next_attempt_at = u.next_attempt_at,
        first_started_at = u.first_started_at, finished_at = u.finished_at
    FROM fence, jsonb_to_recordset(CAST(:steps AS jsonb)) AS u(step_id text, status text,
        attempts integer, output jsonb, error jsonb, resolved_args jsonb,
        next_attempt_at timestamptz, first_started_at timestamptz, finished_at timestamptz)
    WHERE s.run_id = :run_id AND s.step_id = u.step_id
    RETURNING 1
), attempt_rows AS (
    INSERT INTO executor.attempts (tenant, run_id, step_id, attempt, idempotency_key, status,
        started_at, finished_at, duration_s, error, worker)
    SELECT fence.tenant, :run_id, a.step_id, a.attempt, a.idempotency_key, a.status,
        a.started_at, a.finished_at, a.duration_s, a.error, :worker
    FROM fence, jsonb_to_recordset(CAST(:attempts AS jsonb)) AS a(step_id text,
        attempt integer, idempotency_key text, status text, started_at timestamptz,
        finished_at timestamptz, duration_s double precision, error jsonb)
    ON CONFLICT (run_id, step_id, attempt) DO UPDATE
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
)
SELECT (SELECT count(*) FROM fence) AS fenced,
    (SELECT bool_or(cancel_requested) FROM fence) AS cancel_requested,
    (SELECT count(*) FROM step_rows) AS steps,
    (SELECT count(*) FROM attempt_rows) AS attempts,
    (SELECT count(*) FROM event_rows) AS events,
    (SELECT count(*) FROM notified) AS notified
"""

HEARTBEAT = """
UPDATE executor.runs SET lease_expires_at = now() + make_interval(secs => :ttl_s)
WHERE run_id = :run_id AND lease_token = :token
RETURNING cancel_requested,
    (SELECT count(*) FROM executor.approvals p WHERE p.run_id = :run_id) AS approvals
"""

NEW_APPROVALS = """
SELECT step_id, decision, decided_by AS by, comment FROM executor.approvals
WHERE run_id = :run_id
"""

CREATE_REFUSED_RUN = """
WITH run AS (
    INSERT INTO executor.runs (tenant, run_id, plan_id, plan_version, content_hash,
        catalog_version, policy_version, plan, policy_decisions, status, created_by,
        traceparent, next_seq, error, finished_at)
    VALUES (:tenant, :run_id, :plan_id, :version, coalesce(:content_hash, ''),
        :catalog_version, :policy_version, CAST(:plan AS jsonb), CAST(:decisions AS jsonb),
        'failed', :created_by, :traceparent, 2, CAST(:error AS jsonb), now())
    ON CONFLICT (tenant, plan_id, plan_version) DO NOTHING
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
      AND status IN ('pending', 'paused', 'needs_attention')
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
    SELECT s.run_id FROM executor.steps s
    JOIN executor.runs r ON r.run_id = s.run_id
    WHERE r.tenant = :tenant AND s.run_id = :run_id AND s.step_id = :step_id
      AND s.status = 'awaiting_approval'
), inserted AS (
    INSERT INTO executor.approvals (tenant, run_id, step_id, decision, decided_by, comment)
    SELECT :tenant, run_id, :step_id, :decision, :by, :comment FROM gate
    ON CONFLICT (run_id, step_id) DO NOTHING
    RETURNING run_id
), resumed AS (
    UPDATE executor.runs SET status = 'pending', updated_at = now()
    WHERE run_id IN (SELECT run_id FROM inserted) AND status = 'paused'
    RETURNING run_id
), notified AS (
    SELECT pg_notify('planexec_runs', '') FROM inserted
)
SELECT (SELECT count(*) FROM gate) AS gated, (SELECT count(*) FROM inserted) AS recorded,
    (SELECT count(*) FROM resumed) AS resumed, (SELECT count(*) FROM notified) AS notified
"""
