"""The one token estimator: every token figure the provider needs (worst cases, chunking, estimates).

Deliberately high: one token per two UTF-8 bytes. An exact Qwen count replaces it in a later change;
until then this is an estimate, not a bound (see docs/protocol.md, "Tokens").
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest

BYTES_PER_TOKEN = 2
PROMPT_FRAMING_TOKENS = 8  # the chat template around the messages


def text_tokens(text: str) -> int:
    """Tokens of a piece of text (a document part, generated text), rounded up."""
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN)


def prompt_tokens(text: str) -> int:
    """Tokens of a whole prompt's text, chat-template framing included."""
    return len(text.encode("utf-8")) // BYTES_PER_TOKEN + PROMPT_FRAMING_TOKENS


def request_text(request: ChatRequest) -> str:
    """All the text a request sends, tools included."""
    body = request.to_body()
    return json.dumps(body.get("messages", []), ensure_ascii=False) + json.dumps(
        body.get("tools", []), ensure_ascii=False
    )


def request_tokens(request: ChatRequest) -> int:
    """Estimated prompt tokens of a request."""
    return prompt_tokens(request_text(request))


def output_cap(request: ChatRequest) -> int:
    """The request's output token cap (``max_completion_tokens``, else ``max_tokens``); 0 if unbounded."""
    return int(request.max_completion_tokens or request.max_tokens or 0)
