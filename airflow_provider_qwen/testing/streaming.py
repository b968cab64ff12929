"""An answer as the service streams it (docs/protocol.md, "Streaming").

Order: a role chunk; ``reasoning_content`` deltas; ``content`` deltas; tool-call fragments (the
first of each call carries ``id``, ``type`` and ``name`` with empty arguments, the next ones only
``index`` and a piece of ``arguments``); a chunk with ``finish_reason``; with
``stream_options.include_usage`` a usage chunk with ``choices: []``; ``meta`` (cost) on the last
chunk; then ``data: [DONE]``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.testing.answers import Answer, logprobs

TEXT_PIECE = 24  # characters per content/reasoning delta
ARGUMENT_PIECE = 16  # characters per tool-call arguments fragment
DONE = b"data: [DONE]\n\n"


def pieces(text: str, size: int) -> list[str]:
    """``text`` in pieces of about ``size`` characters, cut after a space where one is near."""
    out: list[str] = []
    while text:
        if len(text) <= size:
            out.append(text)
            break
        cut = text.rfind(" ", size // 2, size) + 1 or size
        out.append(text[:cut])
        text = text[cut:]
    return out


_DECIMAL = re.compile(r'"\\u0000(-?[0-9.]+)\\u0000"')


def _decimal_marker(value: Any) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        return "\x00" + (text.rstrip("0").rstrip(".") if "." in text else text) + "\x00"
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def wire_json(data: Any) -> bytes:
    """Compact JSON; a Decimal becomes a plain number (``0.00006``, not ``6e-05``) as the service writes."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=_decimal_marker)
    return _DECIMAL.sub(r"\1", text).encode()


def sse(data: Any) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return b"data: " + wire_json(data) + b"\n\n"


def chunks(
    answer: Answer,
    *,
    completion_id: str,
    created: int,
    model: str,
    include_usage: bool,
    meta: dict[str, Any] | None,
    top_logprobs: int | None = None,
) -> list[dict[str, Any]]:
    """Every ``chat.completion.chunk`` of the answer, in order (without the ``[DONE]`` marker).

    ``top_logprobs`` (when ``logprobs`` was asked for) adds logprobs to the content deltas; ``meta``
    None leaves the cost out (a ``no_usage`` fault).
    """

    def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
        text = (delta or {}).get("content")
        probs = logprobs(text, top_logprobs) if text and top_logprobs is not None else None
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "delta": delta or {}, "finish_reason": finish_reason, "logprobs": probs}
            ],
        }

    out = [chunk({"role": "assistant", "content": ""})]
    out += [chunk({"reasoning_content": piece}) for piece in pieces(answer.reasoning or "", TEXT_PIECE)]
    out += [chunk({"content": piece}) for piece in pieces(answer.content, TEXT_PIECE)]
    for index, call in enumerate(answer.tool_calls):
        head = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [head]}))
        for piece in pieces(call.arguments, ARGUMENT_PIECE):
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}))
    out.append(chunk({}, answer.finish_reason))
    if include_usage:
        out.append({**chunk(None), "choices": [], "usage": answer.usage()})
    if meta is not None:
        out[-1]["meta"] = meta
    return out


def events(chunk_list: list[dict[str, Any]]) -> Iterator[bytes]:
    """The SSE bytes of each chunk, then ``[DONE]``."""
    for item in chunk_list:
        yield sse(item)
    yield DONE
