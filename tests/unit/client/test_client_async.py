"""AsyncQwenClient and AsyncChatStream: the same behaviour as the sync client, awaited."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.client.client import AsyncQwenClient
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    InvalidResponseError,
    RateLimitError,
    ServerError,
    StreamError,
)
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.transport import AiohttpTransport
from tests.support.client_helpers import (
    BASE_URL,
    CHAT_URL,
    KEY,
    MODEL,
    Recorder,
    Sleeps,
    chunk,
    completion,
    cut_sse,
    ok,
    sse,
    status,
)

pytestmark = pytest.mark.anyio

USAGE = {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20}
META = {"usage": {"credits_used": 150, "usd_spent": 0.000075}}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def qwen(sleeps):
    async with AsyncQwenClient(KEY, base_url=BASE_URL, retry=sleeps.policy()) as client:
        yield client


def answer_with(api, *replies) -> Recorder:
    calls = Recorder(*replies)
    api.post(CHAT_URL).mock(side_effect=calls)
    return calls


async def test_chat_sends_a_valid_body_and_binds_the_answer(api, qwen):
    calls = answer_with(api, ok(inference_id="inf-a"))
    result = await qwen.chat("Hi", temperature=0.5, max_completion_tokens=20)
    assert calls.bodies == [
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Hi"}],
            "temperature": 0.5,
            "max_completion_tokens": 20,
        }
    ]
    assert calls.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert (result.content, result.inference_id, result.model) == ("Hello!", "inf-a", MODEL)
    assert (result.cost.credits_used, result.cost.usd_spent) == (260, Decimal("0.00013"))


async def test_concurrent_calls_each_get_their_own_request_id(api, qwen):
    calls = answer_with(api, ok())
    results = await asyncio.gather(*(qwen.chat(f"q{i}") for i in range(20)))
    assert len(results) == 20
    assert len(set(calls.request_ids)) == 20


# -- retries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
async def test_retried_statuses(api, qwen, sleeps, code):
    calls = answer_with(api, status(code), status(code), ok())
    assert (await qwen.chat("hi")).content == "Hello!"
    assert len(calls.requests) == 3
    assert len(set(calls.request_ids)) == 1
    assert sleeps == [0.5, 1.0]


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422])
async def test_statuses_not_retried(api, qwen, sleeps, code):
    calls = answer_with(api, status(code), ok())
    with pytest.raises(APIStatusError) as caught:
        await qwen.chat("hi")
    assert caught.value.status_code == code
    assert len(calls.requests) == 1
    assert sleeps == []


async def test_retries_run_out_with_the_last_error(api, sleeps):
    calls = answer_with(api, status(503, x_inference_id="inf-503"))
    client = AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=3, retry=sleeps.policy())
    with pytest.raises(ServerError) as caught:
        await client.chat("hi")
    assert len(calls.requests) == 4
    assert caught.value.inference_id == "inf-503"
    assert caught.value.client_request_id == calls.request_ids[0]
    await client.aclose()


async def test_server_delays_use_the_async_sleep(api, sleeps):
    def blocking_sleep(seconds: float) -> None:
        raise AssertionError("the async client must not block the loop")

    policy = sleeps.policy()
    policy = type(policy)(sleep=blocking_sleep, async_sleep=sleeps.asleep, jitter=lambda: 1.0)
    answer_with(api, status(429, retry_after="2"), status(503, retry_after_ms="30"), ok())
    async with AsyncQwenClient(KEY, base_url=BASE_URL, retry=policy) as client:
        await client.chat("hi")
    assert sleeps == [2.0, 0.03]


async def test_too_long_retry_after_and_x_should_retry(api, qwen, sleeps):
    calls = answer_with(api, status(429, retry_after="500"), ok())
    with pytest.raises(RateLimitError):
        await qwen.chat("hi")
    assert len(calls.requests) == 1
    calls = answer_with(api, status(400, x_should_retry="true"), ok())
    assert (await qwen.chat("hi")).content == "Hello!"
    assert len(calls.requests) == 2
    calls = answer_with(api, status(500, x_should_retry="false"), ok())
    with pytest.raises(ServerError):
        await qwen.chat("hi")
    assert len(calls.requests) == 1


@pytest.mark.parametrize(
    ("failure", "error"), [(httpx.ConnectError, APIConnectionError), (httpx.ReadTimeout, APITimeoutError)]
)
async def test_transport_failures_are_retried_then_mapped(api, qwen, failure, error):
    calls = answer_with(api, failure, ok())
    assert (await qwen.chat("hi")).content == "Hello!"
    assert len(calls.requests) == 2
    calls = answer_with(api, failure)
    with pytest.raises(error):
        await qwen.chat("hi")
    assert len(calls.requests) == 3


# -- errors and the key ---------------------------------------------------------------------------


async def test_error_shapes_html_and_no_key(api):
    client = AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=0)
    answer_with(api, status(400, {"message": "bad temperature", "path": "/v1/chat/completions"}))
    with pytest.raises(BadRequestError, match="bad temperature"):
        await client.chat("hi")
    answer_with(api, status(401, {"error": {"message": f"key {KEY} is wrong", "type": "auth"}}))
    with pytest.raises(AuthenticationError) as caught:
        await client.chat("hi")
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)
    answer_with(api, status(502, "<html><body><h1>502 Bad Gateway</h1></body></html>"))
    with pytest.raises(ServerError, match="502 Bad Gateway") as caught:
        await client.chat("hi")
    assert "<h1>" not in str(caught.value)
    assert KEY not in repr(client)
    await client.aclose()


async def test_a_2xx_that_is_not_a_completion_carries_the_paid_cost(api, qwen):
    answer_with(api, httpx.Response(200, text="<html/>", headers={"x-aimlapi-credits-used": "50"}))
    with pytest.raises(InvalidResponseError) as caught:
        await qwen.chat("hi")
    assert caught.value.charge.reported.credits_used == 50
    assert caught.value.charge.reported.usd_spent == Decimal("0.000025")


async def test_cost_fallbacks(api, qwen):
    body = completion()
    del body["meta"]
    answer_with(api, ok(body, x_aimlapi_credits_used="400", x_aimlapi_usd_spent="0.0002"))
    assert (await qwen.chat("hi")).cost.credits_used == 400
    answer_with(api, ok(body))
    estimated = (await qwen.chat("hi")).cost
    assert estimated.estimated is True
    assert estimated.usd_spent == Decimal("0.000130")  # 20 x 2.60 + 10 x 7.80 per 1M


# -- streaming ------------------------------------------------------------------------------------


async def test_stream_assembles_reasoning_content_tool_calls_usage_and_meta(api, qwen):
    calls = answer_with(
        api,
        sse(
            chunk({"role": "assistant", "reasoning_content": "Hm"}),
            chunk({"content": "Hi"}),
            chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}),
            chunk({"tool_calls": [{"index": 0, "id": "c2", "function": {"name": "f", "arguments": "[]"}}]}),
            chunk({}, finish="tool_calls"),
            {"choices": [], "usage": USAGE, "meta": META},
        ),
    )
    stream = qwen.stream("hi")
    chunks = [piece async for piece in stream]
    result = stream.completion
    assert len(chunks) == 6
    assert (result.reasoning_content, result.content) == ("Hm", "Hi")
    assert [(c.id, c.function.arguments) for c in result.tool_calls] == [("c1", "{}"), ("c2", "[]")]
    assert result.usage.total_tokens == 20
    assert (result.cost.credits_used, result.cost.estimated) == (150, False)
    assert result.inference_id == "inf-s"
    assert calls.bodies[0]["stream_options"] == {"include_usage": True}


async def test_stream_cut_raises_with_partial(api, qwen):
    calls = answer_with(api, cut_sse(chunk({"content": "Hel"})), ok())
    stream = qwen.stream("hi")
    with pytest.raises(StreamError) as caught:
        await stream.get_final_completion()
    assert caught.value.partial.content == "Hel"
    assert caught.value.partial.usage is None
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)
    assert len(calls.requests) == 1
    assert stream.response.is_closed


async def test_stream_error_chunk_and_unfinished_eof(api, qwen):
    answer_with(api, sse(chunk({"content": "a"}), {"error": {"message": "overloaded"}}))
    with pytest.raises(StreamError, match="overloaded") as caught:
        await qwen.stream("hi").get_final_completion()
    assert caught.value.partial.content == "a"
    answer_with(api, sse(chunk({"content": "a"}), done=False))
    with pytest.raises(StreamError, match="finish_reason"):
        await qwen.stream("hi").get_final_completion()
    answer_with(api, sse(chunk({"content": "a"}, finish="stop"), done=False))
    assert (await qwen.stream("hi").get_final_completion()).content == "a"


async def test_stream_is_lazy_and_closes_on_early_exit(api, qwen):
    calls = answer_with(api, sse(chunk({"content": "a"}), chunk({"content": "b"}, finish="stop")))
    stream = qwen.stream("hi")
    assert calls.requests == []
    async with stream:
        first = await stream.__anext__()
    assert first.choices[0].delta.content == "a"
    assert stream.response.is_closed
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.completion


async def test_stream_error_status_is_retried_before_the_first_byte(api, qwen, sleeps):
    calls = answer_with(api, status(503), sse(chunk({"content": "ok"}, finish="stop")))
    assert (await qwen.stream("hi").get_final_completion()).content == "ok"
    assert len(calls.requests) == 2
    assert sleeps == [0.5]


async def test_send_with_stream_true_and_a_json_answer(api, qwen):
    answer_with(api, ok(completion("whole", usage=USAGE, meta=META)))
    request = build_request("hi", stream=True)
    result = await qwen.send(request)
    assert result.content == "whole"
    assert result.cost.credits_used == 150


# -- billing, models, prices, lifecycle -----------------------------------------------------------


async def test_balance_models_and_prices(api, qwen):
    api.get("http://127.0.0.1:9/v2/billing").mock(
        return_value=httpx.Response(200, json={"current_balance": 3.5, "currency": "USD"})
    )
    models = {
        "data": [{"id": MODEL, "pricing": {"input": {"price": 2.6, "per": 1e6}, "output": {"price": 7.8}}}]
    }
    route = api.get(f"{BASE_URL}/models").mock(return_value=httpx.Response(200, json=models))
    assert (await qwen.get_balance())["current_balance"] == 3.5
    assert [m["id"] for m in await qwen.list_models(include_pricing=True)] == [MODEL]
    assert route.calls[-1].request.url.params["include"] == "pricing"
    table = await qwen.fetch_prices()
    assert (table.get(MODEL).input, table.get(MODEL).output) == (Decimal("2.6"), Decimal("7.8"))


async def test_connection_limit_and_a_given_http_client(api):
    client = AsyncQwenClient(KEY, base_url=BASE_URL, max_connections=7)
    assert isinstance(client._http._transport, AiohttpTransport)
    assert client._http._transport.max_connections == 7
    await client.aclose()
    assert client._http.is_closed
    calls = answer_with(api, ok())
    http = httpx.AsyncClient()
    async with AsyncQwenClient(KEY, base_url=BASE_URL, http_client=http) as client:
        await client.chat("hi")
    assert len(calls.requests) == 1
    assert not http.is_closed
    await http.aclose()


async def test_the_sync_and_async_clients_send_the_same_body(api):
    from airflow_provider_qwen.client.client import QwenClient

    calls = answer_with(api, ok())
    params = {"temperature": 0.3, "stop": ["x"], "tools": None, "reasoning": {"effort": "high"}}
    QwenClient(KEY, base_url=BASE_URL).chat("same", **params)
    async with AsyncQwenClient(KEY, base_url=BASE_URL) as client:
        await client.chat("same", **params)
    first, second = calls.bodies
    assert first == second
    assert json.dumps(first)  # plain JSON
