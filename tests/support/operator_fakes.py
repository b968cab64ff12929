"""Test doubles for operator unit tests: a scripted client behind a fake hook, and a fake task instance.

They stand in for the HTTP client so the operator logic (rendering, repairs, cost, XCom) is tested
in milliseconds; the emulator-backed tests in tests/integration cover the real wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.request import ChatRequest
from tests.support.client_helpers import bind

MODEL = "alibaba/qwen3.7-max"
USD_PER_ANSWER = Decimal("0.001000")


def answer(
    content: str | None = "ok",
    *,
    tool_calls: list[tuple[str, str, Any]] | None = None,
    reasoning: str | None = None,
    finish_reason: str | None = None,
    refusal: str | None = None,
    usd: Decimal = USD_PER_ANSWER,
) -> ChatCompletion:
    """A paid completion; ``tool_calls`` are (id, name, arguments) with arguments a dict or a raw string."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if refusal is not None:
        message["refusal"] = refusal
    if tool_calls:
        message["tool_calls"] = [
            {
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for cid, name, args in tool_calls
        ]
    finish = finish_reason or ("tool_calls" if tool_calls else "stop")
    parsed = ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1",
            "model": "qwen3.7-max",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
            "meta": {"usage": {"credits_used": int(usd * 2_000_000), "usd_spent": str(usd)}},
        }
    )
    return bind(parsed, requested_model=MODEL, inference_id="inf-1")


class FakeStream:
    """What ``client.stream()`` returns: chunks, then ``.completion``."""

    def __init__(self, chunks: list[ChatCompletionChunk], completion: ChatCompletion) -> None:
        self.chunks = chunks
        self.completion = completion

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return iter(self.chunks)

    def __enter__(self) -> FakeStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True

    def partial(self) -> ChatCompletion:
        return self.completion


class FakeClient:
    """Answers each request with the next scripted reply (a completion, or an exception to raise)."""

    def __init__(self, *replies: ChatCompletion | Exception | Callable[[ChatRequest], Any]) -> None:
        self.replies = list(replies)
        self.requests: list[ChatRequest] = []
        self.retry_after_send: list[bool] = []  # as each call asked

    def _next(self, request: ChatRequest) -> Any:
        self.requests.append(request)
        if not self.replies:
            raise AssertionError(f"unexpected request #{len(self.requests)}: {request.to_body()}")
        reply = self.replies.pop(0)
        if callable(reply) and not isinstance(reply, ChatCompletion):
            reply = reply(request)
        if isinstance(reply, Exception):
            raise reply
        return reply

    def send(
        self, request: ChatRequest, *, client_request_id: str | None = None, retry_after_send: bool = True
    ) -> ChatCompletion:
        self.retry_after_send.append(retry_after_send)
        return self._next(request)

    def stream(
        self, request: ChatRequest, *, client_request_id: str | None = None, retry_after_send: bool = True
    ) -> FakeStream:
        self.retry_after_send.append(retry_after_send)
        completion = self._next(request)
        chunks = [
            ChatCompletionChunk.model_validate({"choices": [{"delta": {"reasoning_content": part}}]})
            for part in (completion.reasoning_content or "")
        ] + [
            ChatCompletionChunk.model_validate({"choices": [{"delta": {"content": part}}]})
            for part in (completion.content or "")
        ]
        return FakeStream(chunks, completion)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [request.to_body() for request in self.requests]


class AsyncFakeClient:
    """The same script behind ``await client.send(...)``, as ``hook.async_client()`` yields it."""

    def __init__(self, client: FakeClient) -> None:
        self.client = client

    async def send(
        self, request: ChatRequest, *, client_request_id: str | None = None, retry_after_send: bool = True
    ) -> ChatCompletion:
        return self.client.send(
            request, client_request_id=client_request_id, retry_after_send=retry_after_send
        )


class FakeHook:
    default_model = MODEL

    def __init__(self, client: FakeClient) -> None:
        self.client = client
        self.prices = PriceTable()

    def get_conn(self) -> FakeClient:
        return self.client

    @asynccontextmanager
    async def async_client(self, **_: Any) -> AsyncIterator[AsyncFakeClient]:
        yield AsyncFakeClient(self.client)


class FakeTI:
    """The slice of a RuntimeTaskInstance the operators use: try_number, xcom_push/xcom_pull."""

    def __init__(self, try_number: int = 1, pulled: dict[str, Any] | None = None) -> None:
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}
        self.pulled = pulled or {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.pulled.get(task_ids or "")


def no_usage_answer(text: str = "the answer") -> ChatCompletion:
    """An answer the service did not price (no usage, no meta): the client marks its cost estimated."""
    completion = answer(text)
    completion.usage = None
    completion.meta = None
    return bind(completion, requested_model=MODEL, inference_id="inf-1", cost=Cost(estimated=True))


def with_client(mocker: Any, operator_cls: type, *replies: Any) -> FakeClient:
    """Route every hook of ``operator_cls`` (and subclasses) to a scripted client."""
    client = FakeClient(*replies)
    mocker.patch.object(operator_cls, "hook", new=FakeHook(client))
    return client


def run(operator: Any, ti: FakeTI | None = None, **context: Any) -> tuple[Any, FakeTI]:
    """Render and execute like a worker would (minus the Task SDK); returns (result, ti)."""
    ti = ti or FakeTI()
    full = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1", **context}
    operator.render_template_fields(full)
    return operator.execute(full), ti
