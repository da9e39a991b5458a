r"""The ``template`` planner backend: intent patterns -> parameterised plan templates (DESIGN §4).

The embedded default; it needs no network. A template is a YAML file::

    id: release-branch            # slug, unique across the loaded directories
    version: 1                    # recorded as template_id "<id>@<version>"
    description: ...              # optional, becomes the plan's rationale
    patterns:                     # Python regexes with named groups, tried in order;
      - 'create a release branch (?P<name>\S+)'   # re.fullmatch, case-insensitive, on the
                                                    # stripped intent
    types: {count: integer}       # optional: convert a captured group (integer|number|boolean)
    defaults: {repo_path: "."}    # optional fallback values (any YAML value)
    steps:                        # the Step contract shape; string values may hold
      - id: branch                # "{{ name }}" placeholders
        tool: git.git_create_branch
        args: {branch_name: "release/{{ name }}", repo_path: "{{ repo_path }}"}

A placeholder is looked up in the matched groups, then the request context, then ``defaults``.
A string that is exactly one placeholder takes the value itself (keeping its JSON type); a
placeholder inside a longer string is replaced by the value's text. Substitution is one pass
(substituted text is never re-scanned), with no expressions: no Jinja, no ``eval``.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import yaml

from shared_schemas import PlannerInfo, Step

from ..domain.parsing import DraftParseError, parse_draft_value
from .base import AttemptRecord, Generation, NoMatchingTemplateError, PlanRequest, PriorAttempt

PLACEHOLDER = re.compile(r"\{\{ ([A-Za-z_][A-Za-z0-9_]*) \}\}")
"""An exact ``{{ name }}`` token: two braces, one space, an identifier, one space, two braces."""

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_TEMPLATE_KEYS = frozenset(
    {"id", "version", "description", "patterns", "types", "defaults", "steps"}
)
_STEP_KEYS = frozenset(Step.model_fields)
_CONVERTERS: dict[str, Any] = {
    "integer": int,
    "number": float,
    "boolean": lambda s: {"true": True, "false": False}[s.lower()],
    "string": str,
}


class TemplateError(ValueError):
    """A plan template file is malformed, or a template cannot be rendered; names the file."""


@dataclass(frozen=True)
class PlanTemplate:
    """One loaded plan template."""

    id: str
    """Slug, unique among the loaded templates."""
    version: str
    """Template version, as written in the file."""
    patterns: tuple[re.Pattern[str], ...]
    """Compiled intent patterns (case-insensitive), tried in order with ``fullmatch``."""
    steps: tuple[dict[str, Any], ...]
    """Step templates in the ``Step`` contract shape, with placeholders."""
    defaults: dict[str, Any]
    """Fallback placeholder values."""
    types: dict[str, str]
    """Group name -> ``integer`` | ``number`` | ``boolean`` | ``string``."""
    description: str | None
    """What the template does; rendered into the plan's rationale."""
    source: str
    """The file it was loaded from."""

    @property
    def template_id(self) -> str:
        """``<id>@<version>``, as recorded in ``PlannerInfo.template_id``."""
        return f"{self.id}@{self.version}"


def _check_placeholders(value: Any, where: str) -> None:
    """Refuse ``{{`` / ``}}`` that are not part of an exact ``{{ name }}`` token."""
    if isinstance(value, str):
        rest = PLACEHOLDER.sub("", value)
        if "{{" in rest or "}}" in rest:
            raise TemplateError(
                f"{where}: malformed placeholder in {value!r} (use '{{{{ name }}}}')"
            )
    elif isinstance(value, list):
        for item in value:
            _check_placeholders(item, where)
    elif isinstance(value, dict):
        for item in value.values():
            _check_placeholders(item, where)


def _compile_patterns(raw_patterns: Any, source: str) -> list[re.Pattern[str]]:
    if not isinstance(raw_patterns, list) or not raw_patterns:
        raise TemplateError(f"{source}: 'patterns' must be a non-empty list of regexes")
    patterns: list[re.Pattern[str]] = []
    for raw in raw_patterns:
        if not isinstance(raw, str):
            raise TemplateError(f"{source}: pattern {raw!r} is not a string")
        try:
            patterns.append(re.compile(raw, re.IGNORECASE))
        except re.error as exc:
            raise TemplateError(f"{source}: pattern {raw!r} does not compile: {exc}") from exc
    return patterns


