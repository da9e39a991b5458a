"""Simulated tool outputs for dry runs: a JSON value that a tool's ``output_schema`` accepts.

A dry run previews a plan without side effects: instead of calling a tool, the engine asks
``simulated_output`` for a value conforming to the tool's ``output_schema`` (JSON Schema draft
2020-12; ``{}`` accepts any value). Pure: no I/O, no clock, no ``random`` state; the same
(schema, seed) gives the same value, and the seed (e.g. ``"<run>/<step>"``) varies the
generated strings, so different steps get different ids.

At every schema node:

* ``const``, else ``examples[0]``, ``default``, then the ``enum`` members: the first the node
  accepts. Otherwise the value is built from ``type`` (non-null types first), or from the
  keywords present (a bare ``{}`` gives a string). Objects get their ``required`` properties
  and, when cheap, the optional ones, so downstream ``$ref``s into the output find values;
  arrays get ``minItems`` items, at least one when allowed, so pointers like ``/0`` resolve.
* ``allOf`` branches and local ``$ref`` targets (``#/$defs/...``, ``#/definitions/...``,
  ``#/components/schemas/...``: any RFC 6901 pointer into the schema itself) are merged into
  one node; for ``anyOf``/``oneOf`` the first branch that works is used (null-only branches
  last). A ``$ref`` recurses at most once on one path; recursive parts are built minimally.
* ``pattern`` is tested, not solved: a few string shapes (``sim-<hex>``, hex, digits,
  letters, empty) are tried with ``re.search``, as the validator does. A pattern none matches
  needs a ``const``, ``examples`` or ``default`` in the schema.

Every value is checked with ``jsonschema.Draft202012Validator`` (format checking on) at each
node and once more at the root before it is returned: conformance holds by construction and by
check. Only references into the schema itself are followed; nothing is fetched.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import math
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

import jsonschema
from jsonschema.exceptions import best_match
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.exceptions import Unresolvable

__all__ = ["MAX_DEPTH", "SimulationError", "simulated_output"]

MAX_DEPTH = 32
"""Deepest nesting simulated, of values and of ``$ref``/``allOf`` chains in one node."""
MAX_NODES = 20_000
"""Most values built for one output, discarded attempts included."""
MAX_ITEMS = 1_000
"""Most items in one array, and most properties added to reach ``minProperties``."""
MAX_STRING_LENGTH = 100_000
"""Longest simulated string, in characters."""
_MAX_ALTERNATIVES = 64  # anyOf/oneOf branch combinations tried at one node
_STRING_SHAPES = 5  # sim-<hex>, hex, digits, letters, empty
_MAX_TRIES = 16  # numbers tried against multipleOf; variants tried for one unique item
_DATA_KEYWORDS = frozenset({"const", "enum", "examples", "default"})
_COMPOSITION = frozenset({"$ref", "allOf", "anyOf", "oneOf"})
_LOWER_BOUNDS = frozenset({"minimum", "exclusiveMinimum", "minLength", "minItems"})
_LOWER_BOUNDS |= {"minProperties", "minContains"}
_UPPER_BOUNDS = frozenset({"maximum", "exclusiveMaximum", "maxLength", "maxItems"})
_UPPER_BOUNDS |= {"maxProperties", "maxContains"}
_SUBSCHEMAS = frozenset({"items", "additionalProperties", "contains", "propertyNames"})
_NUMBER_KEYWORDS = frozenset({"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"})
_NUMBER_KEYWORDS |= {"multipleOf"}
_ARRAY_KEYWORDS = frozenset({"items", "prefixItems", "minItems", "maxItems", "contains"})
_ARRAY_KEYWORDS |= {"uniqueItems"}
_OBJECT_KEYWORDS = frozenset({"properties", "required", "additionalProperties"})
_OBJECT_KEYWORDS |= {"patternProperties", "minProperties", "maxProperties", "propertyNames"}
_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
_URI = "https://example.com/sim/{h}"  # RFC 2606 reserved domain
_FORMATS = {
    "date-time": "{t:%Y-%m-%dT%H:%M:%SZ}",  # RFC 3339
    "date": "{t:%Y-%m-%d}",
    "time": "{t:%H:%M:%SZ}",
    "duration": "PT{s}S",  # ISO 8601
    "email": "sim-{h}@example.com",
    "idn-email": "sim-{h}@example.com",
    "hostname": "sim-{h}.example.com",
    "idn-hostname": "sim-{h}.example.com",
    "ipv4": "192.0.2.{n}",  # RFC 5737 documentation range
    "ipv6": "2001:db8::{s:x}",  # RFC 3849 documentation prefix
    "uri": _URI,
    "uri-reference": _URI,
    "iri": _URI,
    "iri-reference": _URI,
    "uri-template": _URI + "/{{id}}",
    "uuid": "{u}",
    "json-pointer": "/sim/{h}",
    "relative-json-pointer": "0",
    "regex": "^sim-{h}$",
    "byte": "{b}",  # OpenAPI: base64
}


class SimulationError(ValueError):
    """No conforming output could be made for the schema (the message says why)."""


def simulated_output(schema: dict[str, Any], *, seed: str) -> Any:
    """A JSON value that conforms to ``schema``; deterministic for (schema, seed).

    Args:
        schema: A JSON Schema (draft 2020-12) object, e.g. ``ToolSpec.output_schema``; ``{}``
            accepts any value. A ``$ref`` must be a local JSON pointer (``#/$defs/X``).
        seed: Varies the generated strings and ids, e.g. ``"<run id>/<step id>"``.

    Returns:
        A JSON value (``dict``, ``list``, ``str``, ``int``, ``float``, ``bool`` or ``None``)
        that ``Draft202012Validator(schema, format_checker=FORMAT_CHECKER)`` accepts; the same
        schema and seed always give an equal value.

    Raises:
        SimulationError: ``schema`` is not a valid draft 2020-12 schema or has a non-local
            ``$ref``, or no conforming value was found: contradictory keywords (``minLength``
            over ``maxLength``, ``{"not": {}}``), a ``pattern`` no simulated string matches,
            nesting deeper than ``MAX_DEPTH``, or a value over the ``MAX_*`` limits.
    """
    if not isinstance(schema, dict):
        raise SimulationError("the schema is not a JSON object")
    try:
        schema_json = json.dumps(schema, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SimulationError(f"the schema is not JSON: {exc}") from exc
    invalid = _schema_problem(schema_json)
    if invalid is not None:
        raise SimulationError(invalid)
    # An empty registry: a reference out of the schema is never retrieved.
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER, registry=Registry()
    )
    simulator = _Simulator(schema, seed, validator)
    try:
        value = simulator.value(schema, "", 0, ())
    except RecursionError as exc:
        raise SimulationError("the schema nests too deeply") from exc
    problem = simulator.problem(schema, value)
    if problem is not None:
        raise SimulationError(f"the simulated output does not conform: {problem}")
    return value


@functools.lru_cache(maxsize=256)
def _schema_problem(schema_json: str) -> str | None:
    """Why the schema cannot be used, or None; cached: a catalog's schemas recur every run."""
    schema = json.loads(schema_json)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)  # the costly part
        _local_refs_only(schema, 0)
    except jsonschema.SchemaError as exc:
        return f"not a valid JSON Schema (draft 2020-12): {exc.message}"
    except RecursionError:
        return "the schema nests too deeply"
    except SimulationError as exc:
        return str(exc)
    return None


