"""The ``draft`` planner backend: the caller supplies the plan body (DESIGN §4, step 2).

The planner only parses it strictly here; validation, policy and versioning follow in the
pipeline. A draft is never repaired: there is nobody to ask for a corrected one.
"""

from __future__ import annotations

import json
import time

from shared_schemas import IssueCode, PlannerInfo, ValidationIssue

from ..domain.parsing import DraftParseError, parse_draft_value
from .base import AttemptRecord, Generation, PlanRequest, PriorAttempt


class DraftBackend:
    """Turns ``request.draft`` (``PlanDraft`` JSON, a dict) into a ``Generation``."""

    name = "draft"

    async def generate(self, request: PlanRequest, prior: list[PriorAttempt]) -> Generation:
        """Parse ``request.draft`` strictly with ``parse_draft_value``; ``prior`` is ignored.

        Returns:
            A ``Generation`` with ``draft`` set, or with ``draft=None`` and ``schema`` issues
            (JSON pointers into the draft) when it does not parse, or when there is no draft.
        """
        started = time.perf_counter()
        planner = PlannerInfo(backend="draft")
        if request.draft is None:
            issue = ValidationIssue(
                code=IssueCode.SCHEMA, message="the draft backend needs a 'draft'", path="/draft"
            )
            attempt = AttemptRecord(backend=self.name, latency_s=time.perf_counter() - started)
            return Generation(attempt=attempt, planner=planner, issues=[issue])
        raw = json.dumps(request.draft, ensure_ascii=False, sort_keys=True, default=repr)
        try:
            draft = parse_draft_value(request.draft)
            issues: list[ValidationIssue] = []
        except DraftParseError as exc:
            draft, issues = None, exc.issues
        attempt = AttemptRecord(
            backend=self.name, raw_response=raw, latency_s=time.perf_counter() - started
        )
        return Generation(attempt=attempt, planner=planner, draft=draft, issues=issues)
