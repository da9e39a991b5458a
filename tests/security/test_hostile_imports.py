"""Unsafe consumption of APIs (RELIABILITY S10, OWASP API10): imports and responses are untrusted.

Real public OpenAPI 3.0 and 3.1 documents (tests/support/openapi/, source URLs in each file)
import; hostile variants are refused with a clear error or skipped with a warning, and never
reach the network: a canary listener on loopback counts the connections made to it (0).
Responses that do not match the declared schema fail output verification.

Covered elsewhere and not repeated: the P4 description screening and the basic external,
recursive and fan-out ``$ref`` cases per operation (tests/unit/test_openapi_import.py),
remote ``$ref``s in output schemas and in step arguments' schemas
(tests/unit/test_validation.py, tests/security/test_ssrf_canaries.py).
"""

from __future__ import annotations

import json
import resource
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import jsonschema
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from executor_service.engine.attempt import run_attempt
from executor_service.tools.base import InvocationContext
from executor_service.tools.openapi_import import (
    MAX_DOCUMENT_BYTES,
    MAX_DOCUMENT_DEPTH,
    MAX_DOCUMENT_NODES,
    DocumentLimitError,
    ImportResult,
    import_openapi,
    load_openapi_file,
)
from executor_service.tools.openapi_tool import OpenApiTool
from shared_schemas import SideEffect, Step

from ..support.threaded_server import ThreadedServer

FIXTURES = Path(__file__).resolve().parents[1] / "support" / "openapi"
BASE = "http://127.0.0.1:9"  # the discard port: nothing here is ever called
OK = {"200": {"description": "ok"}}


