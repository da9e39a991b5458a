"""Simulated tool outputs for dry runs: every shipped output schema, each keyword, the limits.

Every value is checked here with an independent ``Draft202012Validator`` (format checking on);
the formats the installed ``jsonschema`` cannot check (``date-time``, ``uri``) are parsed too.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor_service.domain import simulate
from executor_service.domain.simulate import MAX_DEPTH, SimulationError, simulated_output
from executor_service.tools.http_request import HttpRequestTool
from executor_service.tools.llm_complete import LlmCompleteTool
from executor_service.tools.mcp_import import TEXT_OUTPUT_SCHEMA, McpServerConfig, tool_spec
from executor_service.tools.netguard import NetPolicy
from executor_service.tools.noop import NoopTool
from executor_service.tools.openapi_import import import_openapi, load_openapi_file
from executor_service.tools.transform import TransformTool
from executor_service.tools.wait import WaitTool
from shared_schemas import ToolCatalog, ToolSpec
from tests.support.demo_catalog import demo_tools
from tests.support.recording_server import OPENAPI

ROOT = Path(__file__).resolve().parents[2]
HTTPBIN_OPENAPI = ROOT / "planexec" / "demo" / "assets" / "openapi" / "httpbin.yaml"
DEMO_CATALOG = ROOT / "planner_service" / "catalogs" / "demo.json"
SEED = "run-1/step-1"


def assert_conforms(schema: dict[str, Any], value: Any) -> None:
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    errors = [e.message for e in validator.iter_errors(value)]
    assert not errors, (schema, value, errors)


def simulate_checked(schema: dict[str, Any], seed: str = SEED) -> Any:
    """Simulate, check conformance and determinism (a second call, same seed: equal value)."""
    value = simulated_output(schema, seed=seed)
    assert_conforms(schema, value)
    assert simulated_output(schema, seed=seed) == value
    return value


# --- every output schema the project ships -------------------------------------------------


@pytest.fixture(scope="module")
async def shipped() -> AsyncIterator[dict[str, list[ToolSpec]]]:
    """Output schemas by source: built-ins (as the engine tests build them), the demo
    catalog, the planner's catalog file, and the OpenAPI imports of httpbin and the sink."""
    http = HttpRequestTool(NetPolicy())
    llm = LlmCompleteTool(base_url="http://127.0.0.1:9/v1", api_key="unused", model="m")
    sources: dict[str, list[ToolSpec]] = {
        "builtins": [t.spec for t in (NoopTool(), TransformTool(), WaitTool(), http, llm)],
        "demo_catalog": demo_tools(),
        "catalog_file": ToolCatalog.model_validate_json(DEMO_CATALOG.read_text()).tools,
    }
    async with httpx2.AsyncClient() as client:
        for name, document in (
            ("openapi_httpbin", load_openapi_file(HTTPBIN_OPENAPI)),
            ("openapi_recording_server", OPENAPI),
        ):
            result = import_openapi(
                document, prefix="api", base_url="http://127.0.0.1:9", client=client
            )
            sources[name] = [tool.spec for tool in result.tools]
    yield sources
    await http.aclose()
    await llm.aclose()


@pytest.mark.parametrize(
    ("source", "at_least"),
    [
        ("builtins", 5),
        ("demo_catalog", 20),
        ("catalog_file", 20),
        ("openapi_httpbin", 5),
        ("openapi_recording_server", 3),
    ],
)
def test_every_shipped_output_schema_gets_a_conforming_deterministic_output(
    shipped: dict[str, list[ToolSpec]], source: str, at_least: int
) -> None:
    specs = shipped[source]
    assert len(specs) >= at_least, [s.name for s in specs]
    for spec in specs:
        output = simulate_checked(spec.output_schema)
        if spec.output_schema.get("type") == "object":  # optional properties filled too
            assert set(spec.output_schema.get("properties", {})) <= set(output), spec.name


