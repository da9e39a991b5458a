"""The planning pipeline: intent -> generated, validated, policy-checked, signed, stored plan.

DESIGN §4: cache, generate (a ``PlannerBackend``), parse strictly, validate, check policy,
repair (LLM backends only, up to ``max_repairs``), persist every attempt. The steps of the
pipeline are pure functions elsewhere; this module only sequences them and does the I/O.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from opentelemetry.trace import Span

from planexec.errors import (
    ConflictError,
    IdempotencyKeyReusedError,
    LimitExceededError,
    NotFoundError,
    RequestValidationFailedError,
    ServiceUnavailableError,
)
from planexec.telemetry import METRICS, TRACER, current_traceparent
from shared_schemas import (
    CanonicalJSONError,
    Decision,
    IssueCode,
    Plan,
    PlanDraft,
    PlannerInfo,
    PolicyDecision,
    Principal,
    SideEffect,
    Step,
    ToolCatalog,
    ToolSpec,
    ValidationIssue,
    ValidationReport,
    seal,
    sha256_digest,
)

from .backends.base import (
    AttemptRecord,
    BackendUnavailableError,
    NoMatchingTemplateError,
    PlannerBackend,
    PlanRequest,
    PriorAttempt,
)
from .catalog import CatalogService
from .domain.limits import LimitViolation, check_depth, check_intent, check_step_count, find_nul
from .domain.policy import PolicyEngine
from .domain.redaction import Redactor
from .domain.validation import ValidationLimits, validate_plan
from .store import NewAttempt, NewVersion, PlanStore, StoredVersion

_log = structlog.get_logger("planexec.planner.pipeline")

REPAIRABLE_BACKENDS = frozenset({"openai"})
"""Backends that are asked again with the issues found; the others produce once."""

NEW_SIDE_EFFECT_RULE = "planexec.revision.new-side-effect"
"""Rule id recorded when a failure-driven revision adds a side-effecting call."""

GEN_AI_OPERATION = {"openai": "chat", "template": "plan_template", "draft": "plan_draft"}
"""``gen_ai.operation.name`` of a ``plan.generate`` span per backend (OTel GenAI conventions)."""


@dataclass(frozen=True)
class PlanOptions:
    """Per-request pipeline options."""

    max_repairs: int | None = None
    safe_mode: bool = False
    execute: bool = False
    budget_usd: float | None = None


@dataclass(frozen=True)
class PlanInput:
    """A request for a new plan (``POST /v1/plans``), already parsed strictly."""

    intent: str
    context: dict[str, Any] = field(default_factory=dict)
    backend: str | None = None
    draft: dict[str, Any] | None = None
    options: PlanOptions = field(default_factory=PlanOptions)
    request_hash: str = ""
    """``sha256:`` of the canonical request body, for ``Idempotency-Key`` matching."""


@dataclass(frozen=True)
class RevisionInput:
    """A request for version n+1 (``POST /v1/plans/{id}/revisions``)."""

    base_version: int | None = None
    draft: dict[str, Any] | None = None
    failure_context: dict[str, Any] | None = None
    backend: str | None = None
    options: PlanOptions | None = None


@dataclass(frozen=True)
class _Outcome:
    draft: PlanDraft | None
    planner: PlannerInfo
    issues: list[ValidationIssue]
    report: ValidationReport
    decisions: list[PolicyDecision]
    attempts: list[NewAttempt]


def normalise_intent(intent: str) -> str:
    """Intent as used in the cache key: trimmed, lower-cased, inner whitespace collapsed."""
    return re.sub(r"\s+", " ", intent.strip().lower())


def _raise_limit(violation: LimitViolation | None) -> None:
    if violation is not None:
        raise LimitExceededError(
            violation.message, limit=violation.limit, limit_value=violation.value
        )


def policy_issues(decisions: list[PolicyDecision]) -> list[ValidationIssue]:
    """Issues for denied or erroring policy decisions, fed back to a repairing backend."""
    issues = []
    for d in decisions:
        if d.errors:
            issues.append(
                ValidationIssue(
                    step_id=d.step_id,
                    code=IssueCode.POLICY_ERROR,
                    message="policy evaluation failed (fail closed): " + "; ".join(d.errors),
                )
            )
        elif d.decision is Decision.DENY:
            issues.append(
                ValidationIssue(
                    step_id=d.step_id,
                    code=IssueCode.POLICY_DENIED,
                    message=f"policy denies tool {d.tool!r} for this caller",
                )
            )
    return issues


def _call_fingerprint(step: Step) -> tuple[str, str, str | None]:
    compensation = step.compensation
    undo = None if compensation is None else sha256_digest(compensation.model_dump(mode="json"))
    return step.tool, sha256_digest(step.args), undo


def _writes(step: Step, tools: Mapping[str, ToolSpec]) -> bool:
    """Whether a step's call or its compensation has a side effect."""
    names = [step.tool] + ([step.compensation.tool] if step.compensation is not None else [])
    return any(
        (tool := tools.get(name)) is not None and tool.side_effect is not SideEffect.READ
        for name in names
    )


