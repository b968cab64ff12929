"""Validation against the published OpenAPI schema of the chat-completions endpoint (qwen3.7-max).

``request_errors(body)`` checks a request body against the shipped schema plus the bounds that
docs/protocol.md ("Request body") documents and the schema leaves out (at most 4 stop sequences,
128 tools, tool name pattern, ``top_logprobs`` only with ``logprobs``, ``reasoning.effort`` xor
``reasoning.max_tokens``).
For ``alibaba/qwen3.7-max`` an unknown top-level field is an error: the gateway would drop it
silently, so a test is the only place to catch it. Other ``alibaba/qwen*`` ids accept extra fields
(``response_format`` and other vendor fields) and any model string.

``response_errors`` / ``chunk_errors`` check answers against the response schemas of the same file
(the conformance tests use them). The stream schema is stricter than any real stream (every delta
would need ``role`` and ``content``, every chunk a non-null ``finish_reason``, every tool-call
fragment its id and name), so ``chunk_errors`` relaxes exactly those, as docs/protocol.md
("Streaming") describes.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

SCHEMA_FILE = "qwen3.7-max.openapi.json"
SCHEMA_MODEL = "alibaba/qwen3.7-max"
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The shipped OpenAPI document (read once)."""
    text = resources.files("airflow_provider_qwen.testing").joinpath("schemas", SCHEMA_FILE).read_text()
    return json.loads(text)


def _operation() -> dict[str, Any]:
    return openapi_document()["paths"]["/v1/chat/completions"]["post"]


def to_json_schema(node: Any, *, in_union: bool = False) -> Any:
    """OpenAPI 3.0 schema object -> JSON Schema (draft 4): ``nullable`` becomes a ``null`` type.

    A bare ``{"nullable": true}`` means "or null" as a union branch and "anything" elsewhere.
    """
    if isinstance(node, list):
        return [to_json_schema(item, in_union=in_union) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in {"example", "nullable"}:
            continue
        if key in {"anyOf", "oneOf"}:
            out[key] = [to_json_schema(item, in_union=True) for item in value]
        elif key in {"properties", "patternProperties"}:
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = to_json_schema(value)
    if node.get("nullable"):
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"] if "null" not in types else types
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        elif in_union and not any(k in out for k in ("anyOf", "oneOf", "allOf", "enum", "properties")):
            return {"type": "null"}
    return out


def _validator(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft4Validator

    return Draft4Validator(schema)


@lru_cache(maxsize=2)
def _request_validator(strict_model: bool) -> Any:
    schema = to_json_schema(_operation()["requestBody"]["content"]["application/json"]["schema"])
    if not strict_model:
        schema = copy.deepcopy(schema)
        schema["properties"]["model"] = {"type": "string", "minLength": 1}
    return _validator(schema)


@lru_cache(maxsize=1)
def request_fields() -> frozenset[str]:
    """Top-level fields the published request schema declares."""
    schema = _operation()["requestBody"]["content"]["application/json"]["schema"]
    return frozenset(schema["properties"])


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    content = _operation()["responses"]["200"]["content"]
    return _validator(to_json_schema(content["application/json"]["schema"]))


@lru_cache(maxsize=1)
def _chunk_validator() -> Any:
    content = _operation()["responses"]["200"]["content"]
    schema = to_json_schema(content["text/event-stream"]["schema"])
    choice = schema["properties"]["choices"]["items"]
    choice["required"] = ["index"]  # finish_reason is null (or absent) until the last chunk
    choice["properties"]["finish_reason"]["type"] = ["string", "null"]
    choice["properties"]["finish_reason"]["enum"] = [*choice["properties"]["finish_reason"]["enum"], None]
    delta = choice["properties"]["delta"]
    delta["required"] = []  # role comes once, content only in content deltas
    for name in ("content", "role"):
        delta["properties"][name]["type"] = ["string", "null"]
        if "enum" in delta["properties"][name]:
            delta["properties"][name]["enum"] = [*delta["properties"][name]["enum"], None]
    call = delta["properties"]["tool_calls"]["items"]
    call["required"] = ["index"]  # later fragments carry only index and arguments
    call["properties"]["function"]["required"] = []
    return _validator(schema)


def _format(error: Any) -> str:
    where = ".".join(str(part) for part in error.absolute_path) or "<body>"
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{where}: {message}"


def _errors(validator: Any, instance: Any) -> list[str]:
    found = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.absolute_path])
    return [_format(best_match(e)) for e in found]


