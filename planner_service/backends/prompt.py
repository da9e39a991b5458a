r"""Prompt rendering for LLM planner backends: versioned templates, the quoted, trimmed catalog.

Prompt templates are files ``planner_service/prompts/<version>.txt`` with three sections, each
opened by a line ``[system]``, ``[user]`` or ``[repair]``; text before the first section is a
comment. Sections hold exact ``{{ name }}`` placeholders filled in one pass (substituted text is
never re-scanned): ``{{ catalog }}`` (system), ``{{ request }}`` (user), ``{{ issues }}``
(repair).

Untrusted text — tool descriptions and schemas, the intent, the context — enters the prompt
only as JSON inside explicit delimiters, and the JSON escapes ``<``, ``>`` and ``&`` as
``\u003c`` / ``\u003e`` / ``\u0026``, so no quoted value can close its delimiter
(``</catalog>``, ``</request>``) and pose as instructions.

Token estimate: ``ceil(len(text) / 4)`` characters per token, the rule of thumb OpenAI gives
for English text with its tokenizers; it needs no tokenizer for a model we may not know, and
errs high for JSON-heavy text, so a budget in estimated tokens is a safe upper bound.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

from shared_schemas import SideEffect, ToolCatalog, ToolSpec, ValidationIssue

from .base import PlanRequest, PriorAttempt
from .template import PLACEHOLDER

_SECTIONS = ("system", "user", "repair")
_SECTION_LINE = re.compile(r"^\[(system|user|repair)\]$", re.MULTILINE)
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    {
        "the", "and", "for", "with", "from", "into", "that", "this", "then", "what", "which",
        "when", "your", "you", "are", "was", "were", "its", "all", "any", "can", "has", "have",
        "not", "but", "use",
    }
)  # fmt: skip


class PromptError(ValueError):
    """A prompt template is missing or malformed; names the file."""


@dataclass(frozen=True)
class PromptTemplate:
    """One versioned prompt template."""

    version: str
    """The file's stem, e.g. ``plan_v1``; recorded as ``prompt_version``."""
    system: str
    """System message text, with ``{{ catalog }}``."""
    user: str
    """User message text, with ``{{ request }}``."""
    repair: str
    """Follow-up user message after a refused attempt, with ``{{ issues }}``."""


def load_prompt(version: str) -> PromptTemplate:
    """Load ``planner_service/prompts/<version>.txt``.

    Raises:
        PromptError: when the file is missing, a section is missing or repeated, or a section
            lacks its placeholder.
    """
    if not re.fullmatch(r"[a-z0-9_]+", version):
        raise PromptError(f"prompt version {version!r} is not a plain name")
    source = f"planner_service/prompts/{version}.txt"
    file = resources.files("planner_service").joinpath("prompts", f"{version}.txt")
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise PromptError(f"{source}: no such prompt template") from exc
    parts = _SECTION_LINE.split(text)
    found: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in found:
            raise PromptError(f"{source}: section [{name}] appears twice")
        found[name] = body.strip("\n")
    needs = {"system": "catalog", "user": "request", "repair": "issues"}
    for name in _SECTIONS:
        if name not in found:
            raise PromptError(f"{source}: missing section [{name}]")
        if "{{ " + needs[name] + " }}" not in found[name]:
            raise PromptError(f"{source}: section [{name}] lacks {{{{ {needs[name]} }}}}")
    return PromptTemplate(version, found["system"], found["user"], found["repair"])


def render_text(text: str, values: dict[str, str]) -> str:
    """Fill exact ``{{ name }}`` placeholders in one pass.

    Raises:
        PromptError: for a placeholder whose name is not in ``values``.
    """

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise PromptError(f"unknown prompt placeholder {{{{ {name} }}}}")
        return values[name]

    return PLACEHOLDER.sub(fill, text)


