"""The validated request: bad input is refused before anything is sent, naming field, value and range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.request import PARAMETER_NAMES, RANGES, ChatRequest, build_request

SCHEMA = Path(__file__).parents[3] / "airflow_provider_qwen/testing/schemas/qwen3.7-max.openapi.json"
HI = [{"role": "user", "content": "hi"}]


def tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def refusal(messages: Any = HI, **params: Any) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        build_request(messages, **params)
    return str(caught.value)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"temperature": 2.5}, ["temperature=2.5", "0 to 2"], id="temperature"),
        pytest.param({"top_p": 0}, ["top_p=0", "0.01 to 1"], id="top_p"),
        pytest.param(
            {"stop": ["a", "b", "c", "d", "e"]}, ["stop=['a', 'b', 'c', 'd', 'e']", "at most 4"], id="stop"
        ),
        pytest.param({"top_logprobs": 3}, ["top_logprobs=3", "logprobs=True"], id="top_logprobs-alone"),
        pytest.param(
            {"top_logprobs": 21, "logprobs": True}, ["top_logprobs=21", "0 to 20"], id="top_logprobs"
        ),
        pytest.param(
            {"reasoning_effort": "extreme"},
            ["reasoning_effort='extreme'", "'low', 'medium' or 'high'"],
            id="reasoning_effort",
        ),
        pytest.param(
            {"tools": [tool("get weather")]},
            ["tools[0].function.name='get weather'", "1-64 characters of letters, digits, '_' and '-'"],
            id="tool-name",
        ),
        pytest.param(
            {"tools": [tool("lookup")], "tool_choice": {"type": "function", "function": {"name": "search"}}},
            ["tool_choice='search'", "not in tools", "['lookup']"],
            id="tool_choice-missing-tool",
        ),
        pytest.param(
            {"tool_choice": "any"}, ["tool_choice='any'", "'none', 'auto', 'required'"], id="choice-word"
        ),
        pytest.param(
            {"temprature": 1}, ["unknown parameter 'temprature'", "temperature", "extra_body"], id="typo"
        ),
        pytest.param({"max_tokens": 0}, ["max_tokens=0", "1 or more"], id="max_tokens"),
        pytest.param({"logit_bias": {"42": 101}}, ["logit_bias.42=101", "-100 to 100"], id="logit_bias"),
        pytest.param({"logit_bias": {"cat": 1}}, ["logit_bias", "'cat'", "token ids"], id="logit_bias-key"),
        pytest.param(
            {"reasoning": {"effort": "low", "max_tokens": 100}},
            ["reasoning.effort='low'", "reasoning.max_tokens=100", "set one"],
            id="reasoning-both",
        ),
        pytest.param(
            {"stream_options": {"include_usage": True}}, ["stream_options", "stream=True"], id="opts"
        ),
        pytest.param(
            {"tool_choice": "required"}, ["tool_choice='required'", "at least one tool"], id="required"
        ),
        pytest.param({"tools": [tool("a"), tool("a")]}, ["unique", "'a'"], id="duplicate-tools"),
        pytest.param(
            {"tools": [tool(f"t{i}") for i in range(129)]}, ["tools=", "at most 128"], id="129-tools"
        ),
        pytest.param(
            {"extra_body": {"top_p": 0.5}}, ["extra_body key 'top_p'", "pass it directly"], id="extra"
        ),
    ],
)
def test_bad_parameters_are_refused_naming_field_value_and_range(params: dict[str, Any], expected: list[str]):
    message = refusal(**params)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param([], ["messages=[]", "at least 1"], id="empty"),
        pytest.param([{"role": "bot", "content": "x"}], ["messages[0]", "'bot'", "'user'"], id="role"),
        pytest.param([{"role": "user"}], ["messages[0].content", "missing"], id="no-content"),
        pytest.param(
            [{"role": "tool", "content": "4"}], ["messages[0].tool_call_id", "missing"], id="tool-id"
        ),
        pytest.param(
            [{"role": "assistant"}], ["assistant message needs content or tool_calls"], id="assistant"
        ),
        pytest.param(
            [{"role": "assistant", "content": "x", "reasoning_content": "y"}],
            ["messages[0].reasoning_content", "never sent back"],
            id="reasoning-echo",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            ["messages[0].content", "'text'"],
            id="non-text-part",
        ),
    ],
)
def test_bad_messages_are_refused(messages: list[dict[str, Any]], expected: list[str]):
    message = refusal(messages)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_all_four_roles_and_text_parts_are_accepted_and_sent_as_given():
    history = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "What is 6*7?", "name": "ann"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
        {"role": "assistant", "content": "42"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}, {"type": "text", "text": "!"}]},
    ]
    body = build_request(history, tools=[tool("calc")], tool_choice="auto").to_body()
    assert [m["role"] for m in body["messages"]] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "Be brief."}]
    assert "content" not in body["messages"][2]  # null content is left out, tool_calls carry the turn
    assert body["messages"][2]["tool_calls"][0]["function"]["name"] == "calc"
    assert body["messages"][3] == {
        "role": "tool",
        "content": [{"type": "text", "text": "42"}],
        "tool_call_id": "c1",
    }


def test_a_string_is_one_user_message_and_the_default_model_is_used():
    body = build_request("hello").to_body()
    assert body == {"model": "alibaba/qwen3.7-max", "messages": [{"role": "user", "content": "hello"}]}
    assert build_request("hello", model="alibaba/qwen-plus").model == "alibaba/qwen-plus"


def test_every_parameter_within_its_bounds_is_accepted_and_sent():
    params = {
        "max_completion_tokens": 1,
        "max_tokens": 1,
        "temperature": 2,
        "top_p": 0.01,
        "stop": ["a", "b", "c", "d"],
        "logprobs": True,
        "top_logprobs": 20,
        "logit_bias": {"42": -100, "7": 100},
        "reasoning_effort": "high",
        "reasoning": {"max_tokens": 512, "exclude": True},
        "tools": [tool("f")],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "parallel_tool_calls": False,
        "normalize_tool_schemas": True,
    }
    request = build_request(HI, **params)
    body = request.to_body()
    for name, value in params.items():
        assert body[name] == value, name
    assert request.is_named_tool_call
    streamed = build_request(HI, stream=True, stream_options={"include_usage": True}).to_body()
    assert streamed["stream"] is True
    assert streamed["stream_options"] == {"include_usage": True}


def test_none_values_are_not_sent():
    body = build_request(HI, temperature=None, stop=None).to_body()
    assert "temperature" not in body
    assert "stop" not in body


def test_extra_body_is_merged_into_the_body_for_other_models():
    request = build_request(
        HI,
        model="alibaba/qwen-plus",
        temperature=0.5,
        extra_body={"enable_thinking": False, "response_format": {"type": "json_object"}},
    )
    body = request.to_body()
    assert body["enable_thinking"] is False
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.5
    assert "extra_body" not in body


def test_pydantic_messages_are_accepted():
    from airflow_provider_qwen.client.request import UserMessage

    assert build_request([UserMessage(content="hi")]).to_body()["messages"] == HI


def test_the_unknown_parameter_message_lists_every_allowed_name():
    message = refusal(seed=1)
    for name in PARAMETER_NAMES:
        assert name in message


def test_ranges_match_the_published_schema():
    schema = json.loads(SCHEMA.read_text())
    props = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"][
        "schema"
    ]["properties"]
    for path, (low, high) in RANGES.items():
        spec = props
        for part in path.split("."):
            spec = spec[part] if part in spec else spec["properties"][part]
        if path == "logit_bias":
            spec = spec["additionalProperties"]
        assert spec["minimum"] == low, path
        assert spec.get("maximum") == high, path


def test_ranges_match_the_model_constraints():
    for path, (low, high) in RANGES.items():
        if "." in path or path == "logit_bias":
            continue
        below = low - 0.001 if isinstance(low, float) else low - 1
        kwargs: dict[str, Any] = {"logprobs": True} if path == "top_logprobs" else {}
        with pytest.raises(InvalidRequestError):
            build_request(HI, **{path: below}, **kwargs)
        build_request(HI, **{path: low}, **kwargs)
        if high is not None:
            build_request(HI, **{path: high}, **kwargs)
            with pytest.raises(InvalidRequestError):
                build_request(HI, **{path: high + 1}, **kwargs)


def test_chat_request_forbids_unknown_fields_directly_too():
    with pytest.raises(ValueError, match="temprature"):
        ChatRequest.model_validate({"messages": HI, "temprature": 1})


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"stream": True, "stream_options": {"include_usage": "maybe"}},
            "stream_options.include_usage='maybe'",
            id="stream_options",
        ),
        pytest.param(
            {"tools": [{"type": "function", "function": {"name": "f", "strict": "maybe"}}]},
            "tools[0].function.strict='maybe'",
            id="strict",
        ),
    ],
)
def test_nested_errors_keep_the_full_field_path(params: dict[str, Any], expected: str):
    assert expected in refusal(**params)
