"""Tools imported from ``planexec/demo/assets/openapi/httpbin.yaml``, run against real httpbin."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from uuid import uuid4

import httpx2
import jsonschema
import pytest

from executor_service.tools.base import InvocationContext, ToolAdapter, ToolError
from executor_service.tools.openapi_import import import_openapi, load_openapi_file
from planexec.demo.httpbin_server import HttpbinServer
from tests.support.demo_catalog import demo_tools

HTTPBIN_YAML = (
    Path(__file__).parents[2] / "planexec" / "demo" / "assets" / "openapi" / "httpbin.yaml"
)


@pytest.fixture(scope="module")
def httpbin() -> Iterator[HttpbinServer]:
    with HttpbinServer() as server:
        yield server


@pytest.fixture
async def tools(httpbin: HttpbinServer) -> AsyncIterator[dict[str, ToolAdapter]]:
    async with httpx2.AsyncClient() as client:
        result = import_openapi(
            load_openapi_file(HTTPBIN_YAML),
            prefix="httpbin",
            base_url=httpbin.base_url,
            client=client,
        )
        assert result.warnings == []
        yield {tool.spec.name: tool for tool in result.tools}


def ctx(key: str = "key-1", timeout_s: float = 10.0) -> InvocationContext:
    return InvocationContext(
        run_id=uuid4(),
        step_id="s1",
        attempt=1,
        idempotency_key=key,
        timeout_s=timeout_s,
        tenant="t",
    )


def test_imported_specs_match_the_demo_catalog(tools: dict[str, ToolAdapter]) -> None:
    for demo in (t for t in demo_tools() if t.name.startswith("httpbin.")):
        spec = tools[demo.name].spec
        assert (spec.side_effect, spec.idempotent) == (demo.side_effect, demo.idempotent)
        assert spec.required_scopes == demo.required_scopes
        assert spec.default_timeout_s == demo.default_timeout_s
        assert spec.input_schema["required"] == demo.input_schema["required"]
        assert set(spec.input_schema["properties"]) == set(demo.input_schema["properties"])
        assert set(spec.output_schema.get("properties", {})) == set(
            demo.output_schema.get("properties", {})
        )
        assert spec.description == demo.description
    assert tools["httpbin.delete"].spec.side_effect == "destructive"


async def test_post_echoes_the_body_and_the_idempotency_key(tools: dict[str, ToolAdapter]) -> None:
    tool = tools["httpbin.post"]
    result = await tool.invoke({"body": {"order": 7, "items": ["a", "b"]}}, ctx("run-1:s1"))
    assert result.output["json"] == {"order": 7, "items": ["a", "b"]}
    assert result.output["headers"]["Idempotency-Key"] == "run-1:s1"
    assert result.output["headers"]["Content-Type"] == "application/json"
    jsonschema.validate(result.output, tool.spec.output_schema)


async def test_status_maps_5xx_to_retryable_and_4xx_to_final(tools: dict[str, ToolAdapter]) -> None:
    status = tools["httpbin.status"]
    with pytest.raises(ToolError) as server_error:
        await status.invoke({"codes": "503"}, ctx())
    assert (server_error.value.code, server_error.value.retryable) == ("http_retryable", True)
    assert server_error.value.details["status"] == 503
    with pytest.raises(ToolError) as client_error:
        await status.invoke({"codes": "400"}, ctx())
    assert (client_error.value.code, client_error.value.retryable) == ("http_4xx", False)
    assert (await status.invoke({"codes": "200"}, ctx())).output == {"text": ""}


async def test_a_path_argument_cannot_reach_another_route(tools: dict[str, ToolAdapter]) -> None:
    # Unencoded, "../get" would make /status/../get == /get, a 200 with an echo.
    with pytest.raises(ToolError) as caught:
        await tools["httpbin.status"].invoke({"codes": "../get"}, ctx())
    assert caught.value.details["status"] == 404
    assert caught.value.details["url"].endswith("/status/..%2Fget")


async def test_delay_within_and_beyond_the_timeout(tools: dict[str, ToolAdapter]) -> None:
    delay = tools["httpbin.delay"]
    done = await delay.invoke({"delay": 0}, ctx())
    assert done.output["url"].endswith("/delay/0")
    with pytest.raises(ToolError) as caught:
        await delay.invoke({"delay": 3}, ctx(timeout_s=0.5))
    assert (caught.value.code, caught.value.retryable) == ("timeout", True)
