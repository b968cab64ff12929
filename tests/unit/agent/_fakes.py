"""Fakes for the agent tests: scripted answers of the model, a checked request builder, a journal that
dies right after writing a chosen event (a kill of the worker)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from airflow_provider_qwen.agent.journal import MemoryJournal
from airflow_provider_qwen.client.models import CallInfo, ChatCompletion
from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.client.request import ChatRequest, build_request
from airflow_provider_qwen.testing.schema import assert_valid_request

MODEL = "alibaba/qwen3.7-max"


def call(name: str, arguments: Any = None, call_id: str | None = None) -> dict[str, Any]:
    """One tool call of an answer; ``arguments`` a dict (sent as JSON) or the raw string."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
    return {"id": call_id or f"call-{name}", "type": "function", "function": {"name": name, "arguments": raw}}


def answer(
    content: str | None = None,
    *calls: dict[str, Any],
    reasoning: str | None = None,
    usd: str = "0.001",
    inference_id: str = "inf",
    finish_reason: str | None = None,
) -> ChatCompletion:
    """A bound answer of the model, as the client returns it (cost reported)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = list(calls)
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen3.7-max",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason or ("tool_calls" if calls else "stop"),
            }
        ],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 20,
            "total_tokens": 120,
            "completion_tokens_details": {"reasoning_tokens": 5},
        },
        "meta": {"usage": {"usd_spent": usd}},
    }
    completion = ChatCompletion.model_validate(body)
    completion.call = CallInfo(MODEL, inference_id, None, Cost.from_reported(usd=usd) or Cost())
    return completion


class Model:
    """``send``: the scripted answers in order (a callable gets the request); every request kept."""

    def __init__(self, *answers: ChatCompletion | Callable[[ChatRequest], ChatCompletion]) -> None:
        self.answers = list(answers)
        self.requests: list[ChatRequest] = []

    async def __call__(self, request: ChatRequest) -> ChatCompletion:
        self.requests.append(request)
        assert self.answers, f"unexpected request #{len(self.requests)}"
        reply = self.answers.pop(0)
        return reply if isinstance(reply, ChatCompletion) else reply(request)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.to_body() for r in self.requests]


def build(messages: list[dict[str, Any]], tools: list[dict[str, Any]], choice: Any) -> ChatRequest:
    """What the operator passes: the one validator, and the published schema checked on top."""
    request = build_request(messages, model=MODEL, tools=tools or None, tool_choice=choice)
    assert_valid_request(request.to_body())
    return request


class Killed(BaseException):
    """The worker died (not an Exception: nothing in the loop may catch it)."""


class DyingJournal(MemoryJournal):
    """Writes each event, and dies right after the one ``when`` picks (the event is durable)."""

    def __init__(self, when: Callable[[dict[str, Any]], bool], events: list[dict[str, Any]] | None = None):
        super().__init__(events or [])
        self.when = when

    def append(self, event: dict[str, Any]) -> None:
        super().append(event)
        if self.when(event):
            self.when = lambda _: False
            raise Killed(event["type"])


class Lines:
    """A logger that keeps its lines."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)

    warning = info
