"""Test doubles for QwenBatchOperator unit tests: an async scripted client and a task instance with ids.

The scripted client stands in for the batch's own client (``QwenHook.async_client``); the hook's
shared clients refuse to be used, so a batch that went around its limiter-aware client fails.

The reply function sees each request and returns a completion or an exception (optionally after a
delay), so ordering, partial failure, rate limits and budgets are tested in milliseconds.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.client.request import ChatRequest
from tests.support.operator_fakes import MODEL, FakeTI, answer

Reply = Callable[[ChatRequest], "ChatCompletion | Exception | tuple[float, ChatCompletion | Exception]"]


def user_text(request: ChatRequest) -> str:
    """The last user message of a request (the rendered item prompt)."""
    body = request.to_body()
    return next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")


def echo(request: ChatRequest) -> ChatCompletion:
    """Answer with the request's own prompt, prefixed: results are easy to check."""
    return answer(f"summary of: {user_text(request)}")


class FakeAsyncClient:
    """``await send(request)``: the reply function's answer, tracking concurrency and every request."""

    def __init__(self, reply: Reply = echo) -> None:
        self.reply = reply
        self.requests: list[ChatRequest] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self.closed = 0

    async def send(
        self, request: ChatRequest, *, client_request_id: str | None = None, retry_after_send: bool = True
    ) -> ChatCompletion:
        self.requests.append(request)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            outcome = self.reply(request)
            if isinstance(outcome, tuple):
                delay, outcome = outcome
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        self.closed += 1

    @property
    def prompts(self) -> list[str]:
        return [user_text(r) for r in self.requests]

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.to_body() for r in self.requests]


class FakeAsyncHook:
    default_model = MODEL

    def __init__(self, client: FakeAsyncClient) -> None:
        self.client = client
        self.prices = PriceTable()

    @asynccontextmanager
    async def async_client(self, **overrides: Any) -> AsyncIterator[FakeAsyncClient]:
        """The batch's own client (``overrides``: its retry policy and pool size), closed after."""
        self.overrides = overrides
        try:
            yield self.client
        finally:
            await self.client.aclose()

    def _loop_client(self) -> Any:
        raise AssertionError("the batch operator must use its own client (429s to the limiter)")

    def get_conn(self) -> Any:
        raise AssertionError("the batch operator must use the async client")


def with_async_client(mocker: Any, reply: Reply = echo) -> FakeAsyncClient:
    """Route the batch operator's client (and every Qwen operator's hook) to a scripted async client."""
    from airflow_provider_qwen.operators.base import QwenBaseOperator

    client = FakeAsyncClient(reply)
    mocker.patch.object(QwenBaseOperator, "hook", new=FakeAsyncHook(client))
    return client


class BatchTI(FakeTI):
    """A FakeTI with the ids that name the checkpoint folder."""

    def __init__(
        self,
        try_number: int = 1,
        *,
        dag_id: str = "batch_dag",
        run_id: str = "manual__1",
        task_id: str = "batch",
        map_index: int = -1,
    ) -> None:
        super().__init__(try_number)
        self.dag_id = dag_id
        self.run_id = run_id
        self.task_id = task_id
        self.map_index = map_index


USD = Decimal("0.001000")  # what every fake answer costs (operator_fakes.USD_PER_ANSWER)
