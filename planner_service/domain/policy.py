"""Policy check of plan steps with Cedar, through ``cedarpy`` (DESIGN §4 step 5, §10).

Each step is put to Cedar as two requests on the same principal, tool and context:

- ``Planexec::Action::"invoke"``: may the step run at all? Not allowed -> ``deny``.
- ``Planexec::Action::"invoke_unattended"``: may it run without a person's approval?
  Not allowed -> ``require_approval``. Both allowed -> ``allow``.

Entities (shapes in ``policies/planexec.cedarschema``): one ``Planexec::Principal`` (id
``"<tenant>/<subject>"``; ``tenant``, ``subject``, ``roles`` and ``scopes``), one
``Planexec::Tool`` per tool the steps use (id = catalog name; ``name``, ``version``,
``side_effect``, ``idempotent``, ``required_scopes``, ``cost_micro_usd`` as a Long since Cedar
has no floats; ``metered``, and the optional ``meter_run_limit`` / ``meter_tenant_daily_limit``
of a tool with a ``ToolSpec.meter``, rounded down to whole units). The context of a step is
``{safe_mode, step_id, arg_keys, cumulative_amount, amount_known}``.

Cumulative amounts (RELIABILITY S6, OWASP API6): a payment split into many small steps passes
any per-step rule, so for a tool with a ``meter`` the context carries the running total of its
metered argument over the plan's steps of that tool, in step order, up to and including the
step judged (``cumulative_amount``: a Long in the meter's unit, rounded up; absolute values are
added, so a negative amount cannot offset a positive one). Steps of earlier versions of the plan
that a revision no longer has (``prior_steps``: they may have run) count first, so a revision
cannot start the total again. When a metered value is not a literal number (a ``$ref``
resolved only at run time, a string, a missing argument), the total from that step on is
unknown: ``amount_known`` is false and ``cumulative_amount`` counts the known values only. The
shipped defaults then require approval (``planexec.metered-unknown-amount-needs-approval``) and
deny a step whose known total already exceeds a limit the tool declares
(``planexec.metered-over-run-limit``, ``planexec.metered-over-tenant-daily-limit``); the
executor enforces the same limits on resolved values before each call
(``executor_service.domain.metering``). A deployment adds its own thresholds, e.g.::

    @id("tenant.acme.transfers-over-10000-need-approval")
    forbid (principal, action == Planexec::Action::"invoke_unattended",
            resource == Planexec::Tool::"bank.transfer")
    when { context.cumulative_amount > 10000 };

Rule ids: every policy must carry an ``@id("...")`` annotation, unique across the loaded set.
The engine loads the policies under their ``@id`` as Cedar policy id, so Cedar's diagnostics
(the determining policies, and the policy named in an evaluation error) already speak in rule
ids; a file with a policy lacking ``@id`` is refused.

Fail closed: Cedar skips a policy whose evaluation errors and decides without it, so a
``forbid`` that errors would let the step through. The engine therefore turns any Cedar error
(a policy evaluation error, a request or entity that does not match the schema, an exception
from ``cedarpy``) into ``deny`` with ``errors`` filled, which the pipeline reports as
``IssueCode.POLICY_ERROR``. A deny with empty ``errors`` was decided by policy: by the
forbids in ``rule_ids``, or, when those are empty too, by Cedar's default deny (no permit).

Tenant rules: a deployment passes its own directory after the shipped defaults, e.g.
``PolicyEngine((DEFAULT_POLICY_DIR, Path("/etc/planexec/policies")))``, holding one file per
tenant such as ``tenant-acme.cedar``::

    @id("tenant.acme.no-git-reset")
    forbid (principal, action, resource == Planexec::Tool::"git.git_reset")
    when { principal.tenant == "acme" };

Since ``forbid`` overrides every ``permit`` in Cedar, such a file can only narrow what the
defaults allow, and only for principals of that tenant.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import cedarpy

from planexec.errors import PlanexecError
from shared_schemas import Decision, PolicyDecision, sha256_digest

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from shared_schemas import Principal, Step, ToolSpec

DEFAULT_POLICY_DIR = Path(__file__).resolve().parent.parent / "policies"
"""Directory of the shipped default policies (``*.cedar``) and of the Cedar schema."""
DEFAULT_SCHEMA_PATH = DEFAULT_POLICY_DIR / "planexec.cedarschema"
"""The shipped Cedar schema (human-readable Cedar schema syntax)."""

PRINCIPAL_TYPE = "Planexec::Principal"
TOOL_TYPE = "Planexec::Tool"
ACTION_TYPE = "Planexec::Action"
INVOKE = "invoke"
"""Action asked first: not allowed -> ``deny``."""
INVOKE_UNATTENDED = "invoke_unattended"
"""Action asked second: not allowed -> ``require_approval``."""

_MICRO = 1_000_000
_MAX_ERROR_CHARS = 1000  # an entity error quotes the whole entity document; keep reports small
_ENGINE_CONTEXT_KEYS = frozenset(
    {"safe_mode", "step_id", "arg_keys", "cumulative_amount", "amount_known"}
)
_MAX_LONG = 2**63 - 1


class PolicyLoadError(PlanexecError):
    """The policy set cannot be loaded: a file does not parse or fails schema validation."""

    code: ClassVar[str] = "policy-load-error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Policy load error"


@dataclass(frozen=True)
class PolicyFile:
    """One loaded ``*.cedar`` file."""

    path: Path
    """Where it was read from."""
    text: str
    """Its Cedar source, UTF-8 decoded."""
    rule_ids: tuple[str, ...]
    """The ``@id`` of each policy in it, in file order."""


class PolicyEngine:
    """A validated Cedar policy set and the schema it was validated against.

    Build one at startup and share it: it is immutable and evaluation holds no state.
    """

    def __init__(
        self,
        policy_dirs: Iterable[Path | str] = (DEFAULT_POLICY_DIR,),
        *,
        schema_path: Path | str = DEFAULT_SCHEMA_PATH,
    ) -> None:
        """Load every ``*.cedar`` file of ``policy_dirs`` and validate it against the schema.

        Directories are read in the order given (shipped defaults first, then a deployment
        directory), files in each sorted by name. A schema file ending in ``.json`` is read as
        Cedar's JSON schema format, any other as the human-readable format.

        Raises:
            PolicyLoadError: when a directory or the schema is missing or unreadable, no
                policy file is found, a file does not parse, holds a template, a policy lacks
                an ``@id`` or repeats one, or the set fails validation against the schema
                (``errors`` then lists ``{"message": ...}`` per problem).

        """
        self.schema_path = Path(schema_path)
        """Path of the Cedar schema the policies are validated against."""
        self._memo: dict[tuple[Any, ...], _Outcome] = {}
        self._schema = _load_schema(self.schema_path)
        files: list[PolicyFile] = []
        policies: dict[str, dict[str, Any]] = {}
        for directory in (Path(d) for d in policy_dirs):
            if not directory.is_dir():
                raise PolicyLoadError(f"policy directory {directory} does not exist")
            for path in sorted(directory.glob("*.cedar")):
                files.append(_load_file(path, policies))
        if not files:
            raise PolicyLoadError("no *.cedar policy file found; every step would be denied")
        self.files: tuple[PolicyFile, ...] = tuple(files)
        """The loaded files, in load order."""
        self.rule_ids: frozenset[str] = frozenset(policies)
        """The ``@id`` of every loaded policy."""
        self.policy_version: str = sha256_digest([[f.path.name, f.text] for f in files])
        """``sha256:<hex>`` of the RFC 8785 JSON list of ``[file name, content]`` pairs."""
        problems = self.validate()
        if problems:
            raise PolicyLoadError(
                f"{len(problems)} policy error(s) against schema {self.schema_path.name}: "
                + "; ".join(problems),
                errors=[{"message": p} for p in problems],
            )
        read = _context_keys_read(policies.values())
        self._reads_step_id = read is None or "step_id" in read
        self._reads_arg_keys = read is None or "arg_keys" in read
        self._reads_amount = read is None or bool({"cumulative_amount", "amount_known"} & read)
        document = {"staticPolicies": policies, "templates": {}, "templateLinks": []}
        try:
            self._policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
        except ValueError as exc:  # pragma: no cover - every file parsed on its own above
            raise PolicyLoadError(f"policy set does not load: {exc}") from exc

    def clear_memo(self) -> None:
        """Forget memoised Cedar answers (benchmarks measure cold evaluations with it)."""
        self._memo.clear()

    def validate(self) -> list[str]:
        """Validate every loaded file against the schema with Cedar's strict validator.

        Returns:
            One ``"<file>: policy <@id>: <message>"`` string per problem; empty when valid.

        """
        problems: list[str] = []
        for policy_file in self.files:
            result = cedarpy.validate_policies(policy_file.text, self._schema)
            by_id = result.id_annotations_by_policy_id
            problems.extend(
                f"{policy_file.path.name}: policy {by_id.get(err.policy_id, err.policy_id)}: "
                f"{err.error}"
                for err in result.errors
            )
        return problems

    def evaluate(
        self,
        steps: Sequence[Step],
        tools: Mapping[str, ToolSpec],
        principal: Principal,
        *,
        safe_mode: bool,
        context: Mapping[str, object] | None = None,
        prior_steps: Sequence[Step] = (),
    ) -> list[PolicyDecision]:
        """Decide every step for ``principal`` in one Cedar batch of ``2 * len(steps)`` requests.

        Args:
            steps: The plan's steps.
            tools: The catalog, by tool name.
            principal: The caller the plan is made for.
            safe_mode: True when the caller asked for a read-only plan.
            context: Extra Cedar context entries for every step; each key must be declared
                in the schema's ``StepContext`` (an undeclared key is a request error and
                fails closed). ``safe_mode``, ``step_id``, ``arg_keys``,
                ``cumulative_amount`` and ``amount_known`` are set by the engine and win over
                entries of the same name.
            prior_steps: Steps of earlier versions of the plan that ``steps`` no longer hold
                (a revision); their metered amounts start the running totals. Not decided.

        Returns:
            One decision per step, in step order. ``rule_ids`` are the ``@id`` of the
            policies that decided (the forbids for ``deny``/``require_approval``, the
            permits for ``allow``; empty for a deny because no permit applied). Any error
            gives ``deny`` with ``errors`` filled. A step whose tool is not in ``tools`` is
            denied with an error.

        """
        extra = {k: v for k, v in (context or {}).items() if k not in _ENGINE_CONTEXT_KEYS}
        principal_uid = {"type": PRINCIPAL_TYPE, "id": f"{principal.tenant}/{principal.subject}"}
        entities: list[dict[str, Any]] = [_principal_entity(principal, principal_uid)]
        seen_tools: set[str] = set()
        requests: list[dict[str, Any]] = []
        # Cedar's answer is a pure function of request and entities, so steps that agree on
        # the tool and on the context attributes the policies read share one pair of
        # requests: 1,000 steps over a few tools cost a few requests, not 2,000. Across calls
        # the same holds, so answers are memoised (only when no caller context is given).
        memo = self._memo if not extra else None
        pair_of_key: dict[tuple[Any, ...], int] = {}
        slots: list[int | str | _Outcome] = []  # per step: request pair, error, or answer
        pending: dict[int, tuple[Any, ...]] = {}
        totals = RunningTotals(tools)
        for prior in prior_steps:
            totals.add(prior)
        for step in steps:
            tool = tools.get(step.tool)
            if tool is None:
                slots.append(f"tool {step.tool!r} is not in the catalog")
                continue
            cumulative, known = totals.add(step)
            arg_keys = tuple(sorted(step.args))
            key = (
                step.tool,
                step.id if self._reads_step_id else None,
                arg_keys if self._reads_arg_keys else None,
                (cumulative, known) if self._reads_amount else None,
            )
            memo_key = (principal, _tool_identity(tool), safe_mode, key)
            if memo is not None and memo_key in memo:
                slots.append(memo[memo_key])
                continue
            pair = pair_of_key.get(key)
            if pair is None:
                if step.tool not in seen_tools:
                    seen_tools.add(step.tool)
                    entities.append(_tool_entity(step.tool, tool))
                pair = pair_of_key[key] = len(requests) // 2
                pending[pair] = memo_key
                step_context = {
                    **extra,
                    "safe_mode": safe_mode,
                    "step_id": step.id,
                    "arg_keys": list(arg_keys),
                    "cumulative_amount": cumulative,
                    "amount_known": known,
                }
                resource = {"type": TOOL_TYPE, "id": step.tool}
                requests.extend(
                    {
                        "principal": principal_uid,
                        "action": {"type": ACTION_TYPE, "id": action},
                        "resource": resource,
                        "context": step_context,
                    }
                    for action in (INVOKE, INVOKE_UNATTENDED)
                )
            slots.append(pair)
        outcomes = self._authorize(requests, entities) if requests else []
        if memo is not None and not isinstance(outcomes, str):
            if len(memo) > _MEMO_SIZE:
                memo.clear()
            for pair, memo_key in pending.items():
                memo[memo_key] = outcomes[pair]
        return _decisions(steps, slots, outcomes)

    def _authorize(
        self, requests: list[dict[str, Any]], entities: list[dict[str, Any]]
    ) -> list[_Outcome] | str:
        """Run one Cedar batch; return an outcome per request pair, or the failure."""
        try:
            # One parsed entity set for the batch: given as text, cedarpy re-parses it for
            # every request. The schema checks the entities once and each request's context.
            handle = cedarpy.Entities.from_json_str(json.dumps(entities), self._schema)
            results = cedarpy.is_authorized_batch(requests, self._policy_set, handle, self._schema)
        except Exception as exc:  # any failure must fail closed and be reported
            return _clip(f"policy evaluation failed: {type(exc).__name__}: {exc}")
        return [_outcome(results[i], results[i + 1]) for i in range(0, len(results), 2)]


_MEMO_SIZE = 16_384
"""Most memoised Cedar answers an engine keeps before it starts over."""


def _decisions(
    steps: Sequence[Step], slots: list[int | str | _Outcome], outcomes: list[_Outcome] | str
) -> list[PolicyDecision]:
    """One decision per step from its slot: a request pair, an error, or a memoised answer."""
    decisions: list[PolicyDecision] = []
    for step, slot in zip(steps, slots, strict=True):
        if isinstance(slot, str):
            decisions.append(_deny_with(step, slot))
            continue
        if isinstance(slot, int):
            if isinstance(outcomes, str):
                decisions.append(_deny_with(step, outcomes))
                continue
            answer = outcomes[slot]
        else:
            answer = slot
        decision, rule_ids, errors = answer
        decisions.append(
            PolicyDecision(
                step_id=step.id,
                tool=step.tool,
                decision=decision,
                rule_ids=list(rule_ids),
                errors=list(errors),
            )
        )
    return decisions


def _tool_identity(tool: ToolSpec) -> tuple[Any, ...]:
    """What the tool entity is built from; equal identities give equal Cedar entities."""
    return (
        tool.name,
        tool.version,
        tool.side_effect,
        tool.idempotent,
        tuple(tool.required_scopes),
        tool.cost_usd,
        tool.meter,
    )


def _load_schema(path: Path) -> cedarpy.Schema:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            return cedarpy.Schema.from_json_str(text)
        return cedarpy.Schema.from_str(text)
    except (OSError, ValueError) as exc:
        raise PolicyLoadError(f"Cedar schema {path} does not load: {exc}") from exc


def _load_file(path: Path, policies: dict[str, dict[str, Any]]) -> PolicyFile:
    """Parse one file and add its policies to ``policies`` keyed by ``@id``."""
    try:
        text = path.read_text(encoding="utf-8")
        document = json.loads(cedarpy.policies_to_json_str(text))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PolicyLoadError(f"policy file {path} does not parse: {exc}") from exc
    if document.get("templates"):
        raise PolicyLoadError(f"policy file {path}: templates (?principal, ?resource) are refused")
    rule_ids: list[str] = []
    for position, policy in enumerate(document.get("staticPolicies", {}).values(), start=1):
        rule_id = policy.get("annotations", {}).get("id")
        if not rule_id:
            raise PolicyLoadError(f'policy file {path}: policy #{position} has no @id("...")')
        if rule_id in policies:
            raise PolicyLoadError(f"policy file {path}: @id {rule_id!r} is already used")
        policies[rule_id] = policy
        rule_ids.append(rule_id)
    return PolicyFile(path=path, text=text, rule_ids=tuple(rule_ids))


def _context_keys_read(policies: Iterable[dict[str, Any]]) -> frozenset[str] | None:
    """Names of the context attributes the policies read (``context.x``, ``context has x``).

    Returns None when some policy uses ``context`` as a whole (e.g. ``context == {...}``):
    then every attribute counts as read.
    """
    context_var = {"Var": "context"}
    keys: set[str] = set()
    pending: list[Any] = list(policies)
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if node == context_var:
                return None
            access = node.get(".") or node.get("has")
            if len(node) == 1 and isinstance(access, dict) and access.get("left") == context_var:
                keys.add(str(access["attr"]))
                continue
            pending.extend(node.values())
    return frozenset(keys)


def _principal_entity(principal: Principal, uid: dict[str, str]) -> dict[str, Any]:
    return {
        "uid": uid,
        "attrs": {
            "tenant": principal.tenant,
            "subject": principal.subject,
            "roles": sorted(str(role) for role in principal.roles),
            "scopes": sorted(principal.scopes),
        },
        "parents": [],
    }


def _tool_entity(name: str, tool: ToolSpec) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "name": tool.name,
        "version": tool.version,
        "side_effect": str(tool.side_effect),
        "idempotent": tool.idempotent,
        "required_scopes": sorted(set(tool.required_scopes)),
        "cost_micro_usd": round(tool.cost_usd * _MICRO),
        "metered": tool.meter is not None,
    }
    if tool.meter is not None:
        if tool.meter.run_limit is not None:
            attrs["meter_run_limit"] = math.floor(tool.meter.run_limit)
        if tool.meter.tenant_daily_limit is not None:
            attrs["meter_tenant_daily_limit"] = math.floor(tool.meter.tenant_daily_limit)
    return {"uid": {"type": TOOL_TYPE, "id": name}, "attrs": attrs, "parents": []}


class RunningTotals:
    """Running totals of metered arguments over a plan's steps, per tool (S6).

    ``add(step)`` returns what the step's Cedar context carries: the total so far including
    the step, rounded up to a whole unit (capped at Cedar's largest Long), and whether every
    value so far was a literal number. A step whose tool has no meter gets ``(0, True)``.
    """

    def __init__(self, tools: Mapping[str, ToolSpec]) -> None:
        self._tools = tools
        self._sums: dict[str, Decimal] = {}
        self._unknown: set[str] = set()

    def add(self, step: Step) -> tuple[int, bool]:
        """Count ``step``'s metered amount; return ``(cumulative_amount, amount_known)``."""
        tool = self._tools.get(step.tool)
        if tool is None or tool.meter is None:
            return 0, True
        amount = tool.meter.amount(step.args)
        if amount is None:
            self._unknown.add(step.tool)
        else:
            self._sums[step.tool] = self._sums.get(step.tool, Decimal(0)) + amount
        total = self._sums.get(step.tool, Decimal(0))
        return min(math.ceil(total), _MAX_LONG), step.tool not in self._unknown


class _Outcome(NamedTuple):
    decision: Decision
    rule_ids: tuple[str, ...]
    errors: tuple[str, ...]


def _outcome(invoke: cedarpy.AuthzResult, unattended: cedarpy.AuthzResult) -> _Outcome:
    """Map the two Cedar answers of one step to a decision, failing closed on any error."""
    errors = [_clip(e) for e in [*invoke.diagnostics.errors, *unattended.diagnostics.errors]]
    known = (cedarpy.Decision.Allow, cedarpy.Decision.Deny)
    if invoke.decision not in known or unattended.decision not in known:
        errors = errors or [f"Cedar gave no decision ({invoke.decision}, {unattended.decision})"]
    if errors:
        return _Outcome(Decision.DENY, (), tuple(dict.fromkeys(errors)))
    if not invoke.allowed:
        return _Outcome(Decision.DENY, _rule_ids(invoke), ())
    if not unattended.allowed:
        return _Outcome(Decision.REQUIRE_APPROVAL, _rule_ids(unattended), ())
    return _Outcome(Decision.ALLOW, _rule_ids(invoke, unattended), ())


def _rule_ids(*results: cedarpy.AuthzResult) -> tuple[str, ...]:
    # Policies are loaded under their @id, so Cedar's reasons are rule ids already.
    return tuple(sorted({reason for result in results for reason in result.diagnostics.reasons}))


def _deny_with(step: Step, error: str) -> PolicyDecision:
    return PolicyDecision(step_id=step.id, tool=step.tool, decision=Decision.DENY, errors=[error])


def _clip(message: str) -> str:
    if len(message) <= _MAX_ERROR_CHARS:
        return message
    return message[: _MAX_ERROR_CHARS - 1] + "…"
