"""The AI/ML API protocol in plain Python (no Airflow): clients, request and response types, errors, cost.

Names are imported lazily, so ``import airflow_provider_qwen.client.errors`` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.client.assembly import StreamAssembler
    from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
    from airflow_provider_qwen.client.errors import (
        APIConnectionError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        BudgetExceededError,
        ConflictError,
        GenerationTimeoutError,
        InsufficientCreditsError,
        InvalidRequestError,
        InvalidResponseError,
        NotFoundError,
        QwenError,
        RateLimitError,
        ServerError,
        StreamError,
        StructuredOutputError,
    )
    from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk, ToolCall, Usage
    from airflow_provider_qwen.client.pricing import Cost, Price, PriceTable
    from airflow_provider_qwen.client.request import ChatRequest, build_request
    from airflow_provider_qwen.client.retry import RetryPolicy
    from airflow_provider_qwen.client.streaming import AsyncChatStream, ChatStream

_EXPORTS: dict[str, str] = {
    **dict.fromkeys(["QwenClient", "AsyncQwenClient"], "client"),
    **dict.fromkeys(["Cost", "Price", "PriceTable"], "pricing"),
    **dict.fromkeys(
        [
            "APIConnectionError",
            "APIStatusError",
            "APITimeoutError",
            "AuthenticationError",
            "BadRequestError",
            "BudgetExceededError",
            "ConflictError",
            "GenerationTimeoutError",
            "InsufficientCreditsError",
            "InvalidRequestError",
            "InvalidResponseError",
            "NotFoundError",
            "QwenError",
            "RateLimitError",
            "ServerError",
            "StreamError",
            "StructuredOutputError",
        ],
        "errors",
    ),
    **dict.fromkeys(["ChatCompletion", "ChatCompletionChunk", "ToolCall", "Usage"], "models"),
    **dict.fromkeys(["ChatRequest", "build_request"], "request"),
    "RetryPolicy": "retry",
    **dict.fromkeys(["AsyncChatStream", "ChatStream"], "streaming"),
    "StreamAssembler": "assembly",
}

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncChatStream",
    "AsyncQwenClient",
    "AuthenticationError",
    "BadRequestError",
    "BudgetExceededError",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatRequest",
    "ChatStream",
    "ConflictError",
    "Cost",
    "GenerationTimeoutError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "InvalidResponseError",
    "NotFoundError",
    "Price",
    "PriceTable",
    "QwenClient",
    "QwenError",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "StreamAssembler",
    "StreamError",
    "StructuredOutputError",
    "ToolCall",
    "Usage",
    "build_request",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
