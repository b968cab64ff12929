"""QwenClient over respx: what it sends (schema-checked), how it reads answers, errors, cost, secrets."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InvalidRequestError,
    InvalidResponseError,
    NotFoundError,
    QwenError,
    RateLimitError,
    ServerError,
)
from airflow_provider_qwen.client.pricing import Price, PriceTable
from airflow_provider_qwen.client.request import build_request
from tests.support.client_helpers import (
    BASE_URL,
    CHAT_URL,
    KEY,
    MODEL,
    Recorder,
    Sleeps,
    completion,
    ok,
    status,
)


@pytest.fixture
def qwen() -> QwenClient:
    with QwenClient(KEY, base_url=BASE_URL, retry=Sleeps().policy()) as client:
        yield client


def answer_with(api, *replies) -> Recorder:
    calls = Recorder(*replies)
    api.post(CHAT_URL).mock(side_effect=calls)
    return calls


# -- what is sent ---------------------------------------------------------------------------------


def test_chat_sends_a_schema_valid_body_with_auth_and_ids(api, qwen):
    calls = answer_with(api, ok())
    result = qwen.chat(
        [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
        temperature=0.2,
        max_completion_tokens=50,
        stop=["END"],
        reasoning_effort="low",
    )
    (request,) = calls.requests
    assert calls.bodies[0] == {
        "model": MODEL,
        "messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "stop": ["END"],
        "reasoning_effort": "low",
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["accept"] == "application/json"
    assert request.headers["user-agent"].startswith("airflow-provider-qwen/")
    assert request.headers["x-client-request-id"].startswith("qwen-")
    assert result.content == "Hello!"


def test_every_schema_field_is_sent_as_the_schema_wants(api, qwen):
    calls = answer_with(api, ok())
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    request = build_request(
        [
            {"role": "system", "content": [{"type": "text", "text": "sys"}]},
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        max_tokens=100,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        normalize_tool_schemas=True,
        parallel_tool_calls=False,
        top_p=0.9,
        stop="x",
        logprobs=True,
        top_logprobs=3,
        logit_bias={"42": -10},
        reasoning={"max_tokens": 1000, "exclude": True},
    )
    qwen.send(request)
    assert calls.bodies[0] == request.to_body()  # what the model says is what went on the wire


def test_extra_body_is_merged_for_other_models(api, qwen):
    calls = answer_with(api, ok())
    qwen.chat("hi", model="alibaba/qwen3-max", extra_body={"enable_thinking": False})
    assert calls.bodies[0]["enable_thinking"] is False
    assert calls.bodies[0]["model"] == "alibaba/qwen3-max"
    assert "extra_body" not in calls.bodies[0]


def test_the_client_default_model_and_a_per_call_model(api):
    calls = answer_with(api, ok())
    client = QwenClient(KEY, base_url=BASE_URL, model="alibaba/qwen3-max")
    assert client.chat("hi").model == "alibaba/qwen3-max"
    assert client.chat("hi", model=MODEL).model == MODEL
    assert [b["model"] for b in calls.bodies] == ["alibaba/qwen3-max", MODEL]


def test_bad_parameters_never_reach_the_wire(api, qwen):
    calls = answer_with(api, ok())
    with pytest.raises(InvalidRequestError, match="temperature"):
        qwen.chat("hi", temperature=2.5)
    with pytest.raises(InvalidRequestError, match="tempreature"):
        qwen.chat("hi", tempreature=0.5)
    assert calls.requests == []


def test_client_request_id_given_by_the_caller(api, qwen):
    calls = answer_with(api, ok())
    qwen.send(build_request("hi"), client_request_id="batch-7:item.3")
    assert calls.request_ids == ["batch-7:item.3"]
    with pytest.raises(InvalidRequestError, match="client_request_id"):
        qwen.send(build_request("hi"), client_request_id="has space")
    with pytest.raises(InvalidRequestError, match="client_request_id"):
        qwen.send(build_request("hi"), client_request_id="x" * 129)
    assert len(calls.requests) == 1


def test_send_refuses_a_plain_dict(qwen):
    with pytest.raises(TypeError, match="build_request"):
        qwen.send({"model": MODEL, "messages": []})  # type: ignore[arg-type]


def test_no_key_sends_no_authorization(api):
    calls = answer_with(api, ok())
    QwenClient(None, base_url=BASE_URL).chat("hi")
    assert "authorization" not in calls.requests[0].headers


def test_default_headers_and_base_url_checks(api):
    calls = answer_with(api, ok())
    QwenClient(KEY, base_url=BASE_URL + "/", default_headers={"X-Team": "data"}).chat("hi")
    assert calls.requests[0].url == CHAT_URL
    assert calls.requests[0].headers["x-team"] == "data"
    with pytest.raises(ValueError, match=r"base_url='api\.aimlapi\.com/v1'"):
        QwenClient(KEY, base_url="api.aimlapi.com/v1")


def test_timeouts_reach_httpx(api):
    calls = answer_with(api, ok())
    QwenClient(KEY, base_url=BASE_URL, timeout=42.0, connect_timeout=3.0).chat("hi")
    timeout = calls.requests[0].extensions["timeout"]
    assert timeout == {"connect": 3.0, "read": 42.0, "write": 42.0, "pool": 42.0}


def test_a_given_http_client_is_used_and_not_closed(api):
    calls = answer_with(api, ok())
    http = httpx.Client(headers={"X-From": "mine"})
    with QwenClient(KEY, base_url=BASE_URL, http_client=http) as client:
        client.chat("hi")
    assert calls.requests[0].headers["x-from"] == "mine"
    assert not http.is_closed
    http.close()


# -- answers --------------------------------------------------------------------------------------


def test_published_examples_parse(api, qwen, fixture_path):
    for name, credits in [("qwen3.7-max-response.json", 34776), ("schema-example-response.json", 120000)]:
        body = json.loads((fixture_path / name).read_text())
        answer_with(api, ok(body, inference_id="inf-fixture"))
        result = qwen.chat("Hi! What do you think about mankind?")
        assert result.content == body["choices"][0]["message"]["content"]
        assert result.cost.credits_used == credits
        assert result.cost.usd_spent == Decimal(str(body["meta"]["usage"]["usd_spent"]))
        assert result.cost.estimated is False
        assert result.inference_id == "inf-fixture"
        assert result.model == MODEL  # as requested, though the wire says "qwen3.7-max" for the first
    assert result.served_model == "alibaba/qwen3.7-max"


def test_reasoning_and_usage_of_the_qwen_example(api, qwen, fixture_path):
    answer_with(api, ok(json.loads((fixture_path / "qwen3.7-max-response.json").read_text())))
    result = qwen.chat("Hi!")
    assert result.reasoning_content.startswith("Here's a thinking process")
    assert result.usage.reasoning_tokens == 1244
    assert result.usage.completion_tokens == 1777
    assert result.finish_reason == "stop"


def test_unknown_keys_and_finish_reasons_are_kept(api, qwen):
    body = completion(system_fingerprint="fp-1", provider="alibaba")
    body["choices"][0]["finish_reason"] = "end_turn"
    body["choices"][0]["message"]["annotations"] = [{"type": "note"}]
    body["choices"][0]["vendor_extra"] = 1
    answer_with(api, ok(body))
    result = qwen.chat("hi")
    assert result.finish_reason == "end_turn"
    assert result.model_extra == {"system_fingerprint": "fp-1", "provider": "alibaba"}
    assert result.message.model_extra["annotations"] == [{"type": "note"}]
    assert result.to_wire()["system_fingerprint"] == "fp-1"


def test_tool_calls_in_a_whole_answer(api, qwen):
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1'}}],
    }
    answer_with(
        api, ok(completion(choices=[{"index": 0, "message": message, "finish_reason": "tool_calls"}]))
    )
    result = qwen.chat("hi")
    assert result.tool_calls[0].function.arguments == '{"a": 1'  # invalid JSON kept verbatim
    assert result.finish_reason == "tool_calls"


@pytest.mark.parametrize(
    "content",
    [b"<html>oops</html>", b'{"foo": 1}', b'{"choices": []}', b'{"choices": "many"}', b"", b"[1, 2]"],
)
def test_a_2xx_that_is_not_a_completion(api, qwen, content):
    headers = {"x-inference-id": "inf-odd", "x-aimlapi-credits-used": "100", "x-aimlapi-usd-spent": "0.00005"}
    answer_with(api, httpx.Response(200, content=content, headers=headers))
    with pytest.raises(InvalidResponseError) as caught:
        qwen.chat("hi")
    error = caught.value
    assert error.inference_id == "inf-odd"
    assert error.status_code == 200
    assert error.charge.reported.credits_used == 100  # paid: operators record it
    assert error.charge.reported.usd_spent == Decimal("0.00005")


def test_invalid_answer_without_cost_headers_has_no_cost(api, qwen):
    answer_with(api, httpx.Response(200, content=b"nope"))
    with pytest.raises(InvalidResponseError) as caught:
        qwen.chat("hi")
    assert caught.value.charge.reported is None


# -- cost -----------------------------------------------------------------------------------------


def test_cost_from_meta_wins_over_headers(api, qwen):
    answer_with(api, ok(x_aimlapi_credits_used="999"))
    cost = qwen.chat("hi").cost
    assert (cost.credits_used, cost.usd_spent, cost.estimated) == (260, Decimal("0.00013"), False)


def test_cost_from_headers_without_meta(api, qwen):
    body = completion()
    del body["meta"]
    answer_with(
        api,
        httpx.Response(
            200, json=body, headers={"x-aimlapi-credits-used": "400", "x-aimlapi-usd-spent": "0.0002"}
        ),
    )
    cost = qwen.chat("hi").cost
    assert (cost.credits_used, cost.usd_spent, cost.estimated) == (400, Decimal("0.0002"), False)


def test_cost_from_credits_only(api, qwen):
    answer_with(api, ok(completion(meta={"usage": {"credits_used": 34776}})))
    cost = qwen.chat("hi").cost
    assert (cost.credits_used, cost.usd_spent, cost.estimated) == (34776, Decimal("0.017388"), False)


def test_cost_estimated_from_the_clients_price_table(api):
    body = completion(
        usage={"prompt_tokens": 1_000_000, "completion_tokens": 100_000, "total_tokens": 1_100_000}
    )
    del body["meta"]
    answer_with(api, ok(body))
    prices = PriceTable({MODEL: Price(Decimal("2"), Decimal("10"))})
    cost = QwenClient(KEY, base_url=BASE_URL, prices=prices).chat("hi").cost
    assert cost.estimated is True
    assert cost.usd_spent == Decimal("3")  # 1M x 2 + 0.1M x 10, per 1M
    assert cost.credits_used == 6_000_000


# -- errors ---------------------------------------------------------------------------------------

AIMLAPI_ERROR = {
    "message": "temperature must not be greater than 2",
    "path": "/v1/chat/completions",
    "requestId": "req-1",
    "statusCode": 400,
    "timestamp": "2026-01-01T00:00:00Z",
}
OPENAI_ERROR = {
    "error": {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "code": "invalid_api_key",
        "param": None,
    }
}


@pytest.mark.parametrize(
    ("code", "body", "error", "text"),
    [
        (400, AIMLAPI_ERROR, BadRequestError, "temperature must not be greater than 2"),
        (401, OPENAI_ERROR, AuthenticationError, "Incorrect API key provided [type=invalid_request_error"),
        (403, {"message": "Insufficient credits"}, InsufficientCreditsError, "Insufficient credits"),
        (404, {"message": ["model not found", "see /models"]}, NotFoundError, "model not found; see /models"),
        (422, {"error": "unprocessable"}, BadRequestError, "unprocessable"),
        (418, {"message": "teapot"}, APIStatusError, "teapot"),
    ],
)
def test_error_bodies_of_both_shapes(api, qwen, code, body, error, text):
    calls = answer_with(api, status(code, body, x_inference_id="inf-e"))
    with pytest.raises(error) as caught:
        qwen.chat("hi")
    assert text in str(caught.value)
    assert caught.value.status_code == code
    assert caught.value.inference_id == "inf-e"
    assert caught.value.client_request_id == calls.request_ids[0]
    assert f"status={code}" in str(caught.value)


def test_an_html_502_page_is_a_clean_server_error(api):
    page = (
        "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    )
    calls = answer_with(api, status(502, page))
    with pytest.raises(ServerError) as caught:
        QwenClient(KEY, base_url=BASE_URL, max_retries=0).chat("hi")
    error = caught.value
    assert len(calls.requests) == 1
    assert error.status_code == 502
    assert "502 Bad Gateway" in str(error)
    assert "<" not in str(error)  # tags stripped
    assert not isinstance(error.__context__, ValueError)  # no JSONDecodeError behind it
    assert error.body == page


def test_rate_limit_error_carries_the_retry_after(api):
    answer_with(api, status(429, {"message": "too many"}, retry_after_ms="300"))
    with pytest.raises(RateLimitError) as caught:
        QwenClient(KEY, base_url=BASE_URL, max_retries=0).chat("hi")
    assert caught.value.retry_after == 0.3


def test_every_error_is_a_qwen_error(api, qwen):
    answer_with(api, httpx.ConnectError)
    with pytest.raises(QwenError):
        QwenClient(KEY, base_url=BASE_URL, max_retries=0).chat("hi")


# -- the key never leaks --------------------------------------------------------------------------


def test_the_key_is_not_in_the_clients_repr_or_str():
    client = QwenClient(KEY, base_url=BASE_URL)
    for text in (repr(client), str(client)):
        assert KEY not in text
        assert "QwenClient(base_url='http://127.0.0.1:9/v1'" in repr(client)


@pytest.mark.parametrize(
    "reply",
    [
        status(401, {"message": f"Invalid key {KEY}"}),
        status(401, {"error": {"message": f"bad key {KEY}", "type": "auth"}}),
        status(500, f"<html>key={KEY}</html>"),
        httpx.Response(200, content=f"key {KEY}".encode()),
    ],
)
def test_the_key_is_not_in_errors_even_when_the_server_echoes_it(api, reply):
    answer_with(api, reply)
    with pytest.raises(QwenError) as caught:
        QwenClient(KEY, base_url=BASE_URL, max_retries=0).chat("hi")
    error = caught.value
    for text in (
        str(error),
        repr(error),
        error.message,
        json.dumps(error.body, default=str),
        str(error.args),
    ):
        assert KEY not in text


def test_the_key_is_not_in_transport_errors(api):
    class Leaky(httpx.ConnectError):
        pass

    def fail(request):
        raise Leaky(f"proxy refused {KEY}", request=request)

    api.post(CHAT_URL).mock(side_effect=fail)
    with pytest.raises(APIConnectionError) as caught:
        QwenClient(KEY, base_url=BASE_URL, max_retries=0).chat("hi")
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value)


# -- billing, models, prices ----------------------------------------------------------------------


def test_get_balance_calls_v2_billing_with_the_key(api, qwen):
    calls = Recorder(httpx.Response(200, json={"current_balance": 12.5, "currency": "USD"}))
    api.get("http://127.0.0.1:9/v2/billing").mock(side_effect=calls)
    assert qwen.get_balance() == {"current_balance": 12.5, "currency": "USD"}
    assert calls.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_get_balance_with_a_bad_key_and_a_bad_answer(api, qwen):
    api.get("http://127.0.0.1:9/v2/billing").mock(
        side_effect=[status(401, {"message": "Unauthorized"}), httpx.Response(200, json={"hello": 1})]
    )
    with pytest.raises(AuthenticationError):
        qwen.get_balance()
    with pytest.raises(InvalidResponseError, match="current_balance"):
        qwen.get_balance()


MODELS = {
    "object": "list",
    "data": [
        {
            "id": MODEL,
            "object": "model",
            "type": "chat-completion",
            "pricing": {
                "input": {"price": 2.6, "per": 1000000},
                "output": {"price": 7.8, "per": 1000000},
                "cached_input": {"price": 0.52, "per": 1000000},
            },
        },
        {
            "id": "alibaba/qwen-plus",
            "pricing": {"input": {"price": 0.0004, "per": 1000}, "output": {"price": 1.2}},
        },
        {"id": "no-pricing", "type": "chat-completion"},
        {"id": "broken", "pricing": {"input": {"per": 10}, "output": {"price": 1, "per": 1}}},
    ],
}


def test_list_models_with_and_without_pricing(api, qwen):
    route = api.get(f"{BASE_URL}/models").mock(return_value=httpx.Response(200, json=MODELS))
    assert [m["id"] for m in qwen.list_models()] == [MODEL, "alibaba/qwen-plus", "no-pricing", "broken"]
    assert "include" not in route.calls[-1].request.url.params
    qwen.list_models(include_pricing=True)
    assert route.calls[-1].request.url.params["include"] == "pricing"
    api.get(f"{BASE_URL}/models").mock(return_value=httpx.Response(200, json=MODELS["data"]))
    assert len(qwen.list_models()) == 4  # a bare list is accepted too


def test_fetch_prices_converts_price_per_n_to_per_million(api, qwen):
    route = api.get(f"{BASE_URL}/models").mock(return_value=httpx.Response(200, json=MODELS))
    table = qwen.fetch_prices()
    assert route.calls[-1].request.url.params["include"] == "pricing"
    assert table.get(MODEL) == Price(Decimal("2.6"), Decimal("7.8"), Decimal("0.52"))
    assert table.get("alibaba/qwen-plus") == Price(Decimal("0.4"), Decimal("1.2"))
    assert table.get("no-pricing") is None
    assert table.get("broken") is None
    qwen.fetch_prices(MODEL)
    assert route.calls[-1].request.url.params["id"] == MODEL


def test_fetch_prices_without_any_pricing_is_an_error(api, qwen):
    api.get(f"{BASE_URL}/models").mock(return_value=httpx.Response(200, json={"data": [{"id": "x"}]}))
    with pytest.raises(InvalidResponseError, match="pricing"):
        qwen.fetch_prices()
