"""Tool-call arguments from a tool's parameters schema: valid ones, schema-breaking ones, broken JSON.

Valid arguments are ``values.SchemaValues`` examples (plausible values from the prompt first); the
faults ``schema_invalid_args`` and ``bad_json_args`` use the other two.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_qwen.testing.values import SchemaValues


def tool_arguments(parameters: Mapping[str, Any] | None, text: str) -> str:
    """A JSON arguments string for a tool with ``parameters``, derived from ``text``."""
    schema = parameters if parameters else {"type": "object", "properties": {}}
    value = SchemaValues(schema, text).example()
    return json.dumps(value, ensure_ascii=False)


def invalid_arguments(parameters: Mapping[str, Any] | None, text: str) -> str:
    """JSON arguments that break ``parameters``: a required field missing, a wrong type, or not an object."""
    schema = parameters if parameters else {"type": "object", "properties": {}}
    values = SchemaValues(schema, text)
    valid = values.example()
    candidates: list[Any] = []
    if isinstance(valid, dict):
        for name in schema.get("required", []):
            candidates.append({k: v for k, v in valid.items() if k != name})
        for name, current in valid.items():
            candidates.append({**valid, name: 12345 if isinstance(current, str) else "not-a-valid-value"})
    candidates += [[], "not an object", None]
    for candidate in candidates:
        if not values.is_valid(candidate):
            return json.dumps(candidate, ensure_ascii=False)
    return json.dumps([valid], ensure_ascii=False)  # the schema accepts anything: send a list anyway


def broken_json(arguments: str) -> str:
    """``arguments`` made unparsable the way models break JSON (a trailing comma before the brace)."""
    cut = arguments.rstrip()
    broken = cut[:-1].rstrip() + ",}" if cut.endswith("}") else cut + ","
    try:
        json.loads(broken)
    except ValueError:
        return broken
    return "{" + broken
