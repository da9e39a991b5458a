"""Static validation of a plan, every issue at once (DESIGN §4 step 4, issue 4 "Pipeline" step 2).

``validate_plan`` returns a ``ValidationReport`` listing every issue, each with a stable
``IssueCode`` and an RFC 6901 pointer into the plan body (``/steps/2/args/url``). Rules:

* The graph has one node per step id (duplicates share it); an unknown ``depends_on`` entry is
  a ``missing_dependency`` and adds no edge. ``graphlib.TopologicalSorter`` orders it; on a
  ``CycleError`` the strongly connected components (Tarjan, linear) give one ``cycle`` issue
  each, named by ``graphlib`` on the component, in ``depends_on`` direction (``a -> b -> a``:
  ``a`` depends on ``b``, which depends on ``a``) from its first step in plan order.
* Depth is the number of steps on the longest chain (a step without dependencies has depth 1),
  computed only for an acyclic graph.
* A ``$ref`` in ``args`` must name a transitive ancestor; one in ``compensation.args`` may also
  name the step itself, whose output the compensation undoes.
* For ``args_schema`` a ``$ref`` object is replaced by a placeholder that every keyword at its
  own position accepts (``type``, ``enum``, ``const``, ``not``...); keywords of the enclosing
  object or array still apply (``required``, ``additionalProperties``...), and so does a
  ``false`` schema at the ref's position (jsonschema 4.26 gives that error no instance path, so
  it points at the enclosing ``args``).
* Every ``input_schema`` is read as Draft 2020-12, whatever its ``$schema``; remote ``$ref``
  URIs are never fetched. One compiled validator per distinct schema (``lru_cache`` keyed by
  its sorted-key JSON), looked up once per (tool name, version) per call.
* The estimated cost is the sum of the steps' tools' ``cost_usd``; compensations run only on
  failure and are not counted. In safe mode a step or compensation tool that is not ``read``
  is ``unsafe_in_safe_mode``.
"""

from __future__ import annotations

import difflib
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from graphlib import CycleError, TopologicalSorter
from typing import TYPE_CHECKING, Any

import referencing
import referencing.exceptions
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, UnknownType, best_match
from jsonschema.validators import extend

from shared_schemas import IssueCode, SideEffect, ValidationIssue, ValidationReport
from shared_schemas.refs import REF_KEY, Ref, iter_refs, join_pointer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

    from shared_schemas import Plan, PlanDraft, Step, ToolSpec


@dataclass(frozen=True, slots=True)
class ValidationLimits:
    """Size limits of a plan (issue 4: ``too_many_steps``, ``too_deep``).

    Attributes:
        max_steps: Most steps a plan may have.
        max_depth: Most steps on one ``depends_on`` chain.
    """

    max_steps: int = 200
    max_depth: int = 50


class _RefPlaceholder:
    """Stands in for a ``$ref`` object while args are checked against a schema."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def __repr__(self) -> str:
        return repr(self.raw)


def _accept_placeholder(keyword: Callable[..., Any]) -> Callable[..., Iterator[Any]]:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[Any]:
        if isinstance(instance, _RefPlaceholder):
            return
        yield from keyword(validator, value, instance, schema) or ()

    return check


_RefTolerantValidator: Any = extend(  # type: ignore[no-untyped-call]
    Draft202012Validator,
    {k: _accept_placeholder(f) for k, f in Draft202012Validator.VALIDATORS.items()},
)
# No retrieval of remote "$ref"s: validation is pure, and an unknown URI is an issue.
_NO_REMOTE = referencing.Registry()


@dataclass(frozen=True, slots=True)
class _Compiled:
    plain: Validator
    ref_tolerant: Validator


@lru_cache(maxsize=1024)
def _compile(schema_json: str) -> _Compiled | str:
    """Compile a tool's ``input_schema`` (canonical JSON text), or say why it is invalid."""
    schema = json.loads(schema_json)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = join_pointer("", *exc.absolute_path)
        return f"{exc.message} (at schema {where or '/'})"
    if isinstance(schema, dict):
        # A root "$schema" would make "$ref": "#" switch back to the stock validator class.
        schema = {k: v for k, v in schema.items() if k != "$schema"}
    return _Compiled(
        plain=Draft202012Validator(schema, registry=_NO_REMOTE),
        ref_tolerant=_RefTolerantValidator(schema, registry=_NO_REMOTE),
    )