def mark_new_side_effects(
    steps: list[Step], decisions: list[PolicyDecision], parent: Plan, tools: Mapping[str, ToolSpec]
) -> list[PolicyDecision]:
    """Require approval for side-effecting calls a failure-driven revision added.

    Tool outputs that feed a revision are untrusted (OWASP LLM01): a write or destructive
    call (or compensation) whose (tool, args, compensation) the parent version did not have,
    or had fewer times (a repeated payment), is not run unattended.
    """
    before = Counter(_call_fingerprint(s) for s in parent.steps)
    out = []
    for step, decision in zip(steps, decisions, strict=True):
        fingerprint = _call_fingerprint(step)
        added = before[fingerprint] == 0
        if not added:
            before[fingerprint] -= 1
        gate = decision.decision is Decision.ALLOW and added and _writes(step, tools)
        out.append(
            decision.model_copy(
                update={
                    "decision": Decision.REQUIRE_APPROVAL,
                    "rule_ids": [*decision.rule_ids, NEW_SIDE_EFFECT_RULE],
                }
            )
            if gate
            else decision
        )
    return out


def with_compensations(
    decisions: list[PolicyDecision], compensations: Mapping[str, PolicyDecision]
) -> list[PolicyDecision]:
    """Fold each step's compensation decision into the step's own.

    A compensation runs unattended when its run fails, so it is judged like a call: a
    denied compensation denies its step, and one that may not run unattended puts its step
    behind an approval (the approver of the step approves its undo too).
    """
    order = {Decision.ALLOW: 0, Decision.REQUIRE_APPROVAL: 1, Decision.DENY: 2}
    out = []
    for decision in decisions:
        undo = compensations.get(decision.step_id)
        if undo is None or order[undo.decision] <= order[decision.decision]:
            out.append(decision)
            continue
        rules = [*decision.rule_ids, *(f"compensation:{rule}" for rule in undo.rule_ids)]
        out.append(
            decision.model_copy(
                update={
                    "decision": undo.decision,
                    "rule_ids": rules,
                    "errors": [*decision.errors, *undo.errors],
                }
            )
        )
    return out


