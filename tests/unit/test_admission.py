"""Admission: the executor refuses plans whose hash, signature, schema or catalog is off."""

from __future__ import annotations

import uuid

from executor_service.domain.admission import admit
from shared_schemas import Plan, PlannerInfo, Step, seal

KEY = b"s" * 40
CATALOG = "sha256:" + "c" * 64


def _plan() -> Plan:
    return seal(
        Plan(
            plan_id=uuid.uuid4(),
            version=1,
            intent="x",
            tenant="acme",
            created_by="a",
            steps=[Step(id="a", tool="noop")],
            catalog_version=CATALOG,
            policy_version="sha256:" + "p" * 64,
            planner=PlannerInfo(backend="draft"),
        ),
        KEY,
    )


def _admit(plan: Plan, **overrides: object) -> str | None:
    args: dict[str, object] = {
        "status": "ready",
        "signing_key": KEY,
        "accepted_schema_ids": ["planexec.plan/v1"],
        "catalog_version": CATALOG,
    } | overrides
    refusal = admit(plan, **args)  # type: ignore[arg-type]
    return None if refusal is None else refusal.code


def test_a_sealed_ready_plan_for_the_current_catalog_is_admitted() -> None:
    assert _admit(_plan()) is None


def test_tampered_body_wrong_key_and_missing_signature_are_refused() -> None:
    plan = _plan()
    assert _admit(plan.model_copy(update={"intent": "drop tables"})) == "bad_hash"
    assert _admit(plan, signing_key=b"t" * 40) == "bad_signature"
    forged = plan.model_copy(update={"signature": "hmac-sha256:" + "0" * 64})
    assert _admit(forged) == "bad_signature"


def test_unknown_schema_catalog_and_status_are_refused() -> None:
    plan = _plan()
    assert _admit(plan, accepted_schema_ids=["planexec.plan/v2"]) == "unknown_schema"
    assert _admit(plan, catalog_version="sha256:" + "d" * 64) == "unknown_catalog"
    assert _admit(plan, status="rejected") == "not_ready"
