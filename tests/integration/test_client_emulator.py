"""Our client against the emulator over real sockets: every retry rule, every fault, streaming, cost.

Waits between retries are recorded instead of slept (``RetryPolicy(sleep=...)``), so the tests check
which delay the client chose without spending it.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import pytest

from airflow_provider_qwen.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    AuthenticationError,
    BadRequestError,
    GenerationTimeoutError,
    InsufficientCreditsError,
    RateLimitError,
    ServerError,
    StreamError,
)
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.retry import RetryPolicy
from airflow_provider_qwen.testing import Fault
from airflow_provider_qwen.testing.schema import assert_valid_request

PROMPT = "Quarterly revenue rose 12 percent. Costs fell. The board approved the plan."
TOOL = {
    "type": "function",
    "function": {
        "name": "Report",
        "parameters": {
            "type": "object",
            "properties": {
                "tone": {"type": "string", "enum": ["up", "down"]},
                "points": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
            },
            "required": ["tone", "points", "score"],
        },
    },
}


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def client(qwen_emulator, waits):
    policy = RetryPolicy(sleep=waits.append)
    with QwenClient(qwen_emulator.api_key, base_url=qwen_emulator.base_url, max_retries=2, retry=policy) as c:
        yield c


def statuses(emulator) -> list[int | None]:
    return [r.status for r in emulator.chat_requests()]


def assert_one_request_id(emulator) -> None:
    ids = {r.client_request_id for r in emulator.chat_requests()}
    assert len(ids) == 1, ids
    assert None not in ids


# -- retries ----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried_with_one_request_id(qwen_emulator, client, waits, status):
    qwen_emulator.add_faults(Fault.error(status))
    answer = client.chat(PROMPT)
    assert answer.content
    assert statuses(qwen_emulator) == [status, 200]
    assert_one_request_id(qwen_emulator)
    assert len(waits) == 1
    assert 0.375 <= waits[0] <= 0.5  # first backoff: 0.5 s x jitter 0.75..1


@pytest.mark.parametrize(
    ("status", "error"),
    [(400, BadRequestError), (403, InsufficientCreditsError), (404, Exception), (422, BadRequestError)],
)
def test_non_retryable_status_fails_at_once(qwen_emulator, client, waits, status, error):
    qwen_emulator.add_faults(Fault.error(status))
    with pytest.raises(error) as raised:
        client.chat(PROMPT)
    assert raised.value.status_code == status
    assert raised.value.client_request_id == qwen_emulator.chat_requests()[0].client_request_id
    assert statuses(qwen_emulator) == [status]
    assert waits == []


def test_bad_key_is_an_authentication_error_without_the_key(qwen_emulator):
    with (
        QwenClient("sk-wrong-SECRET-1", base_url=qwen_emulator.base_url) as bad,
        pytest.raises(AuthenticationError) as raised,
    ):
        bad.chat(PROMPT)
    assert "sk-wrong-SECRET-1" not in str(raised.value) + repr(raised.value)
    assert statuses(qwen_emulator) == [401]
    logged = qwen_emulator.chat_requests()[0].headers
    assert "sk-wrong-SECRET-1" not in str(logged)


def test_retry_after_seconds_and_ms_win_over_backoff(qwen_emulator, client, waits):
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=3), Fault.rate_limited(retry_after_ms=40))
    client.chat(PROMPT)
    assert waits == [3.0, 0.04]
    assert statuses(qwen_emulator) == [429, 429, 200]
    assert_one_request_id(qwen_emulator)


def test_retry_after_over_two_minutes_stops_retrying(qwen_emulator, client, waits):
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=600))
    with pytest.raises(RateLimitError) as raised:
        client.chat(PROMPT)
    assert raised.value.retry_after == 600
    assert statuses(qwen_emulator) == [429]
    assert waits == []


def test_retries_exhausted_raise_the_last_error(qwen_emulator, client, waits):
    qwen_emulator.add_faults(*[Fault.error(504)] * 3)
    with pytest.raises(GenerationTimeoutError) as raised:
        client.chat(PROMPT)
    assert statuses(qwen_emulator) == [504, 504, 504]
    assert raised.value.inference_id  # every answer carries x-inference-id
    assert len(waits) == 2


def test_x_should_retry_overrides_the_status_rule(qwen_emulator, client):
    qwen_emulator.add_faults(Fault(kind="status", status=500, should_retry=False))
    with pytest.raises(ServerError):
        client.chat(PROMPT)
    assert statuses(qwen_emulator) == [500]
    qwen_emulator.reset()
    qwen_emulator.add_faults(Fault(kind="status", status=400, should_retry=True))
    assert client.chat(PROMPT).content
    assert statuses(qwen_emulator) == [400, 200]


def test_html_error_page_gives_a_clean_error(qwen_emulator, client):
    qwen_emulator.add_faults(*[Fault.html(502)] * 3)
    with pytest.raises(ServerError) as raised:
        client.chat(PROMPT)
    assert raised.value.status_code == 502
    assert "non-JSON" in str(raised.value)
    assert "JSONDecodeError" not in repr(raised.value)


def test_dropped_connection_is_retried_then_reported(qwen_emulator, client):
    qwen_emulator.add_faults(Fault.drop())
    assert client.chat(PROMPT).content
    qwen_emulator.reset()
    qwen_emulator.add_faults(*[Fault.drop()] * 3)
    with pytest.raises(APIConnectionError):
        client.chat(PROMPT)
    assert len(qwen_emulator.chat_requests()) == 3
    assert_one_request_id(qwen_emulator)


def test_concurrency_limit_429s_are_absorbed_by_the_async_client(qwen_emulator):
    qwen_emulator.max_concurrency = 3
    qwen_emulator.latency = 0.05

    async def run() -> list[str | None]:
        policy = RetryPolicy(max_retries=10, max_backoff=0.05)
        async with AsyncQwenClient(
            qwen_emulator.api_key, base_url=qwen_emulator.base_url, max_retries=10, retry=policy
        ) as aclient:
            answers = await asyncio.gather(*(aclient.chat(f"{PROMPT} #{i}") for i in range(12)))
        return [a.content for a in answers]

    contents = asyncio.run(run())
    assert all(contents)
    assert 429 in statuses(qwen_emulator)
    assert qwen_emulator.peak_in_flight <= 3 + 12  # rejected requests count while answered
    assert len(qwen_emulator.charges) == 12  # a 429 is never charged


# -- answers, streaming and cost ----------------------------------------------------------------


def test_non_streamed_cost_is_what_the_emulator_charged(qwen_emulator, client):
    answer = client.chat(PROMPT, reasoning_effort="low")
    (charge,) = qwen_emulator.charges
    assert answer.cost.credits_used == charge.credits
    assert answer.cost.usd_spent == charge.usd
    assert answer.cost.estimated is False
    assert answer.inference_id == charge.inference_id
    assert answer.model == "alibaba/qwen3.7-max"  # as requested, though the wire says qwen3.7-max
    assert answer.reasoning_content
    assert answer.usage.reasoning_tokens == charge.reasoning_tokens > 0
    for request in qwen_emulator.chat_requests():
        assert_valid_request(request.body)


def test_stream_assembles_the_same_completion_as_a_plain_call(qwen_emulator, client):
    kwargs = {"tools": [TOOL], "tool_choice": "required", "reasoning_effort": "low"}
    plain = client.chat(PROMPT, **kwargs)
    with client.stream(PROMPT, stream_options={"include_usage": True}, **kwargs) as stream:
        chunks = list(stream)
    streamed = stream.completion
    assert len(chunks) > 3
    assert streamed.content == plain.content
    assert streamed.reasoning_content == plain.reasoning_content
    assert [(c.function.name, c.function.arguments) for c in streamed.tool_calls] == [
        (c.function.name, c.function.arguments) for c in plain.tool_calls
    ]
    assert streamed.usage.model_dump() == plain.usage.model_dump()
    assert streamed.finish_reason == plain.finish_reason
    first, second = qwen_emulator.charges
    assert (streamed.cost.credits_used, streamed.cost.estimated) == (second.credits, False)
    assert first.credits == second.credits


def test_stream_true_through_send_returns_the_assembled_completion(qwen_emulator, client):
    request = build_request(PROMPT, stream=True, stream_options={"include_usage": True})
    answer = client.send(request)
    assert answer.content
    assert answer.cost.credits_used == qwen_emulator.charges[0].credits


def test_cut_stream_is_not_retried_and_keeps_what_arrived(qwen_emulator, client, waits):
    qwen_emulator.add_faults(Fault.cut(after_chunks=3))
    with pytest.raises(StreamError) as raised, client.stream(PROMPT) as stream:
        list(stream)
    assert len(qwen_emulator.chat_requests()) == 1  # never retried after the first byte
    assert waits == []
    partial = raised.value.partial
    assert partial is not None
    assert partial.cost.estimated  # a cut stream has no reported cost: estimated


def test_error_chunk_raises_stream_error(qwen_emulator, client):
    qwen_emulator.add_faults(Fault.stream_error(after_chunks=2))
    with pytest.raises(StreamError), client.stream(PROMPT) as stream:
        list(stream)


def test_invalid_tool_arguments_and_length_reach_the_caller_unchanged(qwen_emulator, client):
    qwen_emulator.add_faults(Fault.bad_json_args(), Fault.length())
    broken = client.chat(PROMPT, tools=[TOOL], tool_choice="required")
    assert broken.tool_calls[0].function.name == "Report"
    with pytest.raises(json.JSONDecodeError):
        json.loads(broken.tool_calls[0].function.arguments)
    cut = client.chat(PROMPT)
    assert cut.finish_reason == "length"


def test_exact_total_over_many_calls(qwen_emulator, client):
    answers = [client.chat(f"{PROMPT} {i}") for i in range(25)]
    credits, usd = qwen_emulator.total_charged()
    assert sum(a.cost.credits_used for a in answers) == credits
    assert sum((a.cost.usd_spent for a in answers), Decimal(0)) == usd


def test_balance_models_and_live_prices(qwen_emulator, client):
    assert client.get_balance()["currency"] == "USD"
    ids = {m["id"] for m in client.list_models()}
    assert "alibaba/qwen3.7-max" in ids
    price = client.fetch_prices().get("alibaba/qwen3.7-max")
    assert price is not None
    assert price.output > price.input
