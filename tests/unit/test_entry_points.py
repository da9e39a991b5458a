"""Tools from entry points: a fake distribution on ``sys.path``, found by importlib.metadata."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from uuid import uuid4

import pytest

from executor_service.tools.base import InvocationContext
from executor_service.tools.entry_points import ToolEntryPointError, load_entry_point_tools

MODULE = """
from shared_schemas import ToolSpec
from executor_service.tools.base import ToolResult


class EchoTool:
    def __init__(self, name="fake.echo"):
        self.spec = ToolSpec(name=name, description="Echoes its args.", idempotent=True)

    async def invoke(self, args, ctx):
        return ToolResult(output={"echo": args, "key": ctx.idempotency_key})


def make_pair():
    return [EchoTool("fake.first"), EchoTool("fake.second")]


INSTANCE = EchoTool("fake.instance")
NOT_A_TOOL = 42


def make_nothing():
    return object()


def needs_args(x):
    return EchoTool(x)
"""


def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str, entries: str) -> str:
    """Write a module and a dist-info with ``entries`` for ``group``; put both on sys.path."""
    module = f"fake_planexec_tools_{uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(MODULE, encoding="utf-8")
    dist_info = tmp_path / f"{module}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n", encoding="utf-8"
    )
    lines = textwrap.dedent(entries).strip().replace("MODULE", module)
    (dist_info / "entry_points.txt").write_text(f"[{group}]\n{lines}\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates the import caches
    monkeypatch.delitem(sys.modules, module, raising=False)
    return module


def ctx() -> InvocationContext:
    return InvocationContext(
        run_id=uuid4(), step_id="s1", attempt=1, idempotency_key="k-1", timeout_s=5, tenant="acme"
    )


async def test_instance_class_and_list_factory_are_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(
        tmp_path,
        monkeypatch,
        "planexec.tools",
        """
        a_class = MODULE:EchoTool
        b_pair = MODULE:make_pair
        c_instance = MODULE:INSTANCE
        """,
    )
    tools = {tool.spec.name: tool for tool in load_entry_point_tools()}
    assert {"fake.echo", "fake.first", "fake.second", "fake.instance"} <= set(tools)
    result = await tools["fake.second"].invoke({"x": 1}, ctx())
    assert result.output == {"echo": {"x": 1}, "key": "k-1"}


def test_a_group_without_entries_gives_no_tools() -> None:
    assert load_entry_point_tools(f"planexec.tools.none_{uuid4().hex}") == []


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("MODULE:NOT_A_TOOL", "neither a ToolAdapter nor callable"),
        ("MODULE:make_nothing", "which is not a ToolAdapter"),
        ("MODULE:needs_args", "the factory failed"),
        ("MODULE:missing_attribute", "cannot be loaded"),
        ("no_such_module_xyz:thing", "cannot be loaded"),
    ],
)
def test_a_bad_entry_point_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, message: str
) -> None:
    group = f"planexec.tools.bad_{uuid4().hex[:8]}"
    install(tmp_path, monkeypatch, group, f"good = MODULE:INSTANCE\nbroken = {target}")
    with pytest.raises(ToolEntryPointError, match=message) as caught:
        load_entry_point_tools(group)
    assert "entry point broken = " in str(caught.value)


def test_two_entry_points_giving_one_tool_name_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = f"planexec.tools.dup_{uuid4().hex[:8]}"
    install(tmp_path, monkeypatch, group, "one = MODULE:EchoTool\ntwo = MODULE:EchoTool")
    with pytest.raises(ToolEntryPointError, match=r"entry point two = .* fake\.echo is also given"):
        load_entry_point_tools(group)
