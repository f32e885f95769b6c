"""`json_schema`: the reply parses as JSON and validates against a schema.

The schema is the verifier's own `schema`, else the request's `response_format` (a
``json_schema`` format's schema; ``json_object`` asks only for a JSON object). A fenced
```json block is unwrapped first, since models often fence JSON even when asked not to. The
schema itself is checked when the verifier is built, so a broken one is the client's 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from proxy.verifiers.base import Verdict, Verifier
from proxy.verifiers.basic import _Args

__all__ = ["JsonSchemaArgs", "JsonSchemaVerifier"]

_FENCE = re.compile(r"```[ \t]*(?:json)?[^\n]*\n(.*?)```", re.S | re.I)
_MAX_ERRORS = 3


class JsonSchemaArgs(_Args):
    # "schema" shadows a BaseModel attribute in pydantic; the wire name stays `schema`
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @field_validator("schema_")
    @classmethod
    def _valid_schema(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            _check_schema(v)
        return v


def _check_schema(schema: dict) -> None:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        raise ValueError(f"not a valid JSON Schema: {e.message}") from None


def _schema_of(response_format: Any) -> tuple[dict | None, bool]:
    """(schema, wants an object) from a request's `response_format`."""
    if not isinstance(response_format, Mapping):
        return None, False
    if response_format.get("type") == "json_schema":
        js = response_format.get("json_schema")
        schema = js.get("schema") if isinstance(js, Mapping) else None
        return (dict(schema) if isinstance(schema, Mapping) else None), False
    return None, response_format.get("type") == "json_object"


def parse_json(candidate: str) -> tuple[Any, str | None]:
    """(value, None) or (None, why it is not JSON)."""
    text = (candidate or "").strip()
    blocks = _FENCE.findall(text)
    if blocks:
        text = blocks[-1].strip()
    if not text:
        return None, "The reply is empty; it must be a JSON document."
    try:
        return json.loads(text), None
    except ValueError as e:
        return None, f"The reply is not valid JSON: {e}."


class JsonSchemaVerifier(Verifier):
    """Passes when the reply is JSON that validates. Score: 1 valid, 0.5 JSON with schema
    errors (best-of-n prefers well-formed output), 0 not JSON."""

    name = "json_schema"

    def __init__(self, args: JsonSchemaArgs) -> None:
        self.schema = args.schema_

    async def verify(self, candidate: str, context: Mapping[str, Any]) -> Verdict:
        import jsonschema

        schema, wants_object = (self.schema, False) if self.schema is not None else \
            _schema_of(context.get("response_format"))
        value, error = parse_json(candidate)
        if error is not None:
            return Verdict(False, 0.0, error)
        if wants_object and not isinstance(value, dict):
            return Verdict(False, 0.5, "The reply must be a JSON object.")
        if schema is None:
            return Verdict(True, 1.0, "")
        try:
            validator = jsonschema.validators.validator_for(schema)(schema)
            errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
        except jsonschema.SchemaError as e:  # a response_format schema nobody checked before
            return Verdict(False, 0.0, f"The schema to check against is invalid: {e.message}")
        if not errors:
            return Verdict(True, 1.0, "")
        lines = [f"- at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors[:_MAX_ERRORS]]
        more = f"\n- ... {len(errors) - _MAX_ERRORS} more" if len(errors) > _MAX_ERRORS else ""
        return Verdict(False, 0.5, "The JSON does not match the schema:\n" + "\n".join(lines) + more)