def test_shipped_outputs_have_what_downstream_refs_point_at(
    shipped: dict[str, list[ToolSpec]],
) -> None:
    by_name = {spec.name: spec for spec in shipped["builtins"] + shipped["openapi_httpbin"]}
    noop = simulate_checked(by_name["noop"].output_schema)
    assert noop["ok"] is True  # the const
    http = simulate_checked(by_name["http.request"].output_schema)
    assert isinstance(http["status"], int) and isinstance(http["headers"], dict)
    assert isinstance(http["url"], str) and isinstance(http["text"], str)
    echo = simulate_checked(by_name["api.post"].output_schema)  # #/components/schemas/Echo
    assert set(echo) == {"url", "args", "headers", "origin", "json", "data"}
    assert isinstance(simulate_checked(by_name["transform"].output_schema), str)  # any value


async def test_mcp_tools_with_and_without_an_output_schema() -> None:
    time_server = pytest.importorskip("mcp_server_time.server")
    git_server = pytest.importorskip("mcp_server_git.server")
    time_tools = await time_server.create_server("UTC").list_tools()
    git_tools = await git_server.create_server(None).list_tools()
    config = McpServerConfig(name="mcp", command=["unused"])
    specs = {spec.name: spec for spec in (tool_spec(config, tool)[0] for tool in time_tools)}
    convert = specs["mcp.convert_time"].output_schema
    assert convert["properties"]["source"] == {"$ref": "#/$defs/TimeResult"}  # a real $ref
    output = simulate_checked(convert)
    assert set(output["source"]) == {"timezone", "datetime", "day_of_week", "is_dst"}
    assert output["source"]["timezone"] != output["target"]["timezone"]  # by path
    simulate_checked(specs["mcp.get_current_time"].output_schema)
    assert len(git_tools) >= 10
    for tool in git_tools:
        spec = tool_spec(config, tool)[0]
        assert spec.output_schema == TEXT_OUTPUT_SCHEMA  # no outputSchema: text content
        assert isinstance(simulate_checked(spec.output_schema)["text"], str)


# --- determinism and seeds ------------------------------------------------------------------

SEEDED = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"},
        "name": {"type": "string"},
        "at": {"type": "string", "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["id", "name"],
}


def test_seeds_change_strings_and_ids_but_not_the_shape() -> None:
    first = simulate_checked(SEEDED, seed="run-1/a")
    second = simulate_checked(SEEDED, seed="run-1/b")
    assert set(first) == set(second) == {"id", "name", "at", "tags"}
    for key in ("id", "name", "at"):
        assert first[key] != second[key], key
    assert first["tags"][0] != second["tags"][0]
    assert first["name"] != first["tags"][0]  # different places, different strings


def test_the_same_schema_and_seed_give_the_same_value_across_copies() -> None:
    copy = json.loads(json.dumps(SEEDED))
    assert simulated_output(copy, seed="s") == simulated_output(SEEDED, seed="s")


# --- each keyword ---------------------------------------------------------------------------