def best_match(error: Any) -> Any:
    """The most specific cause of a oneOf/anyOf failure, for a readable message."""
    from jsonschema.exceptions import best_match as _best

    if error.context:
        return _best(error.context) or error
    return error


def is_strict_model(model: Any) -> bool:
    """True for the model the shipped schema describes (extra fields refused)."""
    return model == SCHEMA_MODEL or not (isinstance(model, str) and model.startswith("alibaba/qwen"))


def request_errors(body: Any, *, allow_unknown: bool = False) -> list[str]:
    """Every problem of a chat-completions request body, as "path: message" strings (empty if valid).

    ``allow_unknown=True`` accepts unknown top-level fields for qwen3.7-max too (the gateway's own
    behaviour: it drops them).
    """
    if not isinstance(body, Mapping):
        return [f"<body>: the request body must be a JSON object, got {type(body).__name__}"]
    strict = is_strict_model(body.get("model"))
    problems = _errors(_request_validator(strict), dict(body))
    if strict and not allow_unknown:
        known = request_fields()
        problems += [
            f"{name}: unknown field for {SCHEMA_MODEL} (the gateway would drop it silently); "
            f"allowed: {', '.join(sorted(known))}"
            for name in body
            if name not in known
        ]
    problems += _documented_rules(body)
    return problems


def _documented_rules(body: Mapping[str, Any]) -> list[str]:
    """Bounds docs/protocol.md ("Request body") documents that the OpenAPI schema does not encode."""
    problems: list[str] = []
    messages = body.get("messages")
    if isinstance(messages, list) and not messages:
        problems.append("messages: at least one message is required")
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > MAX_STOP_SEQUENCES:
        problems.append(f"stop: {len(stop)} sequences given, at most {MAX_STOP_SEQUENCES} are allowed")
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        problems.append("top_logprobs: only allowed with logprobs: true")
    if body.get("stream_options") is not None and not body.get("stream"):
        problems.append("stream_options: only allowed with stream: true")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and "effort" in reasoning and "max_tokens" in reasoning:
        problems.append("reasoning: effort and max_tokens cannot be used together")
    tools = body.get("tools")
    if isinstance(tools, list):
        if len(tools) > MAX_TOOLS:
            problems.append(f"tools: {len(tools)} tools given, at most {MAX_TOOLS} are allowed")
        names = [
            t["function"].get("name")
            for t in tools
            if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
        ]
        for index, name in enumerate(names):
            if isinstance(name, str) and not TOOL_NAME.match(name):
                problems.append(f"tools.{index}.function.name: {name!r} must match {TOOL_NAME.pattern}")
        choice = body.get("tool_choice")
        if isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
            wanted = choice["function"].get("name")
            if wanted not in names:
                problems.append(f"tool_choice.function.name: {wanted!r} is not one of the tools {names}")
    if body.get("tool_choice") == "required" and not tools:
        problems.append("tool_choice: 'required' needs at least one tool")
    return problems


def assert_valid_request(body: Any) -> None:
    """AssertionError listing every problem when ``body`` would be refused by the service."""
    problems = request_errors(body)
    if problems:
        raise AssertionError("invalid chat-completions request:\n  " + "\n  ".join(problems))


def response_errors(body: Any) -> list[str]:
    """Problems of a non-streamed answer against the published response schema."""
    return _errors(_response_validator(), body)


def chunk_errors(chunk: Any) -> list[str]:
    """Problems of one stream chunk against the published stream schema (relaxed as documented above)."""
    return _errors(_chunk_validator(), chunk)
