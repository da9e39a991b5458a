"""Base model for every wire-contract type."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ContractModel(BaseModel):
    """A strict, immutable contract model.

    Unknown fields are refused (``extra="forbid"``) so that a typo or a mass-assignment attempt
    (OWASP API3) is an error instead of a silently dropped value. Attribute docstrings become
    the JSON Schema ``description`` of each field, and so the OpenAPI documentation.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
        ser_json_inf_nan="strings",
    )