def _check_steps(steps: Any, source: str) -> list[dict[str, Any]]:
    if not isinstance(steps, list) or not steps:
        raise TemplateError(f"{source}: 'steps' must be a non-empty list")
    for n, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("id"), str):
            raise TemplateError(f"{source}: steps[{n}] must be a mapping with a string 'id'")
        bad = set(step) - _STEP_KEYS
        if bad:
            raise TemplateError(f"{source}: steps[{n}] has keys not in the Step contract: {bad}")
        _check_placeholders(step, f"{source}: steps[{n}]")
    return steps


def parse_template(data: Any, source: str) -> PlanTemplate:
    """Build a ``PlanTemplate`` from decoded YAML.

    Raises:
        TemplateError: naming ``source`` and the offending key when the data is malformed.
    """
    if not isinstance(data, dict):
        raise TemplateError(f"{source}: a template must be a mapping, got {type(data).__name__}")
    unknown = set(data) - _TEMPLATE_KEYS
    if unknown:
        raise TemplateError(f"{source}: unknown keys {sorted(unknown)}")
    tid, version = data.get("id"), data.get("version")
    if not isinstance(tid, str) or not _ID.match(tid):
        raise TemplateError(f"{source}: 'id' must be a slug matching {_ID.pattern}")
    if not isinstance(version, str | int) or isinstance(version, bool) or str(version) == "":
        raise TemplateError(f"{source}: 'version' must be a non-empty string or integer")
    patterns = _compile_patterns(data.get("patterns"), source)
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict) or not all(isinstance(k, str) for k in defaults):
        raise TemplateError(f"{source}: 'defaults' must be a mapping of names to values")
    types = data.get("types", {})
    if not isinstance(types, dict) or not all(t in _CONVERTERS for t in types.values()):
        raise TemplateError(f"{source}: 'types' values must be one of {sorted(_CONVERTERS)}")
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise TemplateError(f"{source}: 'description' must be a string")
    steps = _check_steps(data.get("steps"), source)
    _check_placeholders(description, f"{source}: description")
    return PlanTemplate(
        id=tid,
        version=str(version),
        patterns=tuple(patterns),
        steps=tuple(steps),
        defaults=dict(defaults),
        types={str(k): str(v) for k, v in types.items()},
        description=description,
        source=source,
    )


def _template_files(directory: Traversable) -> list[Traversable]:
    files = [f for f in directory.iterdir() if f.is_file() and f.name.endswith((".yaml", ".yml"))]
    return sorted(files, key=lambda f: f.name)


def load_directory(directory: Traversable, label: str) -> list[PlanTemplate]:
    """Load every ``*.yaml`` / ``*.yml`` file of ``directory``, in file-name order.

    Raises:
        TemplateError: when ``directory`` is not a directory, for a file that is not valid YAML
            or not a valid template, or for two files with the same template id.
    """
    if not directory.is_dir():
        raise TemplateError(f"{label}: not a directory of plan templates")
    templates: list[PlanTemplate] = []
    seen: dict[str, str] = {}
    for file in _template_files(directory):
        source = f"{label}/{file.name}"
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TemplateError(f"{source}: not valid YAML: {exc}") from exc
        template = parse_template(data, source)
        if template.id in seen:
            raise TemplateError(
                f"{source}: template id {template.id!r} also in {seen[template.id]}"
            )
        seen[template.id] = source
        templates.append(template)
    return templates


def shipped_templates_dir() -> Traversable:
    """The templates shipped in the package: ``planner_service/templates/``."""
    return resources.files("planner_service").joinpath("templates")


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def substitute(value: Any, values: dict[str, Any], where: str = "template") -> Any:
    """Fill ``{{ name }}`` placeholders in every string of ``value`` (recursing into lists/dicts).

    A string that is exactly one placeholder becomes the value itself, keeping its type; inside
    a longer string a value is inserted as text (strings as-is, others as JSON).

    Raises:
        TemplateError: for a placeholder whose name is not in ``values``.
    """
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return _lookup(values, whole.group(1), where)
        return PLACEHOLDER.sub(lambda m: _text(_lookup(values, m.group(1), where)), value)
    if isinstance(value, list):
        return [substitute(item, values, where) for item in value]
    if isinstance(value, dict):
        return {key: substitute(item, values, where) for key, item in value.items()}
    return value