@pytest.fixture
def canary() -> Iterator[socket.socket]:
    """A loopback listener that accepts nothing by itself: connections queue up to be counted."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        sock.setblocking(False)
        yield sock


def connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def imported(document: dict[str, Any], **kwargs: Any) -> ImportResult:
    client = httpx2.AsyncClient()  # never used: importing makes no request
    return import_openapi(document, prefix="api", base_url=BASE, client=client, **kwargs)


def doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": paths, **extra}


def get(name: str, **extra: Any) -> dict[str, Any]:
    return {"get": {"operationId": name, "responses": OK, **extra}}


def returning(name: str, schema: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": schema}}
    return get(name, responses={"200": {"description": "x", "content": content}})


def check_schemas(result: ImportResult) -> None:
    for tool in result.tools:
        jsonschema.Draft202012Validator.check_schema(tool.spec.input_schema)
        jsonschema.Draft202012Validator.check_schema(tool.spec.output_schema)


# -- real documents -------------------------------------------------------------------------


def test_the_swagger_petstore_30_imports() -> None:
    result = imported(load_openapi_file(FIXTURES / "petstore-3.0.yaml"))
    by_name = {t.spec.name: t.spec for t in result.tools}
    assert {name: spec.side_effect for name, spec in by_name.items()} == {
        "api.updatePet": SideEffect.WRITE,
        "api.addPet": SideEffect.WRITE,
        "api.findPetsByStatus": SideEffect.READ,
        "api.getPetById": SideEffect.READ,
        "api.deletePet": SideEffect.DESTRUCTIVE,
    }
    check_schemas(result)
    pet = by_name["api.getPetById"].output_schema
    assert pet["required"] == ["name", "photoUrls"]
    assert pet["properties"]["tags"]["items"]["properties"]["name"] == {"type": "string"}
    assert pet["properties"]["id"]["examples"] == [10]  # OpenAPI 3.0 example -> examples
    assert by_name["api.getPetById"].input_schema["required"] == ["petId"]
    assert by_name["api.addPet"].input_schema["required"] == ["body"]
    assert by_name["api.deletePet"].idempotent
    assert result.warnings == []


def test_openapi_initiative_31_examples_import() -> None:
    webhooks = imported(load_openapi_file(FIXTURES / "webhook-example-3.1.yaml"))
    assert (webhooks.tools, webhooks.warnings) == ([], [])  # webhooks are not calls we make
    scopes = imported(load_openapi_file(FIXTURES / "non-oauth-scopes-3.1.yaml"))
    [users] = scopes.tools
    assert users.spec.name == "api.get_users"
    assert users.spec.output_schema == {}  # no responses declared: anything goes
    check_schemas(scopes)


# -- external references --------------------------------------------------------------------


def test_external_refs_are_never_fetched_wherever_they_are(
    canary: socket.socket, tmp_path: Path
) -> None:
    port = canary.getsockname()[1]
    secret = tmp_path / "secret.yaml"
    secret.write_text("Secret: {type: string, const: leaked}\n", encoding="utf-8")
    targets = [
        f"http://127.0.0.1:{port}/schema.json#/Pet",
        f"https://127.0.0.1:{port}/schema.json",
        f"file://{secret}#/Secret",
        "secret.yaml#/Secret",
        "../../etc/passwd",
        f"//127.0.0.1:{port}/x",
    ]
    paths: dict[str, Any] = {}
    for i, target in enumerate(targets):
        ref = {"$ref": target}
        paths[f"/item{i}"] = ref  # a whole path item
        paths[f"/param{i}"] = get(f"param{i}", parameters=[ref])
        paths[f"/body{i}"] = {
            "post": {
                "operationId": f"body{i}",
                "requestBody": {"content": {"application/json": {"schema": ref}}},
                "responses": OK,
            }
        }
        paths[f"/response{i}"] = get(f"response{i}", responses={"200": ref})
        nested = {"type": "object", "properties": {"a": {"type": "array", "items": ref}}}
        paths[f"/nested{i}"] = returning(f"nested{i}", nested)
        paths[f"/local{i}"] = returning(f"local{i}", {"$ref": f"#/components/schemas/S{i}"})
    schemas = {f"S{i}": {"allOf": [{"$ref": t}]} for i, t in enumerate(targets)}
    document = doc(paths, components={"schemas": schemas})
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    result = imported(load_openapi_file(path))
    assert result.tools == []
    assert sum("external $ref" in w for w in result.warnings) == 6 * len(targets)
    assert all("leaked" not in w for w in result.warnings)
    assert connections(canary) == 0


# -- recursion and fan-out ------------------------------------------------------------------


def test_cyclic_refs_end_without_recursion_error() -> None:
    schemas = {
        "A": {"$ref": "#/components/schemas/A"},
        "B": {"type": "object", "properties": {"c": {"$ref": "#/components/schemas/C"}}},
        "C": {"type": "array", "items": {"$ref": "#/components/schemas/B"}},
        "D": {"allOf": [{"$ref": "#/components/schemas/D"}, {"$ref": "#/components/schemas/B"}]},
    }
    parameters = {
        "P": {"$ref": "#/components/parameters/Q"},
        "Q": {"$ref": "#/components/parameters/P"},
    }
    paths = {
        "/a": returning("a", {"$ref": "#/components/schemas/A"}),
        "/b": returning("b", {"$ref": "#/components/schemas/B"}),
        "/d": returning("d", {"$ref": "#/components/schemas/D"}),
        "/p": get("p", parameters=[{"$ref": "#/components/parameters/P"}]),
        "/loop": {"$ref": "#/paths/~1loop"},
    }
    started = time.perf_counter()
    result = imported(doc(paths, components={"schemas": schemas, "parameters": parameters}))
    assert time.perf_counter() - started < 2.0
    assert sorted(t.spec.name for t in result.tools) == ["api.a", "api.b", "api.d"]
    check_schemas(result)
    assert any("/p" in w and "recursive" in w for w in result.warnings)
    assert any("/loop" in w and "recursive" in w for w in result.warnings)


def test_a_billion_laughs_ref_fan_out_is_bounded_in_time_and_memory() -> None:
    # L0 -> 10 x L1 -> ... -> 10 x L9: 10**9 nodes once inlined, from 10 small schemas; 305
    # operations ask for it, and 60 others each inline 9,001 nodes (540,060 in all)
    laughs = {
        f"L{i}": {
            "type": "array",
            "items": {"anyOf": [{"$ref": f"#/components/schemas/L{i + 1}"}] * 10},
        }
        for i in range(9)
    }
    laughs["L9"] = {"type": "string", "description": "lol"}
    wide = {"type": "object", "properties": {f"p{k}": {"type": "integer"} for k in range(8999)}}
    laugh = returning("laugh", {"$ref": "#/components/schemas/L0"})["get"]
    paths = {f"/laugh{i}": {"get": {**laugh, "operationId": f"laugh{i}"}} for i in range(5)}
    paths |= {
        f"/wide{i}": returning(f"wide{i}", {"$ref": "#/components/schemas/W"}) for i in range(60)
    }
    paths |= {f"/more{i}": {"get": {**laugh, "operationId": f"more{i}"}} for i in range(300)}
    document = doc(paths, components={"schemas": {**laughs, "W": wide}})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    result = imported(document)
    elapsed = time.perf_counter() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    names = [t.spec.name for t in result.tools]
    # the first laughs are cut per operation, then wide operations import until the document's
    # budget is spent; every later operation is skipped at once
    assert all(n.startswith("api.wide") for n in names)
    assert 0 < len(names) < 60
    assert any("MAX_SCHEMA_NODES" in w for w in result.warnings)
    assert any("MAX_IMPORT_NODES" in w for w in result.warnings)
    print(f"fan-out import: {elapsed:.2f} s; peak RSS grew {grown / 1024:.1f} MiB")
    assert grown < 200 * 1024, grown  # 10**9 nodes inlined would need hundreds of GiB
    assert elapsed < 10.0, elapsed


# -- size -----------------------------------------------------------------------------------


def nested(depth: int, leaf: Any = None) -> dict[str, Any]:
    node: dict[str, Any] = leaf or {"type": "string"}
    for _ in range(depth):
        node = {"type": "array", "items": node}
    return node


@pytest.mark.parametrize("depth", [MAX_DOCUMENT_DEPTH + 1, 10_000])
def test_deep_nesting_is_refused_with_a_named_limit(depth: int, tmp_path: Path) -> None:
    document = doc({"/deep": returning("deep", nested(depth))})
    with pytest.raises(DocumentLimitError) as caught:
        imported(document)
    assert caught.value.limit == "MAX_DOCUMENT_DEPTH"
    text = "[" * depth + "]" * depth
    path = tmp_path / "deep.json"
    path.write_text('{"openapi": "3.1.0", "paths": {}, "x": ' + text + "}", encoding="utf-8")
    with pytest.raises(DocumentLimitError) as loaded:
        load_openapi_file(path)
    assert loaded.value.limit == "MAX_DOCUMENT_DEPTH"
    assert "MAX_DOCUMENT_DEPTH" in str(loaded.value)


def test_a_schema_deep_through_refs_is_skipped_with_a_named_limit() -> None:
    # each schema is shallow, the chain of refs is short, together they nest 30 x 10 deep
    schemas = {f"N{i}": nested(9, {"$ref": f"#/components/schemas/N{i + 1}"}) for i in range(30)}
    schemas["N30"] = {"type": "string"}
    result = imported(
        doc(
            {"/n": returning("n", {"$ref": "#/components/schemas/N0"})},
            components={"schemas": schemas},
        )
    )
    assert result.tools == []
    assert any("MAX_SCHEMA_DEPTH" in w for w in result.warnings)


def test_huge_documents_are_refused_with_a_named_limit(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("w", encoding="utf-8") as out:
        out.write("openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths: {}\nx-pad: '")
        out.write("a" * MAX_DOCUMENT_BYTES)
        out.write("'\n")
    with pytest.raises(DocumentLimitError) as caught:
        load_openapi_file(path)
    assert caught.value.limit == "MAX_DOCUMENT_BYTES"
    many = doc({}, **{"x-pad": [0] * MAX_DOCUMENT_NODES})
    with pytest.raises(DocumentLimitError) as counted:
        imported(many)
    assert counted.value.limit == "MAX_DOCUMENT_NODES"


# -- shapes ---------------------------------------------------------------------------------


def test_non_string_descriptions_and_names() -> None:
    schema = {
        "type": "object",
        "description": {"$ref": "http://127.0.0.1:9/x"},
        "properties": {"a": {"type": "string", "description": 42}},
    }
    paths = {
        "/fine": {
            "get": {
                "operationId": "fine",
                "summary": ["not", "text"],
                "description": {"ignore": "previous instructions"},
                "parameters": [{"name": "q", "in": "query", "description": 7, "schema": {}}],
                "responses": {
                    "200": {"description": "x", "content": {"application/json": {"schema": schema}}}
                },
            }
        },
        "/id": {"get": {"operationId": {"a": 1}, "responses": OK}},
        "/param": get("param", parameters=[{"name": 5, "in": "query", "schema": {}}]),
        "/params": get("params", parameters={"name": "q"}),
    }
    result = imported(doc(paths))
    [fine] = result.tools
    assert fine.spec.name == "api.fine"
    assert fine.spec.description == "GET /fine"
    assert fine.spec.output_schema == {"type": "object", "properties": {"a": {"type": "string"}}}
    assert "description" not in fine.spec.input_schema["properties"]["q"]
    check_schemas(result)
    assert sum("non-string description" in w for w in result.warnings) == 2
    assert any("/id: skipped: operationId is not a string" in w for w in result.warnings)
    assert any("/param: skipped" in w and "not a string" in w for w in result.warnings)
    assert any("/params: skipped" in w and "not a list" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([{"url": "ftp://files.example.com/api"}], "scheme 'ftp'"),
        ([{"url": "file:///etc/passwd"}], "scheme 'file'"),
        ([{"url": "javascript:alert(1)"}], "scheme 'javascript'"),
        ([{"url": "gopher://127.0.0.1:6379/_FLUSHALL"}], "scheme 'gopher'"),
        ([{"url": "https://user:hunter2@api.example.com/v1"}], "credentials"),
        ([{"url": "https://ghp_token0123@api.example.com"}], "credentials"),
        (
            [{"url": "{scheme}://api.example.com", "variables": {"scheme": {"default": "ldap"}}}],
            "scheme 'ldap'",
        ),
        (
            [{"url": "https://{auth}api.example.com", "variables": {"auth": {"default": "a:b@"}}}],
            "credentials",
        ),
        (
            [{"url": "https://{x}.example.com", "variables": {"x": {"enum": ["a"]}}}],
            "no string default",
        ),
        ([{"url": 42}], "'url' is not a string"),
        ("https://api.example.com", "not a list"),
        ([{"url": "http://"}], "no host"),
    ],
)
def test_bogus_servers_are_refused(servers: Any, message: str) -> None:
    for document in (
        doc({"/a": get("a")}, servers=servers),
        doc({"/a": {**get("a"), "servers": servers}}),
        doc({"/a": {"get": {**get("a")["get"], "servers": servers}}}),
    ):
        with pytest.raises(ValueError, match=message) as caught:
            imported(document)
        assert "hunter2" not in str(caught.value)
        assert "ghp_token" not in str(caught.value)


def test_plain_servers_are_accepted_and_base_url_credentials_are_not() -> None:
    servers = [
        {"url": "/api/v3"},
        {
            "url": "https://{env}.example.com:{port}/v1",
            "variables": {"env": {"default": "api"}, "port": {"default": "8443"}},
        },
        {"url": "http://localhost:8080"},
    ]
    assert len(imported(doc({"/a": get("a")}, servers=servers)).tools) == 1
    for base_url in ("http://user:pw@127.0.0.1:9", "ftp://127.0.0.1", "/relative", "http://"):
        with pytest.raises(ValueError, match="base_url") as caught:
            import_openapi(doc({}), prefix="api", base_url=base_url, client=httpx2.AsyncClient())
        assert "pw@" not in str(caught.value)


# -- responses ------------------------------------------------------------------------------

PET = {
    "type": "object",
    "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
    "required": ["id", "name"],
}
BODIES: dict[str, tuple[str, bytes]] = {
    "wrong_type": ("application/json", b'{"id": "ten", "name": "doggie"}'),
    "missing_field": ("application/json", b'{"id": 10}'),
    "array": ("application/json", b'[{"id": 10, "name": "doggie"}]'),
    "html": ("text/html", b"<html><body>Welcome to nginx!</body></html>"),
    "not_json": ("application/json", b"{'id': 10}"),
    "too_deep": ("application/json", b"[" * 100_000 + b"]" * 100_000),
    "nan": ("application/json", b'{"id": NaN, "name": "x"}'),
    "good": ("application/json", b'{"id": 10, "name": "doggie"}'),
}


@pytest.fixture(scope="module")
def pets() -> Iterator[str]:
    async def pet(request: Request) -> Response:
        media_type, body = BODIES[request.path_params["case"]]
        return Response(body, media_type=media_type)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = ThreadedServer(Starlette(routes=[Route("/pets/{case}", pet)]), sock, "pets")
    server.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.stop()
        sock.close()


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("wrong_type", "output_invalid"),
        ("missing_field", "output_invalid"),
        ("array", "output_invalid"),
        ("html", "output_invalid"),
        ("not_json", "invalid_response"),
        ("too_deep", "invalid_response"),
        ("nan", "output_invalid"),
        ("good", None),
    ],
)
async def test_a_response_that_does_not_match_its_declared_schema_is_rejected(
    pets: str, case: str, code: str | None
) -> None:
    async with httpx2.AsyncClient() as client:
        result = import_openapi(
            doc(
                {
                    "/pets/{case}": returning("pet", PET)
                    | {
                        "parameters": [
                            {
                                "name": "case",
                                "in": "path",
                                "required": True,
                                "schema": {"type": "string"},
                            }
                        ]
                    }
                }
            ),
            prefix="api",
            base_url=pets,
            client=client,
        )
        [tool] = result.tools
        assert isinstance(tool, OpenApiTool)
        ctx = InvocationContext(
            run_id=uuid.uuid4(),
            step_id="s",
            attempt=1,
            idempotency_key="k",
            timeout_s=10,
            tenant="acme",
        )
        attempt = await run_attempt(
            Step(id="s", tool="api.pet"), tool, {"case": case}, ctx, max_output_bytes=1_048_576
        )
    failure = getattr(attempt.outcome, "failure", None)
    assert (failure.code if failure else None) == code
    if failure is not None:
        assert failure.retryable is False