PREFERENCES = [
    ({"type": "integer", "const": 4, "examples": [1], "default": 2, "enum": [3, 4]}, 4),
    ({"type": "integer", "examples": [1, 9], "default": 2, "enum": [1, 2, 3]}, 1),
    ({"type": "integer", "default": 2, "enum": [1, 2, 3]}, 2),
    ({"enum": ["b", "a"]}, "b"),
    ({"type": "integer", "minimum": 5, "examples": [1], "default": 7}, 7),  # the example fails
    ({"type": "string", "enum": [1, "x"]}, "x"),  # enum[0] fails the type
    ({"type": "string", "pattern": "^x{3}$", "examples": ["xxx"]}, "xxx"),
    ({"type": ["null", "integer"]}, 0),  # the non-null type first
    ({"type": "null"}, None),
    ({"anyOf": [{"type": "null"}, {"type": "boolean"}]}, True),  # null-only branch last
    ({"anyOf": [{"type": "string", "minLength": 3, "maxLength": 1}, {"const": 5}]}, 5),
    ({"oneOf": [{"type": "string"}, {"type": "string", "minLength": 1}]}, ""),  # exactly one
    ({"allOf": [{"type": "integer"}, {"minimum": 10}, {"maximum": 20}]}, 10),
    ({"type": "integer", "exclusiveMinimum": 5, "multipleOf": 4}, 8),
    ({"type": "integer", "maximum": -3}, -3),
    ({"type": "integer", "minimum": 0.5, "exclusiveMaximum": 3}, 1),
    ({"type": "integer", "multipleOf": 2.5}, 0),
    ({"type": "integer", "minimum": 1, "multipleOf": 2.5}, 5),
    ({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1}, 0.5),
    ({"type": "number", "multipleOf": 0.1, "minimum": 0.25, "maximum": 0.45}, 0.4),
    ({"type": "array", "maxItems": 0}, []),
    ({"type": "array", "prefixItems": [{"const": "a"}, {"type": "integer"}]}, ["a", 0]),
    ({"type": "array", "prefixItems": [{"const": 1}], "items": False, "minItems": 1}, [1]),
    (
        {"type": "array", "items": {"enum": [1, 2, 3]}, "minItems": 3, "uniqueItems": True},
        [1, 2, 3],
    ),
    ({"type": "object", "properties": {"a": {"const": 1}}, "maxProperties": 0}, {}),
]


@pytest.mark.parametrize(("schema", "expected"), PREFERENCES)
def test_preferences_and_bounds_pick_the_expected_value(
    schema: dict[str, Any], expected: Any
) -> None:
    value = simulate_checked(schema)
    assert value == expected and type(value) is type(expected)


def test_objects_fill_required_optional_and_additional_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string", "pattern": "^x{3}$"}},
        "required": ["a", "extra"],
        "additionalProperties": {"type": "boolean"},
    }
    # "b" is optional and its pattern cannot be simulated: it is left out, not an error.
    assert simulate_checked(schema) == {"a": 0, "extra": True}
    many = {"type": "object", "minProperties": 3, "additionalProperties": {"type": "integer"}}
    assert len(simulate_checked(many)) == 3
    named = {"type": "object", "propertyNames": {"pattern": "^[a-z]+$"}, "minProperties": 2}
    assert all(key.isalpha() for key in simulate_checked(named))
    patterned = {"patternProperties": {"^n_": {"type": "integer"}}, "required": ["n_1"]}
    assert simulate_checked(patterned) == {"n_1": 0}


def test_arrays_have_at_least_one_item_and_honour_item_bounds() -> None:
    assert len(simulate_checked({"type": "array"})) == 1  # so /0 resolves
    assert len(simulate_checked({"type": "array", "items": {"type": "integer"}})) == 1
    three = simulate_checked({"type": "array", "minItems": 3, "maxItems": 5})
    assert len(three) == 3
    unique = simulate_checked(
        {"type": "array", "items": {"type": "integer"}, "minItems": 4, "uniqueItems": True}
    )
    assert len(set(unique)) == 4
    contains = {"type": "array", "items": {"type": "integer"}, "contains": {"minimum": 7}}
    assert simulate_checked(contains) == [7]


@pytest.mark.parametrize(
    ("low", "high"), [(0, 0), (0, 3), (1, 1), (20, 20), (70, 200), (5, None), (None, 2)]
)
def test_string_lengths(low: int | None, high: int | None) -> None:
    schema: dict[str, Any] = {"type": "string"}
    if low is not None:
        schema["minLength"] = low
    if high is not None:
        schema["maxLength"] = high
    text = simulate_checked(schema)
    assert (low or 0) <= len(text) <= (high if high is not None else len(text))