def _with_placeholders(value: Any) -> Any:
    if isinstance(value, dict):
        if REF_KEY in value:
            return _RefPlaceholder(value)
        return {k: _with_placeholders(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_placeholders(v) for v in value]
    return value


def _error_key(error: ValidationError) -> tuple[tuple[tuple[int, int, str], ...], str]:
    where = tuple((0, p, "") if isinstance(p, int) else (1, 0, str(p)) for p in error.path)
    return where, "/".join(str(p) for p in error.schema_path)


class _Ancestry:
    """Answers "is X an ancestor of Y" through ``depends_on``, computed at most once.

    Ancestor sets are int bitsets (bit ``bit[id]`` per step), built in one pass over the
    strongly connected components, dependencies first: linear in steps and edges, times the
    bitset width. Steps on a cycle are ancestors of each other and of themselves.
    """

    def __init__(
        self, graph: Mapping[str, set[str]], comps: list[list[str]], bit: Mapping[str, int]
    ) -> None:
        self.graph, self.comps, self.bit = graph, comps, bit
        self._bits: dict[str, int] | None = None

    def of(self, node: str) -> Callable[[str], bool]:
        """Return a membership test for the ancestors of ``node``."""
        if self._bits is None:
            self._bits = self._compute()
        mask, bit = self._bits[node], self.bit
        return lambda other: bool(mask >> bit[other] & 1)

    def _compute(self) -> dict[str, int]:
        graph, bit = self.graph, self.bit
        ancestors: dict[str, int] = {}
        for comp in self.comps:
            members = set(comp)
            acc = 0
            for node in comp:
                for dep in graph[node]:
                    if dep not in members:
                        acc |= ancestors[dep] | (1 << bit[dep])
            if len(comp) > 1 or comp[0] in graph[comp[0]]:
                for node in comp:
                    acc |= 1 << bit[node]
            for node in comp:
                ancestors[node] = acc
        return ancestors


class _Checker:
    """One validation run: per-step checks, issues collected in plan order."""

    def __init__(
        self, tools: Mapping[str, ToolSpec], index_of: Mapping[str, int], safe_mode: bool
    ) -> None:
        self.tools, self.index_of, self.safe_mode = tools, index_of, safe_mode
        self.ancestry: _Ancestry | None = None
        self.found: list[tuple[int, int, ValidationIssue]] = []
        self._compiled: dict[tuple[str, str], _Compiled | str] = {}

    def add(self, index: int, code: IssueCode, message: str, path: str, step: str | None) -> None:
        issue = ValidationIssue(step_id=step, code=code, message=message, path=path)
        self.found.append((index, len(self.found), issue))

    def issues(self) -> list[ValidationIssue]:
        return [issue for _, _, issue in sorted(self.found, key=lambda f: (f[0], f[1]))]

    def call(
        self, i: int, step: Step, tool: str, args: dict[str, Any], *, base: str, compensation: bool
    ) -> ToolSpec | None:
        """Check one tool call (a step's or its compensation's) at ``base``; return its tool."""
        has_refs = self.refs(i, step, args, f"{base}/args", self_allowed=compensation)
        spec = self.tools.get(tool)
        if spec is None:
            close = difflib.get_close_matches(tool, list(self.tools), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            message = f"unknown tool {tool!r}{hint}"
            self.add(i, IssueCode.UNKNOWN_TOOL, message, f"{base}/tool", step.id)
            return None
        if self.safe_mode and spec.side_effect is not SideEffect.READ:
            what = "compensation tool" if compensation else "tool"
            message = f"{what} {tool!r} is {spec.side_effect.value}; safe mode allows only read"
            self.add(i, IssueCode.UNSAFE_IN_SAFE_MODE, message, f"{base}/tool", step.id)
        self.args(i, step, spec, args, base=f"{base}/args", has_refs=has_refs)
        return spec

    def refs(self, i: int, step: Step, args: Any, base: str, self_allowed: bool) -> bool:
        """Check every ``$ref`` in ``args``; return whether there is any."""
        is_ancestor: Callable[[str], bool] | None = None
        found = False
        for path, ref in iter_refs(args, base):
            found = True
            if not isinstance(ref, Ref):
                self.add(i, IssueCode.REF_BAD_POINTER, str(ref), path, step.id)
                continue
            if ref.step_id == step.id:
                if self_allowed:
                    continue
                problem = "a step cannot use its own output"
            elif ref.step_id not in self.index_of:
                problem = f"there is no step {ref.step_id!r}"
            else:
                if is_ancestor is None:
                    assert self.ancestry is not None
                    is_ancestor = self.ancestry.of(step.id)
                if is_ancestor(ref.step_id):
                    continue
                problem = (
                    f"step {ref.step_id!r} is not an ancestor of {step.id!r}; "
                    "add it to depends_on, directly or through another step"
                )
            message = f"$ref {str(ref)!r}: {problem}"
            self.add(i, IssueCode.REF_NOT_ANCESTOR, message, path, step.id)
        return found

    def args(
        self, i: int, step: Step, spec: ToolSpec, args: Any, *, base: str, has_refs: bool
    ) -> None:
        """Check ``args`` against the tool's ``input_schema``, one issue per schema error."""
        key = (spec.name, spec.version)
        compiled = self._compiled.get(key)
        if compiled is None:
            try:
                text = json.dumps(spec.input_schema, sort_keys=True, separators=(",", ":"))
            except (TypeError, ValueError) as exc:
                compiled = f"not JSON: {exc}"
            else:
                compiled = _compile(text)
            self._compiled[key] = compiled
        label = f"tool {spec.name!r} version {spec.version!r}"
        if isinstance(compiled, str):
            message = f"{label} has an invalid input_schema, args cannot be checked: {compiled}"
            self.add(i, IssueCode.ARGS_SCHEMA, message, base, step.id)
            return
        validator = compiled.ref_tolerant if has_refs else compiled.plain
        instance = _with_placeholders(args) if has_refs else args
        try:
            errors = sorted(validator.iter_errors(instance), key=_error_key)
        except (referencing.exceptions.Unresolvable, UnknownType, RecursionError) as exc:
            message = f"{label}: input_schema cannot be applied: {type(exc).__name__}: {exc}"
            self.add(i, IssueCode.ARGS_SCHEMA, message, base, step.id)
            return
        for error in errors:
            message = error.message
            if error.context and (best := best_match([error])) is not error:
                at = join_pointer(base, *best.absolute_path)
                message += f"; closest: {best.message} (at {at})"
            message += f" [{label}, schema {join_pointer('', *error.schema_path)}]"
            path = join_pointer(base, *error.path)
            self.add(i, IssueCode.ARGS_SCHEMA, message, path, step.id)


def _components(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Strongly connected components, each after the ones it depends on (Tarjan, 1972).

    Iterative, so a long chain cannot exhaust the Python stack.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    comps: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        work = [(root, iter(graph[root]))]
        while work:
            node, deps = work[-1]
            for dep in deps:
                if dep not in index:
                    index[dep] = low[dep] = len(index)
                    stack.append(dep)
                    on_stack.add(dep)
                    work.append((dep, iter(graph[dep])))
                    break
                if dep in on_stack:
                    low[node] = min(low[node], index[dep])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp: list[str] = []
                    while not comp or comp[-1] != node:
                        comp.append(stack.pop())
                        on_stack.discard(comp[-1])
                    comps.append(comp)
    return comps


def validate_plan(
    draft: PlanDraft | Plan,
    tools: Mapping[str, ToolSpec],
    limits: ValidationLimits,
    *,
    safe_mode: bool = False,
    budget_usd: float | None = None,
) -> ValidationReport:
    """Check a plan statically and report every issue found, in plan order.

    Args:
        draft: The parsed plan (a ``PlanDraft`` or a stored ``Plan``; only ``steps`` is read).
        tools: The tool catalog, by tool name.
        limits: Step count and depth limits.
        safe_mode: When true, only ``read`` tools are allowed.
        budget_usd: Budget in USD for the sum of the steps' tool ``cost_usd``; None for none.

    Returns:
        A ``ValidationReport``; ``valid`` is true exactly when ``issues`` is empty. Plan-wide
        issues (``step_id`` null, path ``/steps``) come first, then each step's, in step order.
        Nothing is raised for a bad plan or a bad tool schema; those are issues.
    """
    steps = draft.steps
    index_of: dict[str, int] = {}
    for i, step in enumerate(steps):
        index_of.setdefault(step.id, i)
    check = _Checker(tools, index_of, safe_mode)
    if len(steps) > limits.max_steps:
        message = f"the plan has {len(steps)} steps, over the limit of {limits.max_steps}"
        check.add(-1, IssueCode.TOO_MANY_STEPS, message, "/steps", None)

    graph, edge_at = _build_graph(check, steps)
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError:
        comps = _components(graph)
        _report_cycles(check, graph, comps, edge_at)
    else:
        comps = [[node] for node in order]
        _check_depth(check, graph, order, index_of, limits.max_depth)
    check.ancestry = _Ancestry(graph, comps, index_of)

    costs: list[float] = []
    for i, step in enumerate(steps):
        spec = check.call(i, step, step.tool, step.args, base=f"/steps/{i}", compensation=False)
        if spec is not None:
            costs.append(spec.cost_usd)
        if step.compensation is not None:
            comp = step.compensation
            base = f"/steps/{i}/compensation"
            check.call(i, step, comp.tool, comp.args, base=base, compensation=True)

    if budget_usd is not None and (cost := math.fsum(costs)) > budget_usd:
        message = f"estimated cost {cost:g} USD is over the budget of {budget_usd:g} USD"
        check.add(-1, IssueCode.OVER_BUDGET, message, "/steps", None)

    issues = check.issues()
    return ValidationReport(valid=not issues, issues=issues)


def _check_depth(
    check: _Checker,
    graph: Mapping[str, set[str]],
    order: list[str],
    index_of: Mapping[str, int],
    max_depth: int,
) -> None:
    depth: dict[str, int] = {}
    for node in order:
        depth[node] = 1 + max((depth[d] for d in graph[node]), default=0)
    deepest = max(depth.values(), default=0)
    if deepest <= max_depth:
        return
    end = min((n for n in depth if depth[n] == deepest), key=index_of.__getitem__)
    root = end
    while graph[root]:
        root = max(graph[root], key=depth.__getitem__)
    message = (
        f"the longest dependency chain has {deepest} steps, over the limit of {max_depth} "
        f"(from {root!r} to {end!r})"
    )
    at = index_of[end]
    check.add(at, IssueCode.TOO_DEEP, message, f"/steps/{at}", end)


def _build_graph(
    check: _Checker, steps: list[Step]
) -> tuple[dict[str, set[str]], dict[tuple[str, str], tuple[int, str]]]:
    """Report duplicate ids and missing dependencies; return the graph and each edge's path."""
    index_of = check.index_of
    graph: dict[str, set[str]] = {sid: set() for sid in index_of}
    edge_at: dict[tuple[str, str], tuple[int, str]] = {}
    for i, step in enumerate(steps):
        if (first := index_of[step.id]) != i:
            message = f"step id {step.id!r} is already used by the step at /steps/{first}"
            check.add(i, IssueCode.DUPLICATE_STEP_ID, message, f"/steps/{i}/id", step.id)
        for j, dep in enumerate(step.depends_on):
            path = f"/steps/{i}/depends_on/{j}"
            if dep not in index_of:
                message = f"step {step.id!r} depends on {dep!r}, which is not a step of the plan"
                check.add(i, IssueCode.MISSING_DEPENDENCY, message, path, step.id)
            elif (step.id, dep) not in edge_at:
                edge_at[step.id, dep] = (i, path)
                graph[step.id].add(dep)
    return graph, edge_at


def _report_cycles(
    check: _Checker,
    graph: Mapping[str, set[str]],
    comps: list[list[str]],
    edge_at: Mapping[tuple[str, str], tuple[int, str]],
) -> None:
    """Report one cycle per strongly connected component that has one."""
    index_of = check.index_of
    for comp in comps:
        members = set(comp)
        if len(comp) == 1 and comp[0] not in graph[comp[0]]:
            continue
        try:
            TopologicalSorter({n: graph[n] & members for n in comp}).prepare()
        except CycleError as exc:
            # graphlib lists "runs before"; reversed, it reads "depends on".
            cycle: list[str] = exc.args[1][-2::-1]
        else:  # pragma: no cover - a component with an inner edge always has a cycle
            continue
        start = min(range(len(cycle)), key=lambda k: index_of[cycle[k]])
        cycle = cycle[start:] + cycle[:start]
        index, path = edge_at[cycle[0], cycle[1 % len(cycle)]]
        message = "cycle: " + " -> ".join([*cycle, cycle[0]]) + " (x -> y: x depends on y)"
        check.add(index, IssueCode.CYCLE, message, path, cycle[0])
