"""Tools from installed Python packages: entry points of group ``planexec.tools`` (DESIGN §3).

A package registers tools in its metadata, e.g. in ``pyproject.toml``::

    [project.entry-points."planexec.tools"]
    shout = "acme_tools:ShoutTool"      # a ToolAdapter class with a zero-argument constructor
    acme = "acme_tools:make_tools"      # a zero-argument factory returning a list of adapters
    ping = "acme_tools:PING"            # a ToolAdapter instance

Each entry point's object is a ``ToolAdapter`` (has a ``spec`` that is a ``ToolSpec`` and an
``async def invoke``), or a zero-argument callable returning one adapter or a list of them.
"""

from __future__ import annotations

import inspect
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from shared_schemas import ToolSpec

from .base import ToolAdapter


class ToolEntryPointError(ValueError):
    """An entry point that does not give tool adapters; the message names it."""


def load_entry_point_tools(group: str = "planexec.tools") -> list[ToolAdapter]:
    """Load the tool adapters that installed distributions register under ``group``.

    Entry points are loaded in name order.

    Returns:
        The adapters, in entry point order (a factory's list in its own order).

    Raises:
        ToolEntryPointError: An entry point cannot be imported, its factory fails or needs
            arguments, it gives something that is not a ``ToolAdapter``, or two adapters have
            the same tool name. The message names the entry point (``name = module:attr``).
    """
    adapters: list[ToolAdapter] = []
    owners: dict[str, str] = {}
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        for adapter in _adapters(entry, group):
            where = f"{entry.name} = {entry.value}"
            if adapter.spec.name in owners:
                raise ToolEntryPointError(
                    f"entry point {where} in {group}: tool {adapter.spec.name} is also given by "
                    f"{owners[adapter.spec.name]}"
                )
            owners[adapter.spec.name] = where
            adapters.append(adapter)
    return adapters


def _adapters(entry: EntryPoint, group: str) -> list[ToolAdapter]:
    where = f"entry point {entry.name} = {entry.value} in {group}"
    try:
        target = entry.load()
    except Exception as exc:
        raise ToolEntryPointError(f"{where}: cannot be loaded: {exc!r}") from exc
    if _is_adapter(target):
        return [target]
    if not callable(target):
        raise ToolEntryPointError(f"{where}: {target!r} is neither a ToolAdapter nor callable")
    try:
        produced = target()
    except Exception as exc:
        raise ToolEntryPointError(f"{where}: the factory failed: {exc!r}") from exc
    items = list(produced) if isinstance(produced, list | tuple) else [produced]
    for item in items:
        if not _is_adapter(item):
            raise ToolEntryPointError(f"{where}: gave {item!r}, which is not a ToolAdapter")
    return items


def _is_adapter(value: Any) -> bool:
    """True for an object with a ``ToolSpec`` ``spec`` and a coroutine ``invoke`` method."""
    if isinstance(value, type):
        return False  # a class is a factory; its ``spec`` is a property object
    spec = getattr(value, "spec", None)
    return isinstance(spec, ToolSpec) and inspect.iscoroutinefunction(
        getattr(value, "invoke", None)
    )