class PlanService:
    """Runs the pipeline for the API; one instance per app."""

    def __init__(
        self,
        *,
        store: PlanStore,
        catalog: CatalogService,
        policy: PolicyEngine,
        backends: Mapping[str, PlannerBackend],
        default_backend: str,
        signing_key: bytes,
        redactor: Redactor,
        limits: ValidationLimits,
        max_repairs: int,
        max_intent_bytes: int,
        max_json_depth: int,
        cache_ttl_s: float,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._policy = policy
        self._backends = dict(backends)
        self._default_backend = default_backend
        self._key = signing_key
        self._redactor = redactor
        self._limits = limits
        self._max_repairs = max_repairs
        self._max_intent_bytes = max_intent_bytes
        self._max_json_depth = max_json_depth
        self._cache_ttl_s = cache_ttl_s

    def check_input(self, intent: str, context: Any, draft: Any) -> None:
        """Refuse oversized, too deep or NUL-bearing input before anything is done.

        Raises:
            LimitExceededError: naming the limit (``max_intent_bytes``, ``max_json_depth``,
                ``max_steps``) or the NUL character.
        """
        _raise_limit(check_intent(intent, self._max_intent_bytes))
        _raise_limit(check_depth(context, "context", self._max_json_depth))
        if draft is not None:
            _raise_limit(check_depth(draft, "draft", self._max_json_depth + 4))
            _raise_limit(check_step_count(draft.get("steps"), self._limits.max_steps))
        where = find_nul({"intent": intent, "context": context, "draft": draft})
        if where is not None:
            raise LimitExceededError(
                f"NUL characters (U+0000) are not accepted (at {where})", limit="no_nul"
            )

    def _backend(self, name: str | None, has_draft: bool) -> PlannerBackend:
        chosen = name or ("draft" if has_draft else self._default_backend)
        backend = self._backends.get(chosen)
        if backend is None:
            raise RequestValidationFailedError(
                f"backend {chosen!r} is not configured; available: {sorted(self._backends)}"
            )
        if chosen == "draft" and not has_draft:
            raise RequestValidationFailedError("the draft backend needs a 'draft'")
        return backend

    async def create(
        self, principal: Principal, request: PlanInput, idempotency_key: str | None
    ) -> tuple[StoredVersion, bool]:
        """Make, check and store version 1 of a new plan, in a ``plan.create`` span.

        The plan records that span's W3C ``traceparent``: its runs continue the trace.

        Returns:
            The stored version and whether it was replayed for a repeated idempotency key.

        Raises:
            LimitExceededError, RequestValidationFailedError: for refused input (nothing stored).
            IdempotencyKeyReusedError: the key was used with a different body.
            ServiceUnavailableError: the backend or the catalog is unavailable.
        """
        with TRACER.start_as_current_span("plan.create"):
            return await self._create(principal, request, idempotency_key)

    async def _create(
        self, principal: Principal, request: PlanInput, idempotency_key: str | None
    ) -> tuple[StoredVersion, bool]:
        self.check_input(request.intent, request.context, request.draft)
        backend = self._backend(request.backend, request.draft is not None)
        if idempotency_key is not None:
            replay = await self._replay(principal.tenant, idempotency_key, request.request_hash)
            if replay is not None:
                return replay, True
        catalog = self._current_catalog()
        options = request.options
        plan_request = PlanRequest(
            intent=request.intent,
            context=request.context,
            catalog=catalog,
            safe_mode=options.safe_mode,
            draft=request.draft,
        )
        cache_key = self._cache_key(request, backend.name, catalog)
        cached = None
        if cache_key is not None:
            cached = await self._store.find_cached(principal.tenant, cache_key)
        if cached is not None:
            outcome = self._from_cache(cached, catalog, principal, options)
        else:
            outcome = await self._generate(backend, plan_request, principal, options)
        plan = self._plan(
            principal,
            plan_id=uuid.uuid4(),
            version=1,
            parent=None,
            intent=request.intent,
            context=request.context,
            catalog=catalog,
            outcome=outcome,
        )
        new = self._new_version(plan, outcome, options)
        status = new.status
        new = NewVersion(
            **{
                **vars(new),
                "cache_hit": cached is not None,
                "cached_from": (
                    {"plan_id": str(cached.plan.plan_id), "version": cached.plan.version}
                    if cached is not None
                    else None
                ),
                "idempotency": (
                    (idempotency_key, request.request_hash) if idempotency_key else None
                ),
                "cache_entry": (
                    (cache_key, self._cache_ttl_s)
                    if cache_key is not None and cached is None and status == "ready"
                    else None
                ),
            }
        )
        stored = await self._store.create_version(new)
        if stored is None:
            # A concurrent request with the same Idempotency-Key won the race.
            assert idempotency_key is not None
            replay = await self._replay(principal.tenant, idempotency_key, request.request_hash)
            if replay is None:
                raise ConflictError("a concurrent request is creating this plan; retry")
            return replay, True
        _count(stored)
        _log.info(
            "plan_created",
            plan_id=str(plan.plan_id),
            status=status,
            steps=len(plan.steps),
            backend=outcome.planner.backend,
            attempts=len(outcome.attempts),
            cache_hit=cached is not None,
        )
        return stored, False

    async def revise(
        self, principal: Principal, plan_id: uuid.UUID, request: RevisionInput
    ) -> StoredVersion:
        """Make version n+1 of a plan from edits or from a failure context (``plan.create`` span).

        Raises:
            NotFoundError: no such plan for the caller's tenant.
            ConflictError: ``base_version`` is not the latest version.
            RequestValidationFailedError: neither a draft nor a failure context was given, or
                the plan's backend cannot regenerate.
        """
        with TRACER.start_as_current_span(
            "plan.create", attributes={"planexec.plan.id": str(plan_id)}
        ):
            return await self._revise(principal, plan_id, request)

    async def _revise(
        self, principal: Principal, plan_id: uuid.UUID, request: RevisionInput
    ) -> StoredVersion:
        base = await self._store.get_version(principal.tenant, plan_id)
        if base is None:
            raise NotFoundError(f"plan {plan_id} not found")
        parent = base.plan
        if request.base_version is not None and request.base_version != parent.version:
            raise ConflictError(
                f"base_version {request.base_version} is not the latest version {parent.version}"
            )
        if request.draft is None and request.failure_context is None:
            raise RequestValidationFailedError("a revision needs a 'draft' or a 'failure_context'")
        self.check_input(parent.intent, request.failure_context or {}, request.draft)
        name = request.backend or ("draft" if request.draft is not None else parent.planner.backend)
        if name == "draft" and request.draft is None:
            raise RequestValidationFailedError(
                "this plan was drafted by its caller: send the revised 'draft'"
            )
        backend = self._backend(name, request.draft is not None)
        options = request.options or PlanOptions(**base.options)
        catalog = self._current_catalog()
        context = dict(parent.context)
        if request.failure_context is not None:
            context["failure_context"] = request.failure_context
        outcome = await self._generate(
            backend,
            PlanRequest(
                intent=parent.intent,
                context=context,
                catalog=catalog,
                safe_mode=options.safe_mode,
                draft=request.draft,
            ),
            principal,
            options,
            prior_steps=await self._earlier_steps(principal.tenant, parent),
        )
        if request.failure_context is not None and outcome.draft is not None:
            tools = {t.name: t for t in catalog.tools}
            decisions = mark_new_side_effects(
                list(outcome.draft.steps), outcome.decisions, parent, tools
            )
            outcome = _Outcome(**{**vars(outcome), "decisions": decisions})
        plan = self._plan(
            principal,
            plan_id=parent.plan_id,
            version=parent.version + 1,
            parent=parent.version,
            intent=parent.intent,
            context=parent.context,
            catalog=catalog,
            outcome=outcome,
        )
        new = self._new_version(plan, outcome, options)
        if request.failure_context is not None:
            options_record = {**new.options, "failure_context": request.failure_context}
            new = NewVersion(**{**vars(new), "options": options_record})
        stored = await self._store.create_version(new)
        if stored is None:
            raise ConflictError(f"plan {plan_id} was revised concurrently; retry")
        _count(stored)
        return stored

    async def _earlier_steps(self, tenant: str, parent: Plan) -> list[Step]:
        """Every step of the plan's runnable versions so far, the latest definition of each id.

        A revision's metered running totals start from those it no longer has (they may have
        run), so dropping paid steps from a revision cannot reset the total (S6). Rejected
        versions never run and are left out.
        """
        latest: dict[str, Step] = {}
        for version in range(1, parent.version + 1):
            stored = await self._store.get_version(tenant, parent.plan_id, version)
            if stored is not None and stored.status != "rejected":
                latest.update((s.id, s) for s in stored.plan.steps)
        return list(latest.values())

    async def _replay(self, tenant: str, key: str, request_hash: str) -> StoredVersion | None:
        found = await self._store.find_idempotent(tenant, key)
        if found is None:
            return None
        stored_hash, plan_id, version = found
        if stored_hash != request_hash:
            raise IdempotencyKeyReusedError(
                "this Idempotency-Key was already used with a different request body"
            )
        return await self._store.get_version(tenant, plan_id, version)

    def _current_catalog(self) -> ToolCatalog:
        try:
            return self._catalog.current
        except RuntimeError as exc:
            raise ServiceUnavailableError(str(exc)) from exc

    def _cache_key(self, request: PlanInput, backend: str, catalog: ToolCatalog) -> str | None:
        if self._cache_ttl_s <= 0 or request.draft is not None or backend == "draft":
            return None
        return sha256_digest(
            {
                "intent": normalise_intent(request.intent),
                "context": request.context,
                "catalog_version": catalog.catalog_version,
                "policy_version": self._policy.policy_version,
                "backend": backend,
                "safe_mode": request.options.safe_mode,
                "budget_usd": request.options.budget_usd,
            }
        )

    def _check(
        self,
        draft: PlanDraft,
        catalog: ToolCatalog,
        principal: Principal,
        options: PlanOptions,
        prior_steps: Sequence[Step] = (),
    ) -> tuple[ValidationReport, list[PolicyDecision]]:
        tools = {t.name: t for t in catalog.tools}
        with TRACER.start_as_current_span("plan.validate"):
            report = validate_plan(
                draft,
                tools,
                self._limits,
                safe_mode=options.safe_mode,
                budget_usd=options.budget_usd,
            )
        with TRACER.start_as_current_span("policy.evaluate"):
            kept = {s.id for s in draft.steps}
            decisions = self._policy.evaluate(
                draft.steps,
                tools,
                principal,
                safe_mode=options.safe_mode,
                prior_steps=[s for s in prior_steps if s.id not in kept],
            )
            undos = [
                Step(id=s.id, tool=s.compensation.tool, args=s.compensation.args)
                for s in draft.steps
                if s.compensation is not None
            ]
            if undos:
                judged = self._policy.evaluate(undos, tools, principal, safe_mode=options.safe_mode)
                decisions = with_compensations(decisions, {d.step_id: d for d in judged})
        for d in decisions:
            if d.decision is Decision.DENY:
                METRICS.policy_denials.add(1, {"gen_ai.tool.name": d.tool})
        return report, decisions

    def _from_cache(
        self,
        cached: StoredVersion,
        catalog: ToolCatalog,
        principal: Principal,
        options: PlanOptions,
    ) -> _Outcome:
        body = cached.plan
        draft = PlanDraft(
            steps=[s.model_copy(update={"requires_approval": False}) for s in body.steps],
            rationale=body.rationale,
            confidence=body.confidence,
            alternatives=body.alternatives,
        )
        report, decisions = self._check(draft, catalog, principal, options)
        attempt = NewAttempt(
            backend=body.planner.backend,
            model=body.planner.model,
            prompt_version=body.planner.prompt_version,
            messages=[],
            parameters={"cached_from": f"{body.plan_id}/v{body.version}"},
            raw_response=None,
            input_tokens=None,
            output_tokens=None,
            latency_s=0.0,
            error=None,
            issues=[i.model_dump(mode="json") for i in report.issues + policy_issues(decisions)],
            cache_hit=True,
        )
        issues = report.issues + policy_issues(decisions)
        return _Outcome(draft, body.planner, issues, report, decisions, [attempt])

    async def _generate(
        self,
        backend: PlannerBackend,
        request: PlanRequest,
        principal: Principal,
        options: PlanOptions,
        prior_steps: Sequence[Step] = (),
    ) -> _Outcome:
        repairs = self._max_repairs if options.max_repairs is None else options.max_repairs
        rounds = 1 + (repairs if backend.name in REPAIRABLE_BACKENDS else 0)
        prior: list[PriorAttempt] = []
        attempts: list[NewAttempt] = []
        planner = PlannerInfo(backend=backend.name)
        for _ in range(rounds):
            if prior:
                METRICS.repairs.add(1, {"planexec.planner.backend": backend.name})
            try:
                with TRACER.start_as_current_span(
                    "plan.generate", attributes=_generate_attributes(backend)
                ) as span:
                    generation = await backend.generate(request, prior)
                    _usage_attributes(span, generation.attempt)
            except NoMatchingTemplateError as exc:
                issue = ValidationIssue(code=IssueCode.GENERATION_FAILED, message=str(exc))
                attempts.append(self._attempt(AttemptRecord(backend=backend.name), [issue]))
                report = ValidationReport(valid=False, issues=[issue])
                return _Outcome(None, planner, [issue], report, [], attempts)
            except BackendUnavailableError as exc:
                raise ServiceUnavailableError(f"planner backend unavailable: {exc}") from exc
            planner = generation.planner
            if generation.draft is None:
                issues = list(generation.issues)
                report = ValidationReport(valid=False, issues=issues)
                decisions: list[PolicyDecision] = []
            else:
                report, decisions = self._check(
                    generation.draft, request.catalog, principal, options, prior_steps
                )
                issues = report.issues + policy_issues(decisions)
            attempts.append(self._attempt(generation.attempt, issues))
            if not issues:
                break
            prior.append(PriorAttempt(raw_response=generation.attempt.raw_response, issues=issues))
        return _Outcome(generation.draft, planner, issues, report, decisions, attempts)

    def _attempt(self, record: AttemptRecord, issues: list[ValidationIssue]) -> NewAttempt:
        r = self._redactor
        return NewAttempt(
            backend=record.backend,
            model=record.model,
            prompt_version=record.prompt_version,
            messages=r.value(record.messages),
            parameters=r.value(record.parameters),
            raw_response=None if record.raw_response is None else r.text(record.raw_response),
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            latency_s=record.latency_s,
            error=None if record.error is None else r.text(record.error),
            issues=[i.model_dump(mode="json") for i in issues],
        )

    def _plan(
        self,
        principal: Principal,
        *,
        plan_id: uuid.UUID,
        version: int,
        parent: int | None,
        intent: str,
        context: dict[str, Any],
        catalog: ToolCatalog,
        outcome: _Outcome,
    ) -> Plan:
        draft = outcome.draft
        gated = {d.step_id for d in outcome.decisions if d.decision is Decision.REQUIRE_APPROVAL}
        steps = (
            [s.model_copy(update={"requires_approval": s.id in gated}) for s in draft.steps]
            if draft is not None
            else []
        )
        plan = Plan(
            plan_id=plan_id,
            version=version,
            parent_version=parent,
            intent=intent,
            context=context,
            tenant=principal.tenant,
            created_by=principal.subject,
            steps=steps,
            rationale=draft.rationale if draft else None,
            confidence=draft.confidence if draft else None,
            alternatives=draft.alternatives if draft else [],
            catalog_version=catalog.catalog_version,
            policy_version=self._policy.policy_version,
            planner=outcome.planner,
            traceparent=current_traceparent(),
        )
        try:
            return seal(plan, self._key)
        except CanonicalJSONError as exc:
            raise RequestValidationFailedError(str(exc)) from exc

    def _new_version(self, plan: Plan, outcome: _Outcome, options: PlanOptions) -> NewVersion:
        status = "ready" if not outcome.issues else "rejected"
        return NewVersion(
            plan=plan,
            status=status,
            enqueue=options.execute and status == "ready",
            validation=outcome.report,
            policy_decisions=outcome.decisions,
            attempts=outcome.attempts,
            options={
                "max_repairs": options.max_repairs,
                "safe_mode": options.safe_mode,
                "execute": options.execute,
                "budget_usd": options.budget_usd,
            },
        )


def _count(stored: StoredVersion) -> None:
    """Count a stored plan version by status and record its length (``planexec.plans``)."""
    METRICS.plans.add(1, {"planexec.plan.status": stored.status})
    METRICS.plan_steps.record(len(stored.plan.steps))


def _generate_attributes(backend: PlannerBackend) -> dict[str, str]:
    """OTel GenAI request attributes of a ``plan.generate`` span for ``backend``."""
    attributes = {
        "gen_ai.operation.name": GEN_AI_OPERATION.get(backend.name, backend.name),
        "gen_ai.provider.name": "openai" if backend.name == "openai" else "planexec",
        "planexec.planner.backend": backend.name,
    }
    model = getattr(backend, "model", None)
    if isinstance(model, str):
        attributes["gen_ai.request.model"] = model
    return attributes


def _usage_attributes(span: Span, attempt: AttemptRecord) -> None:
    """OTel GenAI response attributes (model, token usage) of a generation, when known."""
    if attempt.model is not None:
        span.set_attribute("gen_ai.response.model", attempt.model)
    if attempt.input_tokens is not None:
        span.set_attribute("gen_ai.usage.input_tokens", attempt.input_tokens)
    if attempt.output_tokens is not None:
        span.set_attribute("gen_ai.usage.output_tokens", attempt.output_tokens)