def _local_refs_only(node: Any, depth: int) -> None:
    if depth > 4 * MAX_DEPTH:
        raise SimulationError(f"the schema nests more than {4 * MAX_DEPTH} levels")
    if isinstance(node, list):
        for item in node:
            _local_refs_only(item, depth + 1)
    elif isinstance(node, dict):
        for key in ("$ref", "$dynamicRef"):
            ref = node.get(key)
            if isinstance(ref, str) and ref != "#" and not ref.startswith("#/"):
                raise SimulationError(f"{key} {ref!r}: only local JSON pointers (#/...) are used")
        for key, value in node.items():
            if key not in _DATA_KEYWORDS:
                _local_refs_only(value, depth + 1)


class _Simulator:
    """Builds values for one (root schema, seed); ``at`` is the RFC 6901 path of a value."""

    def __init__(self, root: dict[str, Any], seed: str, validator: Validator) -> None:
        self.root = root
        self.seed = seed
        self.validator = validator
        self.nodes = 0

    def problem(self, schema: Any, value: Any) -> str | None:
        """The main reason ``value`` breaks ``schema`` (refs resolved in the root), or None."""
        try:
            error = best_match(self.validator.evolve(schema=schema).iter_errors(value))
        except (Unresolvable, RecursionError) as exc:
            return f"the schema cannot be evaluated: {exc}"
        return None if error is None else error.message

    def value(
        self, schema: Any, at: str, depth: int, refs: tuple[str, ...], variant: int = 0
    ) -> Any:
        """The first candidate value that conforms to ``schema``.

        ``refs`` are the ``$ref``s followed on the way here; ``variant`` > 0 asks for another
        value than the preferred one (unique array items).
        """
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise SimulationError(f"the schema needs more than {MAX_NODES} values")
        if depth > MAX_DEPTH:
            raise SimulationError(f"at {at}: nested deeper than {MAX_DEPTH} levels")
        first: str | None = None
        for build in self._candidates(schema, at, depth, refs, variant):
            try:
                candidate = build()
            except SimulationError as exc:
                first = first or str(exc)
                continue
            problem = self.problem(schema, candidate)
            if problem is None:
                return candidate
            first = first or f"at {at or '/'}: {_short(candidate)} does not conform: {problem}"
        raise SimulationError(first or f"at {at or '/'}: no branch of the schema can be built")

    def _candidates(
        self, schema: Any, at: str, depth: int, refs: tuple[str, ...], variant: int
    ) -> Iterator[Callable[[], Any]]:
        base, choices, refs = self._flatten(schema, refs, 0)
        alternatives = itertools.islice(self._choose(base, choices, refs), _MAX_ALTERNATIVES)
        for m, branch_refs in alternatives:
            yield from (functools.partial(_same_value, v) for v in _preferred(m, variant))
            if "const" in m or "enum" in m:
                continue  # nothing else is a member
            recursive = len(set(branch_refs)) < len(branch_refs)
            for kind in _kinds(m):
                yield from self._builders(kind, m, at, depth, branch_refs, variant, recursive)

    def _builders(
        self,
        kind: str,
        m: dict[str, Any],
        at: str,
        depth: int,
        refs: tuple[str, ...],
        variant: int,
        recursive: bool,
    ) -> Iterator[Callable[[], Any]]:
        if kind in ("object", "array"):
            build = self._object if kind == "object" else self._array
            yield functools.partial(build, m, at, depth, refs, recursive)
            if not recursive:  # a minimal one when the fuller one does not conform
                yield functools.partial(build, m, at, depth, refs, True)
        elif kind == "string":
            for choice in range(_STRING_SHAPES):
                yield functools.partial(self._string, m, at, variant, choice)
        elif kind in ("integer", "number"):
            yield functools.partial(self._number, m, at, kind == "integer", variant)
        else:
            yield functools.partial(_same_value, variant % 2 == 0 if kind == "boolean" else None)

    def _flatten(
        self, schema: Any, refs: tuple[str, ...], depth: int
    ) -> tuple[dict[str, Any], list[list[Any]], tuple[str, ...]]:
        """Merge ``$ref`` targets and ``allOf`` branches into one node.

        Returns the node, the ``anyOf``/``oneOf`` lists still to choose from, and ``refs``
        with the ``$ref``s followed.
        """
        if schema is True:
            return {}, [], refs
        if schema is False:
            raise SimulationError("a false schema accepts no value")
        if depth > MAX_DEPTH:
            raise SimulationError(f"$ref/allOf chains deeper than {MAX_DEPTH}")
        base = {k: v for k, v in schema.items() if k not in _COMPOSITION}
        choices = [list(schema[key]) for key in ("anyOf", "oneOf") if key in schema]
        parts = list(schema.get("allOf", []))
        if "$ref" in schema:
            ref = schema["$ref"]
            if refs.count(ref) >= 2:
                raise SimulationError(f"$ref {ref!r} recurses more than once on one path")
            refs = (*refs, ref)
            parts.insert(0, self._target(ref))
        for part in parts:
            part_base, part_choices, refs = self._flatten(part, refs, depth + 1)
            base = _merge(base, part_base)
            choices.extend(part_choices)
        return base, choices, refs

    def _choose(
        self, base: dict[str, Any], choices: list[list[Any]], refs: tuple[str, ...]
    ) -> Iterator[tuple[dict[str, Any], tuple[str, ...]]]:
        if not choices:
            yield base, refs
            return
        for branch in sorted(choices[0], key=_only_null):  # stable: else document order
            try:
                branch_base, more, branch_refs = self._flatten(branch, refs, 0)
                merged = _merge(base, branch_base)
            except SimulationError:
                continue
            yield from self._choose(merged, [*more, *choices[1:]], branch_refs)

    def _target(self, ref: str) -> Any:
        node: Any = self.root
        for raw in unquote(ref[1:]).split("/")[1:]:  # RFC 6901 pointer in a URI fragment
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise SimulationError(f"$ref {ref!r} points at nothing")
        if not isinstance(node, dict | bool):
            raise SimulationError(f"$ref {ref!r} does not point at a schema")
        return node

    def _object(
        self, m: dict[str, Any], at: str, depth: int, refs: tuple[str, ...], minimal: bool
    ) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def add(name: str) -> None:
            out[name] = self.value(_member(m, at, name), _child(at, name), depth + 1, refs)

        for name in dict.fromkeys(m.get("required", [])):
            add(name)
        limit = m.get("maxProperties", math.inf)
        for name in () if minimal else m.get("properties", {}):
            if name not in out and len(out) < limit and self.nodes < MAX_NODES // 2:
                try:
                    add(name)
                except SimulationError:
                    continue  # optional: left out
        names = {"allOf": [{"type": "string"}, m.get("propertyNames", True)]}
        for extra in range(MAX_ITEMS):
            if len(out) >= m.get("minProperties", 0):
                return out
            name = self.value(names, _child(at, "~names"), depth + 1, refs, extra)
            if name not in out:
                add(name)
        raise SimulationError(f"at {at or '/'}: minProperties cannot be reached")

    def _array(
        self, m: dict[str, Any], at: str, depth: int, refs: tuple[str, ...], minimal: bool
    ) -> list[Any]:
        prefix: list[Any] = m.get("prefixItems", [])
        items = m.get("items", True)
        low, high = m.get("minItems", 0), m.get("maxItems", MAX_ITEMS)
        if items is False:
            high = min(high, len(prefix))
        contains = m.get("contains")
        need = m.get("minContains", 1) if contains is not None else 0
        if max(low, need) > min(high, MAX_ITEMS):
            raise SimulationError(f"at {at or '/'}: no array of {low}..{high} items fits")
        count = min(max(low, need) if minimal else max(low, need, len(prefix), 1), high)
        out: list[Any] = []
        unique = bool(m.get("uniqueItems"))
        for i in range(count):
            schema = prefix[i] if i < len(prefix) else items
            schema = {"allOf": [schema, contains]} if i < need else schema
            for variant in range(i, i + _MAX_TRIES) if unique else (0,):  # until one differs
                item = self.value(schema, _child(at, str(i)), depth + 1, refs, variant)
                if not unique or self.problem({"uniqueItems": True}, [*out, item]) is None:
                    out.append(item)
                    break
            else:
                raise SimulationError(f"at {_child(at, str(i))}: no item unlike the earlier ones")
        return out

    def _string(self, m: dict[str, Any], at: str, variant: int, choice: int) -> str:
        """The ``choice``-th string shape that fits the length, format and patterns."""
        low, high = m.get("minLength", 0), min(m.get("maxLength", math.inf), MAX_STRING_LENGTH)
        if low > high:
            raise SimulationError(f"at {at or '/'}: no string of {low}..{high} characters")
        digest = hashlib.sha256(json.dumps([self.seed, at, variant]).encode()).digest()
        hexa = digest.hex()
        fmt = m.get("format")
        patterns = [m["pattern"]] if isinstance(m.get("pattern"), str) else m.get("pattern", [])
        if fmt in _FORMATS:  # a formatted string is never cut or padded
            shapes, fixed = [_formatted(_FORMATS[fmt], digest)], True
        else:
            digits = str(int.from_bytes(digest[:8], "big"))
            letters = hexa[:8].translate(str.maketrans("0123456789", "ghijklmnop"))
            shapes, fixed = [f"sim-{hexa[:8]}", hexa, digits, letters, ""], False
        fitting = []
        for shape in shapes:
            text = shape
            if not fixed:  # repeated up to minLength, cut at maxLength
                text = ((shape or hexa) * (low // len(shape or hexa) + 1))[: max(low, len(shape))]
                text = text[:high]
            if low <= len(text) <= high and all(re.search(p, text) for p in patterns):
                fitting.append(text)
        if len(fitting) > choice:
            return fitting[choice]
        if fitting:
            raise SimulationError(f"at {at or '/'}: no other string shape fits")
        if patterns:
            raise SimulationError(
                f"at {at or '/'}: no simulated string matches the pattern "
                f"{' and '.join(map(repr, patterns))}; give the schema a const, examples or default"
            )
        raise SimulationError(f"at {at or '/'}: no {fmt} string of {low}..{high} characters")

    def _number(self, m: dict[str, Any], at: str, integer: bool, variant: int) -> int | float:
        lo, lo_open = _bound(m, "minimum", "exclusiveMinimum", lower=True)
        hi, hi_open = _bound(m, "maximum", "exclusiveMaximum", lower=False)
        step = Fraction(str(m["multipleOf"])) if "multipleOf" in m else None
        if integer:  # the least common multiple of a step p/q (in lowest terms) and 1 is p
            step = Fraction(step.numerator) if step is not None else Fraction(1)
        points: Iterator[Fraction] = _lattice(lo, lo_open, hi, hi_open, step or Fraction(1))
        if step is None and lo is not None and hi is not None:  # no integer between? halves
            points = itertools.chain(points, (lo + (hi - lo) / 2**n for n in range(1, 64)))
        numeric = {k: v for k, v in m.items() if k in _NUMBER_KEYWORDS}
        found = 0
        for point in itertools.islice(points, variant + _MAX_TRIES):
            value = int(point) if point.denominator == 1 else float(point)
            if self.problem(numeric, value) is None:  # float rounding against multipleOf
                if found == variant:
                    return value
                found += 1
        raise SimulationError(f"at {at or '/'}: no number satisfies {_short(numeric)}")


def _member(m: dict[str, Any], at: str, name: str) -> Any:
    """The schema of property ``name``: the ``(pattern|additional)Properties`` that apply."""
    parts = [m["properties"][name]] if name in m.get("properties", {}) else []
    parts += [s for p, s in m.get("patternProperties", {}).items() if re.search(p, name)]
    if not parts:
        extra = m.get("additionalProperties", True)
        if extra is False:
            raise SimulationError(f"at {at or '/'}: property {name!r} is needed but not allowed")
        parts.append(extra)
    return parts[0] if len(parts) == 1 else {"allOf": parts}


def _preferred(m: dict[str, Any], variant: int) -> list[Any]:
    """``const``; else ``examples[0]`` and ``default`` (variant 0), then ``enum`` members."""
    if "const" in m:
        return [m["const"]]
    given = [m["examples"][0]] if m.get("examples") else []
    given += [m["default"]] if "default" in m else []
    members = list(m.get("enum", []))
    shift = variant % len(members) if members else 0
    return (given if variant == 0 else []) + members[shift:] + members[:shift]


def _kinds(m: dict[str, Any]) -> list[str]:
    """The types to build, non-null first; inferred from the keywords when none is given."""
    declared = m.get("type")
    if declared is not None:
        kinds = [declared] if isinstance(declared, str) else list(declared)
        return [k for k in kinds if k != "null"] + (["null"] if "null" in kinds else [])
    keys = set(m)
    if keys & _OBJECT_KEYWORDS:
        return ["object"]
    if keys & _ARRAY_KEYWORDS:
        return ["array"]
    if keys & _NUMBER_KEYWORDS:
        return ["number"]
    return ["string"]  # anything goes; a string is what most arguments take


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Both nodes' constraints in one node (``allOf``), for the keywords the builder reads.

    Other keywords keep the first node's value: what is built is still validated against the
    original schema.
    """
    out = dict(a)
    for key, theirs in b.items():
        if key not in out:
            out[key] = theirs
        elif key in _LOWER_BOUNDS:
            out[key] = max(out[key], theirs)
        elif key in _UPPER_BOUNDS:
            out[key] = min(out[key], theirs)
        elif key in _SUBSCHEMAS:
            out[key] = {"allOf": [out[key], theirs]}
        elif key in _COMBINE:
            out[key] = _COMBINE[key](out[key], theirs)
    return out


def _common_types(a: str | list[str], b: str | list[str]) -> list[str]:
    mine, theirs = ([a] if isinstance(a, str) else a), ([b] if isinstance(b, str) else b)
    common = [t for t in mine if t in theirs or (t == "integer" and "number" in theirs)]
    common += ["integer"] if "number" in mine and "integer" in theirs else []
    if not common:
        raise SimulationError(f"allOf: types {a!r} and {b!r} have no value in common")
    return list(dict.fromkeys(common))


def _same_const(mine: Any, theirs: Any) -> Any:
    if not _same(mine, theirs):
        raise SimulationError(f"allOf: const {_short(mine)} and const {_short(theirs)}")
    return mine


def _same_format(mine: str, theirs: str) -> str:
    if mine != theirs:
        raise SimulationError(f"allOf: formats {mine!r} and {theirs!r}")
    return mine


def _common_multiple(mine: float, theirs: float) -> float:
    x, y = Fraction(str(mine)), Fraction(str(theirs))
    lcm = Fraction(math.lcm(x.numerator, y.numerator), math.gcd(x.denominator, y.denominator))
    return int(lcm) if lcm.denominator == 1 else float(lcm)


def _both_maps(mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    both = {k: {"allOf": [mine[k], v]} if k in mine else v for k, v in theirs.items()}
    return {**mine, **both}


def _both_prefixes(mine: list[Any], theirs: list[Any]) -> list[Any]:
    return [{"allOf": [x, y]} for x, y in itertools.zip_longest(mine, theirs, fillvalue=True)]


_COMBINE: dict[str, Callable[[Any, Any], Any]] = {
    "type": _common_types,
    "const": _same_const,
    "format": _same_format,
    "multipleOf": _common_multiple,
    "properties": _both_maps,
    "patternProperties": _both_maps,
    "prefixItems": _both_prefixes,
    "required": lambda a, b: [*a, *(name for name in b if name not in a)],
    "enum": lambda a, b: [x for x in a if any(_same(x, y) for y in b)],
    "pattern": lambda a, b: [*([a] if isinstance(a, str) else a), b],
    "examples": lambda a, b: [*a, *b],
    "uniqueItems": lambda a, b: a or b,
}
"""How ``_merge`` combines two values of one keyword."""


def _bound(m: dict[str, Any], inclusive: str, exclusive: str, *, lower: bool) -> tuple[Any, bool]:
    """The stricter of an inclusive and an exclusive bound: (Fraction or None, exclusive)."""
    found = [(Fraction(m[inclusive]), False)] if inclusive in m else []
    found += [(Fraction(m[exclusive]), True)] if exclusive in m else []
    if not found:
        return None, False
    return max(found) if lower else min(found, key=lambda bound: (bound[0], not bound[1]))


def _lattice(
    lo: Fraction | None, lo_open: bool, hi: Fraction | None, hi_open: bool, step: Fraction
) -> Iterator[Fraction]:
    """Multiples of ``step`` within the bounds, nearest to zero first."""
    k_lo = None if lo is None else math.ceil(lo / step)
    if k_lo is not None and lo_open and k_lo * step == lo:
        k_lo += 1
    k_hi = None if hi is None else math.floor(hi / step)
    if k_hi is not None and hi_open and k_hi * step == hi:
        k_hi -= 1
    anchor = 0 if k_lo is None else max(0, k_lo)
    anchor = anchor if k_hi is None else min(anchor, k_hi)
    for distance in range(MAX_ITEMS):
        for k in dict.fromkeys((anchor + distance, anchor - distance)):
            if (k_lo is None or k >= k_lo) and (k_hi is None or k <= k_hi):
                yield k * step


def _formatted(template: str, digest: bytes) -> str:
    moment = _EPOCH + timedelta(seconds=int.from_bytes(digest[:4], "big") % (366 * 86_400))
    return template.format(
        h=digest.hex()[:8],
        t=moment,
        s=int.from_bytes(digest[4:6], "big") % 3600 + 1,
        n=digest[6] % 254 + 1,
        u=uuid.UUID(bytes=digest[:16], version=4),
        b=base64.b64encode(digest[:6]).decode("ascii"),
    )


def _only_null(branch: Any) -> bool:
    return isinstance(branch, dict) and (
        branch.get("type") in ("null", ["null"]) or ("const" in branch and branch["const"] is None)
    )


def _same_value(value: Any) -> Any:
    return value


def _same(x: Any, y: Any) -> bool:
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def _child(at: str, name: str) -> str:
    return f"{at}/{name.replace('~', '~0').replace('/', '~1')}"


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
