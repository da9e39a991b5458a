"""Step references in arguments: parsing, walking and resolving (DESIGN §2, "References").

An argument value ``{"$ref": "<step_id>.output<json pointer>"}`` stands for part of an earlier
step's output. The pointer is an RFC 6901 JSON Pointer into that output: ``""`` is the whole
output, ``"/items/0/id"`` a value inside it. Step ids cannot contain a dot
(``STEP_ID_PATTERN``), so ``"fetch.output/body"`` splits unambiguously into the step ``fetch``
and the pointer ``/body``.

This module is pure and depends only on the standard library, so the executor can use the same
rules to resolve refs that the planner used to validate them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

REF_KEY = "$ref"
"""The key that marks an argument value as a reference."""

_STEP_ID = r"[a-z0-9][a-z0-9_-]{0,63}"  # shared_schemas.plan.STEP_ID_PATTERN, unanchored
_POINTER = r"(?:/(?:[^~/]|~[01])*)*"  # RFC 6901 §3: escapes are only ~0 and ~1
_REF_RE = re.compile(rf"(?P<step_id>{_STEP_ID})\.output(?P<pointer>{_POINTER})")
_POINTER_RE = re.compile(_POINTER)
_INDEX_RE = re.compile(r"0|[1-9][0-9]*")  # RFC 6901 §4: array indices have no leading zeros


class RefSyntaxError(ValueError):
    """A ``$ref`` object or a JSON Pointer is malformed; the message says what is wrong."""


class PointerNotFoundError(LookupError):
    """A JSON Pointer names a location the document does not have (RFC 6901 §7).

    Attributes:
        pointer: The whole pointer that was being resolved.
        at: The prefix of ``pointer`` up to and including the token that failed.
    """

    def __init__(self, pointer: str, at: str, reason: str) -> None:
        super().__init__(f"JSON pointer {pointer!r}: nothing at {at!r} ({reason})")
        self.pointer = pointer
        self.at = at


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed reference to part of a step's output.

    Attributes:
        step_id: Id of the step whose output is referred to.
        pointer: RFC 6901 JSON Pointer into that output; ``""`` is the whole output.
    """

    step_id: str
    pointer: str

    def __str__(self) -> str:
        return f"{self.step_id}.output{self.pointer}"


def escape_token(token: str | int) -> str:
    """Escape one JSON Pointer reference token (RFC 6901 §3: ``~`` to ``~0``, ``/`` to ``~1``)."""
    return str(token).replace("~", "~0").replace("/", "~1")


def join_pointer(base: str, *tokens: str | int) -> str:
    """Append ``tokens``, escaped, to the JSON Pointer ``base``.

    ``join_pointer("/steps", 2, "a/b")`` is ``"/steps/2/a~1b"``.
    """
    return base + "".join("/" + escape_token(t) for t in tokens)


def split_pointer(pointer: str) -> list[str]:
    """Split an RFC 6901 JSON Pointer into unescaped reference tokens; ``""`` gives ``[]``.

    Raises:
        RefSyntaxError: when the pointer is not empty and does not start with ``/``, or holds a
            ``~`` not followed by ``0`` or ``1``.
    """
    if _POINTER_RE.fullmatch(pointer) is None:
        raise RefSyntaxError(
            f"{pointer!r} is not an RFC 6901 JSON pointer "
            "(it must be empty or start with '/', and '~' must be followed by 0 or 1)"
        )
    if not pointer:
        return []
    # RFC 6901 §4: unescape ~1 before ~0, so that "~01" becomes "~1" and not "/".
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def parse_ref_string(text: str) -> Ref:
    """Parse ``"<step_id>.output<json pointer>"`` into a ``Ref``.

    Raises:
        RefSyntaxError: naming what is wrong; a dotted path such as ``"a.output.x"`` gets a hint
            that the pointer must start with ``/``.
    """
    match = _REF_RE.fullmatch(text)
    if match is not None:
        return Ref(step_id=match["step_id"], pointer=match["pointer"])
    step_id, dot, rest = text.partition(".")
    if not dot or not re.fullmatch(_STEP_ID, step_id):
        raise RefSyntaxError(
            f"ref {text!r} must be '<step_id>.output<json pointer>' with a step id matching "
            f"{_STEP_ID!r}"
        )
    if not rest.startswith("output"):
        raise RefSyntaxError(f"ref {text!r} must name '.output' after the step id")
    pointer = rest[len("output") :]
    if pointer.startswith("."):
        raise RefSyntaxError(
            f"ref {text!r}: the part after '.output' must be an RFC 6901 JSON pointer "
            f"starting with '/', e.g. {step_id + '.output/' + pointer[1:].replace('.', '/')!r}"
        )
    split_pointer(pointer)  # raises with the pointer's own problem
    raise RefSyntaxError(f"ref {text!r} is malformed")  # pragma: no cover - regex and split agree


