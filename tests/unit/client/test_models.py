"""Response models: the published examples parse, conveniences work, unknown things are kept."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.models import CallInfo, ChatCompletion, ChatCompletionChunk
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.request import build_request
from tests.support.client_helpers import bind

MODEL = "alibaba/qwen3.7-max"


def load(fixture_path: Path, name: str) -> dict[str, Any]:
    return json.loads((fixture_path / name).read_text())


@pytest.mark.parametrize("from_json", [True, False], ids=["json-bytes", "dict"])
def test_the_qwen_example_parses_with_its_conveniences(fixture_path: Path, from_json: bool):
    raw = (fixture_path / "qwen3.7-max-response.json").read_text()
    parsed = (
        ChatCompletion.model_validate_json(raw)
        if from_json
        else ChatCompletion.model_validate(json.loads(raw))
    )
    completion = bind(parsed, requested_model=MODEL, inference_id="inf-123")

    assert completion.content.startswith("Hi there! \n\nAs an AI")
    assert completion.content.endswith("most defining trait of your species?")
    assert completion.reasoning_content.startswith("Here's a thinking process")
    assert completion.finish_reason == "stop"
    assert completion.tool_calls == []
    assert completion.refusal is None
    assert completion.usage.prompt_tokens == 19
    assert completion.usage.completion_tokens == 1777
    assert completion.usage.reasoning_tokens == 1244
    assert completion.usage.total_tokens == 1796
    assert completion.usage.cached_tokens == 0
    assert completion.cost == Cost(34776, Decimal("0.017388"), False)
    assert completion.cost.usd_spent == Decimal(34776) / 2_000_000  # exact, not a float
    assert completion.model == MODEL  # as requested; the wire says "qwen3.7-max"
    assert completion.served_model == "qwen3.7-max"
    assert completion.inference_id == "inf-123"
    assert completion.id == "chatcmpl-89470846-6805-952f-9516-a86c3b711a19"


def test_the_schema_example_parses_with_its_conveniences(fixture_path: Path):
    completion = ChatCompletion.model_validate(load(fixture_path, "schema-example-response.json"))
    assert completion.content.startswith("Hello! I'm just a program")
    assert completion.reasoning_content is None
    assert completion.tool_calls == []
    assert completion.usage.completion_tokens == 914
    assert completion.usage.reasoning_tokens == 0  # completion_tokens_details is null
    assert completion.cost == Cost(120000, Decimal("0.06"), False)
    assert completion.model == MODEL  # unbound: the wire model
    assert completion.inference_id is None


def test_reported_cost_wins_over_an_estimate_and_a_bound_cost_wins_over_both(fixture_path: Path):
    data = load(fixture_path, "schema-example-response.json")
    assert not ChatCompletion.model_validate(data).cost.estimated
    bound = Cost(7, Decimal("0.0000035"))
    completion = ChatCompletion.model_validate(data)
    completion.call = CallInfo(requested_model=MODEL, cost=bound)
    assert completion.cost is bound


def test_an_unbound_completion_never_estimates_on_its_own(fixture_path: Path):
    data = load(fixture_path, "qwen3.7-max-response.json")
    del data["meta"]
    assert ChatCompletion.model_validate(data).cost == Cost(0, Decimal(0), True)


def test_without_a_reported_cost_the_client_estimates_from_tokens(fixture_path: Path):
    data = load(fixture_path, "qwen3.7-max-response.json")
    del data["meta"]
    with QwenClient("k", base_url="http://127.0.0.1:9/v1") as client:
        completion = client._finish(
            ChatCompletion.model_validate(data), httpx.Headers(), build_request("hi", model=MODEL), "rid"
        )
    cost = completion.cost
    assert cost.estimated is True
    # shipped price: 2.60 in / 7.80 out per 1M; reasoning tokens are in completion_tokens
    assert cost.usd_spent == (19 * Decimal("2.60") + 1777 * Decimal("7.80")) / 1_000_000
    assert cost.credits_used == 27820  # 0.01391 USD * 2e6


def test_credits_without_usd_derive_usd_exactly():
    completion = ChatCompletion.model_validate(
        {"choices": [{"message": {"content": "x"}}], "meta": {"usage": {"credits_used": 3}}}
    )
    assert completion.cost == Cost(3, Decimal("0.0000015"), False)


def test_unknown_keys_and_finish_reasons_are_kept():
    data = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen3.7-max",
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "hi",
                    "annotations": [{"type": "url_citation"}],
                    "vendor_field": {"a": 1},
                },
                "finish_reason": "end_turn",
                "stop_reason": 7,
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2, "cost_details": {"x": 1}},
    }
    completion = ChatCompletion.model_validate(data)
    assert completion.finish_reason == "end_turn"
    assert completion.message.model_extra["annotations"] == [{"type": "url_citation"}]
    wire = completion.to_wire()
    assert wire["system_fingerprint"] == "fp_1"
    assert wire["model"] == "qwen3.7-max"
    assert wire["choices"][0]["stop_reason"] == 7
    assert wire["choices"][0]["message"]["vendor_field"] == {"a": 1}
    assert wire["usage"]["cost_details"] == {"x": 1}


def test_tool_calls_are_parsed_and_arguments_stay_raw_strings():
    completion = ChatCompletion.model_validate(
        {
            "choices": [
                {
                    "message": {
                        "content": None,
                        "tool_calls": [
                            {
                                "id": "c1",
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a": 1}'},
                            },
                            {
                                "id": "c2",
                                "type": "function",
                                "function": {"name": "g", "arguments": "{not json"},
                            },
                        ],
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        }
    )
    assert [(c.id, c.function.name, c.function.arguments) for c in completion.tool_calls] == [
        ("c1", "f", '{"a": 1}'),
        ("c2", "g", "{not json"),
    ]
    assert completion.content is None


def test_a_completion_without_choices_has_empty_conveniences():
    completion = ChatCompletion.model_validate({"id": "x"})
    assert completion.content is None
    assert completion.finish_reason is None
    assert completion.tool_calls == []
    assert completion.cost == Cost(0, Decimal(0), True)  # no usage: an estimate of nothing


def test_estimates_use_the_given_price_table():
    completion = ChatCompletion.model_validate(
        {"choices": [{"message": {"content": ""}}], "usage": {"prompt_tokens": 1000, "completion_tokens": 0}}
    )
    table = PriceTable().with_overrides({MODEL: {"input": "1", "output": "2"}})
    with QwenClient("k", base_url="http://127.0.0.1:9/v1", prices=table) as client:
        bound = client._finish(completion, httpx.Headers(), build_request("hi", model=MODEL), "rid")
    assert bound.cost.usd_spent == Decimal("0.001")


def test_stream_chunks_parse_leniently():
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "reasoning_content": "thinking",
                        "tool_calls": [{"index": 0, "function": {"arguments": "{"}}],
                    },
                    "finish_reason": None,
                }
            ],
            "new_field": True,
        }
    )
    assert chunk.choices[0].delta.reasoning_content == "thinking"
    assert chunk.choices[0].delta.tool_calls[0].function.arguments == "{"
    assert chunk.model_extra == {"new_field": True}
    no_delta = ChatCompletionChunk.model_validate({"choices": [{"index": 0, "finish_reason": "stop"}]})
    assert no_delta.choices[0].delta.content is None
    usage = ChatCompletionChunk.model_validate(
        {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}}
    )
    assert usage.usage.total_tokens == 5


def test_null_where_a_field_has_a_default_means_the_default():
    completion = ChatCompletion.model_validate(
        {
            "id": None,
            "model": None,
            "created": None,
            "choices": None,
            "usage": {"prompt_tokens": None, "completion_tokens": 3, "total_tokens": 3},
            "vendor_field": None,
        }
    )
    assert completion.id == ""
    assert completion.choices == []
    assert completion.usage.prompt_tokens == 0
    assert completion.model_extra["vendor_field"] is None  # unknown keys are kept as sent
    chunk = ChatCompletionChunk.model_validate(
        {"id": None, "choices": [{"delta": None, "finish_reason": None}]}
    )
    assert chunk.choices[0].delta.content is None