def test_formats_are_real_values_of_their_kind() -> None:
    formats = ["date-time", "date", "time", "uri", "email", "uuid", "ipv4", "ipv6", "hostname"]
    schema = {
        "type": "object",
        "properties": {f: {"type": "string", "format": f} for f in formats},
        "required": formats,
    }
    value = simulate_checked(schema)
    assert datetime.fromisoformat(value["date-time"]).tzinfo is not None  # RFC 3339
    date.fromisoformat(value["date"])
    parts = urlsplit(value["uri"])
    assert parts.scheme == "https" and parts.netloc
    assert value["email"].count("@") == 1
    assert uuid.UUID(value["uuid"]).version == 4
    assert ipaddress.ip_address(value["ipv4"]).version == 4
    assert ipaddress.ip_address(value["ipv6"]).version == 6
    assert "." in value["hostname"]


def test_patterns_are_tested_against_simple_shapes() -> None:
    assert simulate_checked({"type": "string", "pattern": "^sim-"}).startswith("sim-")
    assert simulate_checked({"type": "string", "pattern": "^[0-9]+$"}).isdigit()
    hexa = simulate_checked({"type": "string", "pattern": "^[0-9a-f]{64}$"})
    assert len(hexa) == 64
    assert simulate_checked({"type": "string", "pattern": "^[a-z]{3,8}$"}).isalpha()
    both = {"allOf": [{"type": "string", "pattern": "^[0-9]"}, {"pattern": "[0-9]$"}]}
    assert simulate_checked(both).isdigit()


REFS = [
    {"$defs": {"A": {"type": "integer", "minimum": 3}}, "$ref": "#/$defs/A"},
    {"definitions": {"A": {"type": "integer", "minimum": 3}}, "$ref": "#/definitions/A"},
    {
        "components": {"schemas": {"A": {"minimum": 3, "type": "integer"}}},
        "$ref": "#/components/schemas/A",
    },
    {"$defs": {"a/b%c": {"type": "integer", "minimum": 3}}, "$ref": "#/$defs/a~1b%25c"},
    {
        "$defs": {"A": {"$ref": "#/$defs/B"}, "B": {"type": "integer", "minimum": 3}},
        "$ref": "#/$defs/A",
    },
    {"$ref": "#/$defs/A", "maximum": 3, "$defs": {"A": {"type": "integer", "minimum": 3}}},
]


@pytest.mark.parametrize("schema", REFS)
def test_local_refs_are_followed(schema: dict[str, Any]) -> None:
    assert simulate_checked(schema) == 3


def test_recursive_refs_are_expanded_once_and_minimally() -> None:
    tree = {
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["name"],
            }
        },
        "$ref": "#/$defs/Node",
    }
    value = simulate_checked(tree)
    assert set(value["children"][0]) == {"name"}  # the nested node: required only
    linked = {
        "$defs": {
            "L": {
                "type": "object",
                "properties": {"next": {"anyOf": [{"$ref": "#/$defs/L"}, {"type": "null"}]}},
                "required": ["next"],
            }
        },
        "$ref": "#/$defs/L",
    }
    assert simulate_checked(linked) == {"next": {"next": None}}


# --- what cannot be simulated ---------------------------------------------------------------

UNSATISFIABLE = [
    ({"type": "string", "minLength": 5, "maxLength": 2}, "no string of 5..2"),
    ({"not": {}}, "should not be valid"),
    ({"type": "string", "pattern": "^x{3}$"}, r"pattern '\^x\{3\}\$'"),
    ({"type": "string", "enum": [1, 2]}, "is not of type"),
    ({"type": "string", "const": 1}, "is not of type"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "no value in common"),
    ({"allOf": [{"const": 1}, {"const": 2}]}, "const 1 and const 2"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "no number"),
    ({"type": "integer", "exclusiveMinimum": 1, "exclusiveMaximum": 2}, "no number"),
    ({"type": "array", "minItems": 3, "maxItems": 1}, "no array of 3..1"),
    ({"type": "array", "items": {"type": "boolean"}, "minItems": 3, "uniqueItems": True}, "/2"),
    ({"type": "object", "required": ["a"], "additionalProperties": False}, "'a' is needed"),
    ({"$ref": "#/$defs/missing"}, "points at nothing"),
    ({"$ref": "#"}, "recurses"),
    (
        {
            "$defs": {"N": {"properties": {"n": {"$ref": "#/$defs/N"}}, "required": ["n"]}},
            "$ref": "#/$defs/N",
        },
        "recurses",
    ),
    ({"$ref": "https://example.com/schema.json"}, "only local JSON pointers"),
    ({"type": "strnig"}, "not a valid JSON Schema"),
    ({"type": "string", "pattern": "("}, "not a valid JSON Schema"),
    ({"type": "string", "minLength": simulate.MAX_STRING_LENGTH + 1}, "characters"),
    ({"type": "array", "minItems": simulate.MAX_ITEMS + 1}, "items fits"),
]


