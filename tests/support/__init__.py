"""Test support: the demo tool catalog and a scripted OpenAI-compatible server."""

from __future__ import annotations

from .demo_catalog import demo_catalog, demo_tools
from .scripted_llm import ScriptedCompletion, ScriptedError, ScriptedLLM

__all__ = [
    "ScriptedCompletion",
    "ScriptedError",
    "ScriptedLLM",
    "demo_catalog",
    "demo_tools",
]