def parse_ref(value: object) -> Ref | None:
    """Read an argument value as a reference.

    Returns:
        The ``Ref`` when ``value`` is a ``{"$ref": "<step_id>.output<pointer>"}`` object, and
        ``None`` when it is any other value (not a JSON object, or an object without ``$ref``).

    Raises:
        RefSyntaxError: when ``value`` is an object with a ``$ref`` key but is not a well-formed
            reference: the ``$ref`` is not a string, the string is malformed, or the object has
            keys besides ``$ref``.
    """
    if not isinstance(value, dict) or REF_KEY not in value:
        return None
    return _ref_from_object(value)


def _ref_from_object(value: dict[Any, Any]) -> Ref:
    if len(value) != 1:
        extra = sorted(str(k) for k in value if k != REF_KEY)
        raise RefSyntaxError(f"a $ref object must have no other keys; found {extra}")
    text = value[REF_KEY]
    if not isinstance(text, str):
        raise RefSyntaxError(f"$ref must be a string, not {type(text).__name__}")
    return parse_ref_string(text)


def iter_refs(args: Any, base: str = "") -> Iterator[tuple[str, Ref | RefSyntaxError]]:
    """Walk a JSON value depth-first and yield every ``$ref`` object in it, in document order.

    Args:
        args: A decoded JSON value (usually a step's ``args`` object).
        base: JSON Pointer prepended to every yielded pointer.

    Yields:
        ``(pointer, ref_or_error)``: the RFC 6901 pointer of the ``$ref`` object within
        ``args`` (``""`` when ``args`` itself is one) and the parsed ``Ref``, or the
        ``RefSyntaxError`` saying why it is malformed. A ``$ref`` object is not walked into.
    """
    # Entries are (parent pointer, key or None for the root, value); a pointer is built only
    # for objects and arrays, since most values are scalars and need none.
    stack: list[tuple[str, str | int | None, Any]] = [(base, None, args)]
    while stack:
        parent, key, value = stack.pop()
        if not isinstance(value, dict | list):
            continue
        pointer = parent if key is None else f"{parent}/{escape_token(key)}"
        if isinstance(value, list):
            stack.extend((pointer, i, v) for i, v in reversed(list(enumerate(value))))
        elif REF_KEY in value:
            item: Ref | RefSyntaxError
            try:
                item = _ref_from_object(value)
            except RefSyntaxError as exc:
                item = exc
            yield pointer, item
        else:
            stack.extend((pointer, k, v) for k, v in reversed(value.items()))


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """Return the value ``pointer`` names in ``doc`` (RFC 6901 §4).

    Objects are indexed by key; arrays by a decimal index without leading zeros. ``"-"`` (the
    element after the last) never exists, so it is not found.

    Raises:
        RefSyntaxError: when ``pointer`` is not an RFC 6901 JSON Pointer.
        PointerNotFoundError: when a token names a missing key, an index out of range or not a
            valid index, or descends into a value that is neither an object nor an array.
    """
    current = doc
    at = ""
    for token in split_pointer(pointer):
        at = join_pointer(at, token)
        if isinstance(current, dict):
            if token not in current:
                raise PointerNotFoundError(pointer, at, f"no key {token!r}")
            current = current[token]
        elif isinstance(current, list):
            if _INDEX_RE.fullmatch(token) is None:
                raise PointerNotFoundError(pointer, at, f"{token!r} is not an array index")
            index = int(token)
            if index >= len(current):
                raise PointerNotFoundError(
                    pointer, at, f"index {index} out of range for {len(current)} items"
                )
            current = current[index]
        else:
            raise PointerNotFoundError(
                pointer, at, f"cannot descend into a {type(current).__name__}"
            )
    return current