@pytest.mark.parametrize(("schema", "why"), UNSATISFIABLE)
def test_unsatisfiable_schemas_raise_simulation_error(schema: dict[str, Any], why: str) -> None:
    with pytest.raises(SimulationError, match=why):
        simulated_output(schema, seed=SEED)


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"x": schema}, "required": ["x"]}
    return schema


def test_nesting_is_bounded() -> None:
    value = simulate_checked(nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        value = value["x"]
    assert value == 0
    with pytest.raises(SimulationError, match=f"deeper than {MAX_DEPTH}"):
        simulated_output(nested(MAX_DEPTH + 1), seed=SEED)


def test_the_number_of_values_built_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    wide = {"type": "object", "required": [f"p{i}" for i in range(30)]}
    simulate_checked(wide)
    monkeypatch.setattr(simulate, "MAX_NODES", 20)
    with pytest.raises(SimulationError, match="more than 20 values"):
        simulated_output(wide, seed=SEED)


@pytest.fixture
def canary() -> Iterator[tuple[socket.socket, int]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(2.0)  # a client that does connect gives up in seconds
    try:
        yield listener, listener.getsockname()[1]
    finally:
        socket.setdefaulttimeout(previous)
        listener.close()


def test_references_out_of_the_schema_are_never_fetched(
    canary: tuple[socket.socket, int],
) -> None:
    listener, port = canary
    remote = f"http://127.0.0.1:{port}/schema.json"
    # The example must be validated, and validating it evaluates the remote $ref: a default
    # jsonschema validator would GET it. The example is refused and the value is built instead.
    schema = {"properties": {"enum": {"$ref": remote}}, "examples": [{"enum": 1}]}
    assert simulate_checked(schema) == {}
    with pytest.raises(SimulationError, match="only local"):
        simulated_output({"properties": {"a": {"$ref": remote}}}, seed=SEED)
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody connected


# --- property: random schemas from a grammar of supported keywords --------------------------

NAMES = st.sampled_from(["a", "b", "c", "id", "x/y", "t~1"])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.text("abc", max_size=3))
SAFE_PATTERNS = ["^sim-", "[0-9a-f]", "^[0-9]+$", "^[a-z]*$"]
FORMATS = ["date-time", "date", "uri", "email", "uuid", "ipv4", "ipv6", "hostname"]


@st.composite
def strings(draw: st.DrawFn) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    kind = draw(st.sampled_from(["plain", "length", "format", "pattern"]))
    if kind == "length":
        low = draw(st.integers(0, 40))
        schema["minLength"] = low
        schema["maxLength"] = low + draw(st.integers(0, 40))
    elif kind == "format":
        schema["format"] = draw(st.sampled_from(FORMATS))
    elif kind == "pattern":
        schema["pattern"] = draw(st.sampled_from(SAFE_PATTERNS))
    return schema


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, Any]:
    integer = draw(st.booleans())
    step = draw(st.sampled_from([None, 2, 3, 5] if integer else [None, 0.25, 0.5, 2]))
    schema: dict[str, Any] = {"type": "integer" if integer else "number"}
    width = (step or 1) * 3
    low = draw(st.integers(-100, 100) if integer else st.floats(-1e3, 1e3, allow_nan=False))
    high = low + width + draw(st.integers(0, 50))
    if draw(st.booleans()):
        schema["exclusiveMinimum" if draw(st.booleans()) else "minimum"] = low
    if draw(st.booleans()):
        schema["exclusiveMaximum" if draw(st.booleans()) else "maximum"] = high
    if step is not None:
        schema["multipleOf"] = step
    for keyword in ("examples", "default"):  # used only when they conform
        if draw(st.booleans()):
            value = draw(st.integers(-150, 150))
            schema[keyword] = [value] if keyword == "examples" else value
    return schema