def _lookup(values: dict[str, Any], name: str, where: str) -> Any:
    if name not in values:
        raise TemplateError(f"{where}: unknown placeholder {{{{ {name} }}}}")
    return values[name]


class TemplateBackend:
    """Plans by matching the intent against YAML plan templates; no network.

    Templates come from ``extra_dir`` (a deployment's own, tried first and winning on an id
    clash) and then the shipped ``planner_service/templates/``.
    """

    name = "template"

    def __init__(self, extra_dir: Path | None = None, *, include_shipped: bool = True) -> None:
        """Load the templates.

        Raises:
            TemplateError: when a file is malformed, naming the file.
        """
        own = load_directory(extra_dir, str(extra_dir)) if extra_dir is not None else []
        shipped = (
            load_directory(shipped_templates_dir(), "planner_service/templates")
            if include_shipped
            else []
        )
        own_ids = {t.id for t in own}
        self.templates: list[PlanTemplate] = own + [t for t in shipped if t.id not in own_ids]
        """Templates in the order they are tried."""

    def match(self, intent: str) -> tuple[PlanTemplate, dict[str, Any]]:
        """Return the first template whose pattern fully matches the stripped intent.

        Returns:
            The template and its non-empty named groups (converted by the template's ``types``).

        Raises:
            NoMatchingTemplateError: when no pattern matches.
            TemplateError: when a captured group does not convert to its declared type.
        """
        text = intent.strip()
        for template in self.templates:
            for pattern in template.patterns:
                found = pattern.fullmatch(text)
                if found is None:
                    continue
                groups: dict[str, Any] = {}
                for key, raw in found.groupdict().items():
                    if raw is None:
                        continue
                    kind = template.types.get(key, "string")
                    try:
                        groups[key] = _CONVERTERS[kind](raw)
                    except (ValueError, KeyError) as exc:
                        msg = f"{template.source}: group {key!r}={raw!r} is not a {kind}"
                        raise TemplateError(msg) from exc
                return template, groups
        raise NoMatchingTemplateError(f"no plan template matches the intent {text[:200]!r}")

    def render(
        self, template: PlanTemplate, groups: dict[str, Any], context: dict[str, Any]
    ) -> dict[str, Any]:
        """Render a template into ``PlanDraft`` JSON.

        Raises:
            TemplateError: for a placeholder with no value.
        """
        values = {**template.defaults, **context, **groups}
        where = template.source
        draft: dict[str, Any] = {"steps": [substitute(s, values, where) for s in template.steps]}
        if template.description is not None:
            draft["rationale"] = substitute(template.description, values, where)
        else:
            draft["rationale"] = f"Plan template {template.template_id} matched the intent."
        return draft

    async def generate(self, request: PlanRequest, prior: list[PriorAttempt]) -> Generation:
        """Match, render and strictly parse; ``prior`` is ignored (a template cannot repair).

        Raises:
            NoMatchingTemplateError: when no template matches the intent.
            TemplateError: when the matched template cannot be rendered.
        """
        started = time.perf_counter()
        template, groups = self.match(request.intent)
        value = self.render(template, groups, request.context)
        raw = json.dumps(value, ensure_ascii=False, sort_keys=True)
        planner = PlannerInfo(backend="template", template_id=template.template_id)
        attempt = AttemptRecord(
            backend=self.name,
            parameters={"template_id": template.template_id, "groups": groups},
            raw_response=raw,
            latency_s=time.perf_counter() - started,
        )
        try:
            draft = parse_draft_value(value)
        except DraftParseError as exc:
            return Generation(attempt=attempt, planner=planner, issues=exc.issues)
        return Generation(attempt=attempt, planner=planner, draft=draft)
