"""Helpers for the client tests: canned answers, SSE bodies, cut streams, and a respx side effect that
checks every request body against the published OpenAPI schema before answering."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from airflow_provider_qwen.client.models import CallInfo, ChatCompletion
from airflow_provider_qwen.client.pricing import Cost, default_prices
from airflow_provider_qwen.client.retry import RetryPolicy
from airflow_provider_qwen.testing.schema import assert_valid_request

BASE_URL = "http://127.0.0.1:9/v1"
CHAT_URL = f"{BASE_URL}/chat/completions"
KEY = "sk-SECRET-123"
MODEL = "alibaba/qwen3.7-max"


class Recorder:
    """A respx side effect: check the request, record it, answer with the next scripted reply.

    A reply is an ``httpx.Response`` or an exception (instance or class) to raise as the transport would.
    """

    def __init__(self, *replies: httpx.Response | BaseException | type[BaseException]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            assert request.headers["content-type"] == "application/json"
            assert_valid_request(json.loads(request.content))
        self.requests.append(request)
        assert self.replies, f"unexpected request #{len(self.requests)} to {request.url}"
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, BaseException) or (isinstance(reply, type) and issubclass(reply, BaseException)):
            if isinstance(reply, type) and issubclass(reply, httpx.TransportError):
                raise reply("scripted failure", request=request)
            raise reply
        return reply

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.content]

    @property
    def request_ids(self) -> list[str]:
        return [r.headers.get("x-client-request-id", "") for r in self.requests]


def bind(
    completion: ChatCompletion,
    *,
    requested_model: str,
    inference_id: str | None = None,
    cost: Cost | None = None,
    unconfirmed_tries: int = 0,
    client_request_id: str | None = None,
) -> ChatCompletion:
    """Bind a parsed completion to a call as the client does: the reported cost, else an estimate."""
    if cost is None:
        usage = completion.usage
        cost = completion.reported_cost or (
            default_prices().estimate(
                requested_model, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
            )
            if usage is not None
            else Cost(estimated=True)
        )
    completion.call = CallInfo(requested_model, inference_id, client_request_id, cost, unconfirmed_tries)
    return completion


def completion(content: str | None = "Hello!", **overrides: Any) -> dict[str, Any]:
    """A chat completion body with usage and reported cost (the service's shape)."""
    body: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1762343744,
        "model": "qwen3.7-max",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
        "meta": {"usage": {"credits_used": 260, "usd_spent": 0.00013}},
    }
    body.update(overrides)
    return body


def ok(body: dict[str, Any] | None = None, *, inference_id: str = "inf-1", **headers: str) -> httpx.Response:
    """A 200 with a chat completion; header names with ``_`` become ``-``."""
    body = body if body is not None else completion()
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    return httpx.Response(200, json=body, headers={"x-inference-id": inference_id, **extra})


def status(code: int, body: Any = None, **headers: str) -> httpx.Response:
    """An error answer; ``body`` a dict (JSON) or text; header names with ``_`` become ``-``."""
    headers = {k.replace("_", "-"): v for k, v in headers.items()}
    if isinstance(body, str):
        return httpx.Response(code, text=body, headers={"content-type": "text/html", **headers})
    return httpx.Response(
        code, json=body if body is not None else {"message": f"status {code}"}, headers=headers
    )


def sse_body(*events: dict[str, Any] | str, done: bool = True) -> bytes:
    """An SSE body: each dict a ``data:`` event, each string sent verbatim; ``[DONE]`` at the end."""
    parts = [e if isinstance(e, str) else f"data: {json.dumps(e)}\n\n" for e in events]
    if done:
        parts.append("data: [DONE]\n\n")
    return "".join(parts).encode()


def sse(*events: dict[str, Any] | str, done: bool = True, inference_id: str = "inf-s") -> httpx.Response:
    return httpx.Response(
        200,
        content=sse_body(*events, done=done),
        headers={"content-type": "text/event-stream", "x-inference-id": inference_id},
    )


def chunk(delta: dict[str, Any] | None = None, *, finish: str | None = None, **top: Any) -> dict[str, Any]:
    """One chat.completion.chunk with a single choice."""
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "finish_reason": finish}
    return {
        "id": "chatcmpl-s",
        "object": "chat.completion.chunk",
        "model": "qwen3.7-max",
        "choices": [choice],
        **top,
    }


class CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that sends ``data`` and then loses the connection."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


def cut_sse(*events: dict[str, Any] | str, inference_id: str = "inf-cut") -> httpx.Response:
    return httpx.Response(
        200,
        stream=CutStream(sse_body(*events, done=False)),
        headers={"content-type": "text/event-stream", "x-inference-id": inference_id},
    )


class Sleeps(list[float]):
    """Records the waits instead of sleeping; ``policy()`` gives a RetryPolicy using it (no jitter)."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.append(seconds)

    def policy(self, **kwargs: Any) -> RetryPolicy:
        return RetryPolicy(sleep=self, async_sleep=self.asleep, jitter=lambda: 1.0, **kwargs)