LEAVES = st.one_of(
    strings(),
    numbers(),
    st.just({"type": "boolean"}),
    st.just({"type": "null"}),
    st.just({}),
    st.builds(lambda v: {"const": v}, SCALARS),
    st.lists(SCALARS, min_size=1, max_size=4, unique_by=json.dumps).map(lambda e: {"enum": e}),
)


def extend(children: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    objects = st.builds(
        lambda props, required, extra: {
            "type": "object",
            "properties": props,
            "required": sorted(set(required) & set(props)),
            **extra,
        },
        st.dictionaries(NAMES, children, max_size=4),
        st.lists(NAMES, max_size=4),
        st.sampled_from([{}, {"additionalProperties": False}, {"minProperties": 1}]),
    )
    arrays = st.builds(
        lambda items, low, more: {
            "type": "array",
            "items": items,
            "minItems": low,
            "maxItems": low + more,
        },
        children,
        st.integers(0, 3),
        st.integers(0, 3),
    )
    tuples = st.builds(
        lambda prefix, rest: {"type": "array", "prefixItems": prefix, **rest},
        st.lists(children, min_size=1, max_size=3),
        st.sampled_from([{}, {"items": False}, {"minItems": 4}]),
    )
    uniques = st.builds(
        lambda items, low: {"type": "array", "items": items, "minItems": low, "uniqueItems": True},
        st.sampled_from([{}, {"type": "string"}, {"type": "integer"}, {"format": "uuid"}]),
        st.integers(2, 5),
    )
    exclusive = st.permutations(
        [{"type": "boolean"}, {"type": "null"}, {"type": "string", "minLength": 1}]
    ).map(lambda branches: {"oneOf": branches})
    nullable = children.map(
        lambda s: (
            {**s, "type": [s["type"], "null"]}
            if s.get("type") in ("string", "integer", "number", "boolean", "object", "array")
            else {"anyOf": [s, {"type": "null"}]}
        )
    )
    disjoint = st.tuples(objects, objects).map(
        lambda pair: {
            "allOf": [
                {k: v for k, v in pair[0].items() if k != "additionalProperties"},
                {
                    "properties": {f"z{k}": v for k, v in pair[1]["properties"].items()},
                    "required": [f"z{k}" for k in pair[1]["required"]],
                },
            ]
        }
    )
    return st.one_of(
        objects,
        arrays,
        tuples,
        uniques,
        exclusive,
        nullable,
        disjoint,
        st.lists(children, min_size=1, max_size=3).map(lambda b: {"anyOf": b}),
    )


@st.composite
def schemas(draw: st.DrawFn) -> dict[str, Any]:
    """A schema whose ``$ref``s point into its root ``$defs`` (refs resolve from the root)."""
    defs = draw(
        st.dictionaries(
            st.sampled_from(["A", "B", "C"]),
            st.recursive(LEAVES, extend, max_leaves=4),
            min_size=1,
            max_size=3,
        )
    )
    refs = st.sampled_from(sorted(defs)).map(lambda name: {"$ref": f"#/$defs/{name}"})
    main = draw(st.recursive(st.one_of(LEAVES, refs), extend, max_leaves=10))
    return {**main, "$defs": defs}


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schema=schemas(), seed=st.text(max_size=8))
def test_random_schemas_of_supported_keywords_get_conforming_outputs(
    schema: dict[str, Any], seed: str
) -> None:
    simulate_checked(schema, seed)
