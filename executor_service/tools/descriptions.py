"""Screening of tool descriptions taken from untrusted documents (RELIABILITY P4).

Imported tools (OpenAPI operations, MCP tools) come with descriptions written by whoever wrote
the document or runs the server. They are data, never instructions: the planner keeps and quotes
them, but one that matches ``INJECTION_PATTERNS`` is flagged (the importer warns) and cut to
``FLAGGED_DESCRIPTION_CHARS``.
"""

from __future__ import annotations

import re

FLAGGED_DESCRIPTION_CHARS = 1000
"""Length a flagged description is cut to, in characters."""
MAX_DESCRIPTION_CHARS = 4000
"""Length any description is cut to, in characters (``ToolSpec`` allows 8,192)."""
INJECTION_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(regex, re.IGNORECASE | re.MULTILINE))
    for label, regex in (
        # OWASP LLM01:2025 examples and AgentDojo's "important_instructions" attack text.
        (
            "ignore-previous",
            r"\b(ignore|disregard|forget)\b.{0,40}\b(previous|prior|above|earlier)\b",
        ),
        ("new-instructions", r"\bnew instructions\b"),
        ("system-prompt", r"\bsystem prompt\b"),
        ("you-must", r"\byou (must|should always|are required to)\b"),
        # Tag-wrapped directives: AgentDojo <INFORMATION>, Invariant Labs' MCP tool-poisoning
        # notice (2025) <IMPORTANT>, and the <instructions>/<system> forms.
        ("directive-tag", r"<\s*/?\s*(instructions?|system|important|information)\s*>"),
        # Invariant Labs: "Before using this tool, read ... Do not mention that ...".
        ("conceal", r"\bdo not (tell|mention|inform|reveal)\b"),
        ("before-using", r"\bbefore using this tool\b"),
        # AgentDojo's "system_message" attack and role markers that forge a prompt section.
        ("role-marker", r"(#{2,}\s*\(?\s*system[_ ]message|^\s*\[\s*(system|assistant)\s*\])"),
        # Closing or opening the planner prompt's own sections (Greshake et al., 2023).
        ("prompt-structure", r"<\s*/?\s*(request|catalog)\s*>"),
    )
)
"""Patterns of text that address the model instead of describing the tool (label, regex)."""
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\U000e0000-\U000e007f]"
)
"""Control, zero-width, bidi-override and Unicode tag characters (hidden-text smuggling)."""


def screen_description(text: str) -> tuple[str, str | None]:
    """Clean a description and say whether it looks like a prompt injection (RELIABILITY P4).

    Invisible characters (controls, zero-width, bidi overrides, Unicode tags) become spaces.

    Returns:
        ``(text, None)`` cut to ``MAX_DESCRIPTION_CHARS``, or ``(text, label)`` cut to
        ``FLAGGED_DESCRIPTION_CHARS`` when a pattern of ``INJECTION_PATTERNS`` matched.
    """
    cleaned = _INVISIBLE.sub(" ", text).strip()
    for label, pattern in INJECTION_PATTERNS:
        if pattern.search(cleaned):
            return cleaned[:FLAGGED_DESCRIPTION_CHARS], label
    return cleaned[:MAX_DESCRIPTION_CHARS], None
