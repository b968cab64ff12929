"""Checks of a conversation the request schema cannot express: tool results and message fields.

``conversation_errors(body, strict=...)`` returns "path: message" strings (the server answers 400
with them in the service's error shape), run after the schema check:

- A ``tool`` message whose ``tool_call_id`` is not the id of a tool call of an earlier assistant
  message is refused: there is no call it could answer.
- An assistant message with ``tool_calls`` must be followed by tool messages answering each of its
  ids before the next non-tool message (or the end of the conversation). OpenAI-compatible servers
  refuse such a history; that the AI/ML API does too is an inference, kept because the emulator is
  never kinder than the service (an agent that drops a result would otherwise pass its tests).
- With ``strict`` (the emulator's default), a message field the published request schema does not
  declare for that role is refused. The schema's message objects do not say
  ``additionalProperties: false``, so the schema check alone lets them through; but no Qwen model's
  request schema declares e.g. ``reasoning_content``, which PROTOCOL.md says never to echo back in
  assistant history. ``strict=False`` drops them instead, like unknown top-level fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from airflow_provider_qwen.testing.schema import openapi_document


@lru_cache(maxsize=1)
def message_fields() -> dict[str, frozenset[str]]:
    """Role -> the fields the published request schema declares for a message of that role."""
    operation = openapi_document()["paths"]["/v1/chat/completions"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    items = schema["properties"]["messages"]["items"]
    out: dict[str, frozenset[str]] = {}
    for branch in items.get("oneOf") or items.get("anyOf") or []:
        properties = branch.get("properties") or {}
        for role in (properties.get("role") or {}).get("enum") or []:
            out[str(role)] = frozenset(properties)
    return out


def _unanswered(index: int, pending: list[str]) -> str:
    ids = ", ".join(repr(i) for i in pending)
    return (
        f"messages.{index}: an assistant message with 'tool_calls' must be followed by tool "
        f"messages answering each 'tool_call_id'; no tool message answers {ids}"
    )


def conversation_errors(body: Mapping[str, Any], *, strict: bool = True) -> list[str]:
    """Every problem of the conversation in ``body`` (empty when it is fine); see the module doc."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    declared = message_fields()
    problems: list[str] = []
    issued: set[str] = set()
    pending: list[str] = []
    pending_from = -1
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping):
            continue
        role = message.get("role")
        known = declared.get(str(role))
        if strict and known is not None:
            problems += [
                f"messages.{index}.{name}: not a field of a message with role {role!r} in the request schema "
                "(reasoning_content is returned by the service but must not be sent back)"
                for name in sorted(set(message) - known)
            ]
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in issued:
                problems.append(
                    f"messages.{index}.tool_call_id: {call_id!r} matches no tool call of an earlier "
                    "assistant message"
                )
            elif call_id in pending:
                pending.remove(call_id)
            continue
        if pending:
            problems.append(_unanswered(pending_from, pending))
            pending = []
        if role == "assistant":
            for call in message.get("tool_calls") or []:
                if isinstance(call, Mapping) and isinstance(call.get("id"), str):
                    issued.add(call["id"])
                    pending.append(call["id"])
            pending_from = index
    if pending:
        problems.append(_unanswered(pending_from, pending))
    return problems