def quote_json(value: Any, *, indent: int | None = None) -> str:
    """JSON text of ``value`` with ``<``, ``>`` and ``&`` escaped, safe inside delimiters."""
    separators = (",", ": ") if indent is not None else (",", ":")
    text = json.dumps(value, ensure_ascii=False, indent=indent, separators=separators)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text``: ``ceil(len(text) / 4)`` (see the module docstring)."""
    return math.ceil(len(text) / 4)


def _words(text: str) -> set[str]:
    """Lower-case words of 3+ characters, stop words out, a plural ``s`` stripped."""
    out = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _STOPWORDS:
            continue
        out.add(word[:-1] if len(word) > 3 and word.endswith("s") else word)
    return out


def catalog_entry(tool: ToolSpec) -> dict[str, Any]:
    """The part of a tool the prompt shows: name, description, side effect, input schema."""
    return {
        "name": tool.name,
        "description": tool.description,
        "side_effect": tool.side_effect.value,
        "input_schema": tool.input_schema,
    }


def relevance(tool: ToolSpec, intent: str) -> int:
    """Words shared by the intent and the tool's name, description and argument names."""
    props = tool.input_schema.get("properties", {})
    names = " ".join(props) if isinstance(props, dict) else ""
    return len(_words(intent) & _words(f"{tool.name} {tool.description} {names}"))


@dataclass(frozen=True)
class TrimmedCatalog:
    """The catalog as rendered into a prompt."""

    text: str
    """JSON array of catalog entries, one per line, quoted with ``quote_json``."""
    tools: list[str]
    """Names of the tools shown, in catalog order."""
    dropped: list[str]
    """Names of the tools left out to meet the budget (or for safe mode), in drop order."""
    tokens: int
    """Estimated tokens of ``text``."""


def _block(lines: list[str]) -> str:
    return "[\n" + ",\n".join(lines) + "\n]"


def trim_catalog(
    catalog: ToolCatalog, intent: str, budget_tokens: int, *, safe_mode: bool = False
) -> TrimmedCatalog:
    """Render the catalog as quoted JSON within ``budget_tokens`` estimated tokens.

    Tools are dropped least relevant first (fewest words shared with the intent; ties: the
    later name first) until the block fits; in safe mode only ``read`` tools are shown at all.
    If even one tool does not fit, the block is an empty array.
    """
    tools = [t for t in catalog.tools if not safe_mode or t.side_effect is SideEffect.READ]
    dropped = [t.name for t in catalog.tools if t not in tools]
    lines = {t.name: quote_json(catalog_entry(t)) for t in tools}
    order = sorted(range(len(tools)), key=lambda i: (relevance(tools[i], intent), -i))
    kept = [t.name for t in tools]
    text = _block([lines[name] for name in kept])
    for index in order:
        if estimate_tokens(text) <= budget_tokens:
            break
        kept.remove(tools[index].name)
        dropped.append(tools[index].name)
        text = _block([lines[name] for name in kept]) if kept else "[]"
    return TrimmedCatalog(text=text, tools=kept, dropped=dropped, tokens=estimate_tokens(text))


def format_issues(issues: list[ValidationIssue]) -> str:
    """One line per issue: ``- <code> at <pointer> (step <id>): <message>``."""
    lines = []
    for issue in issues:
        step = f" (step {issue.step_id})" if issue.step_id else ""
        lines.append(f"- {issue.code.value} at {issue.path or '/'}{step}: {issue.message}")
    return "\n".join(lines) or "- (no issues were reported)"


def build_messages(
    template: PromptTemplate,
    request: PlanRequest,
    prior: list[PriorAttempt],
    budget_tokens: int,
) -> tuple[list[dict[str, str]], TrimmedCatalog]:
    """Build the chat messages for a request and its earlier failed attempts.

    Returns:
        ``[system, user]`` followed, for each prior attempt, by the assistant's raw response and
        a user message listing its issues; and the catalog as rendered.
    """
    catalog = trim_catalog(
        request.catalog, request.intent, budget_tokens, safe_mode=request.safe_mode
    )
    quoted_request = quote_json(
        {"intent": request.intent, "context": request.context, "safe_mode": request.safe_mode},
        indent=2,
    )
    messages = [
        {"role": "system", "content": render_text(template.system, {"catalog": catalog.text})},
        {"role": "user", "content": render_text(template.user, {"request": quoted_request})},
    ]
    for attempt in prior:
        messages.append({"role": "assistant", "content": attempt.raw_response or ""})
        issues = format_issues(attempt.issues)
        messages.append(
            {"role": "user", "content": render_text(template.repair, {"issues": issues})}
        )
    return messages, catalog
