"""Resolving ``$ref`` arguments and deriving a step's idempotency key (DESIGN §2, §6)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from shared_schemas.refs import (
    REF_KEY,
    PointerNotFoundError,
    RefSyntaxError,
    parse_ref,
    resolve_pointer,
)

from .transitions import Failure


class RefResolutionError(ValueError):
    """A ``$ref`` could not be resolved at run time."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.message)
        self.failure = failure


def resolve_args(value: Any, outputs: Mapping[str, Any], where: str = "") -> Any:
    """``value`` with every ``{"$ref": "<step>.output<pointer>"}`` replaced by that output part.

    ``outputs`` maps a succeeded step id to its output; a skipped step has none.

    Raises:
        RefResolutionError: for a ref to a step without output or a pointer that is absent.
    """
    if isinstance(value, dict):
        if REF_KEY in value:
            try:
                ref = parse_ref(value)
            except RefSyntaxError as exc:
                raise RefResolutionError(
                    Failure("ref_unresolved", f"{where or '/'}: {exc}", retryable=False)
                ) from exc
            assert ref is not None
            if ref.step_id not in outputs:
                message = f"{where or '/'}: step {ref.step_id!r} has no output"
                raise RefResolutionError(Failure("ref_unresolved", message, retryable=False))
            try:
                return resolve_pointer(outputs[ref.step_id], ref.pointer)
            except (PointerNotFoundError, RefSyntaxError) as exc:
                message = f"{where or '/'}: {ref} resolves to nothing ({exc})"
                raise RefResolutionError(
                    Failure("ref_unresolved", message, retryable=False)
                ) from exc
        return {k: resolve_args(v, outputs, f"{where}/{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_args(v, outputs, f"{where}/{i}") for i, v in enumerate(value)]
    return value


def idempotency_key(
    plan_id: UUID,
    step_id: str,
    resolved_args: Any,
    explicit: str | None,
    scope: str | None = None,
) -> str:
    """The key sent to the tool: the step's own, else a hash of plan, step, args and scope.

    The same logical call gets the same key on every attempt, after a crash, after a replan
    (the plan's version is left out on purpose: a revised plan repeating a call that may
    already have happened must not make it happen twice) and in a retry run. A fork is a
    deliberate new execution: its ``scope`` (its own run id) gives its calls new keys. A tool
    that deduplicates (draft-ietf-httpapi-idempotency-key-header) performs each call once.
    """
    if explicit:
        return explicit if scope is None else f"{explicit}-{scope}"
    # Sorted-key compact JSON is deterministic for the same values in every planexec process;
    # the key never leaves planexec's own derivation, so RFC 8785 is not needed here.
    material = json.dumps(
        [str(plan_id), step_id, resolved_args, scope],
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return "pxs-" + hashlib.sha256(material.encode()).hexdigest()[:48]
