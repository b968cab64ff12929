"""Refused before paying, in the one request validator: booleans for numbers and the reverse, empty
questions, and text UTF-8 cannot carry. Every path (hook, client, operators, batch) builds through it."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx
from airflow.sdk import Connection

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.hooks.qwen import QwenHook

BASE_URL = "http://127.0.0.1:8124/v1"
HI = [{"role": "user", "content": "hi"}]
CALL = {"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}


def refusal(messages: Any = HI, **params: Any) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        build_request(messages, **params)
    return str(caught.value)


@pytest.fixture
def hook(mocker: Any) -> Any:
    conn = Connection(conn_id="qwen_refuse", conn_type="qwen", host=BASE_URL, password="sk-refuse-1")
    mocker.patch.object(QwenHook, "get_connection", return_value=conn)
    with respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post(f"{BASE_URL}/chat/completions").mock(return_value=httpx.Response(500))
        yield QwenHook(qwen_conn_id="qwen_refuse"), route


# -- bool <-> number ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"temperature": True}, ["temperature=True", "boolean is not a number", "0 to 2"]),
        pytest.param(
            {"max_completion_tokens": True},
            ["max_completion_tokens=True", "boolean is not an integer", "1 or more"],
        ),
        pytest.param({"max_tokens": False}, ["max_tokens=False", "boolean is not an integer"]),
        pytest.param({"top_p": True}, ["top_p=True", "0.01 to 1"]),
        pytest.param({"logprobs": True, "top_logprobs": True}, ["top_logprobs=True", "0 to 20"]),
        pytest.param({"logit_bias": {"42": True}}, ["logit_bias.42=True", "-100 to 100"]),
        pytest.param({"reasoning": {"max_tokens": True}}, ["reasoning.max_tokens=True", "1 or more"]),
        pytest.param({"stream": "yes"}, ["stream='yes'", "must be a boolean", "True or False"]),
        pytest.param({"logprobs": "yes"}, ["logprobs='yes'", "must be a boolean"]),
        pytest.param({"parallel_tool_calls": 1}, ["parallel_tool_calls=1", "must be a boolean"]),
        pytest.param({"normalize_tool_schemas": "true"}, ["normalize_tool_schemas='true'", "boolean"]),
        pytest.param(
            {"stream": True, "stream_options": {"include_usage": "yes"}},
            ["stream_options.include_usage='yes'", "must be a boolean"],
        ),
        pytest.param({"reasoning": {"exclude": "no"}}, ["reasoning.exclude='no'", "must be a boolean"]),
    ],
)
def test_booleans_and_numbers_are_never_taken_for_each_other(params: dict[str, Any], expected: list[str]):
    message = refusal(**params)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_profile_fields_refuse_booleans_too():
    flash = "alibaba/qwen3.5-flash"
    assert "seed=True" in refusal(model=flash, seed=True)
    assert "top_k=True: a boolean is not a number" in refusal(model=flash, top_k=True)
    assert "echo='yes'" in refusal(model=flash, echo="yes")


def test_numeric_text_is_still_read_as_its_number():
    body = build_request(HI, temperature="0.5", max_completion_tokens="64").to_body()
    assert body["temperature"] == 0.5
    assert body["max_completion_tokens"] == 64


def test_the_hook_refuses_a_boolean_temperature_without_sending(hook: Any):
    qwen, route = hook
    with pytest.raises(InvalidRequestError, match="temperature=True"):
        qwen.chat("hi", temperature=True)
    with pytest.raises(InvalidRequestError, match="stream='yes'"):
        qwen.chat("hi", stream="yes")
    assert route.call_count == 0


# -- empty questions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        pytest.param("", ["messages[0].content=''", "must have text"], id="empty-string"),
        pytest.param(
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  \n\t"}],
            ["messages[1].content='  \\n\\t'", "only whitespace"],
            id="whitespace-after-system",
        ),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": " "}, {"type": "text", "text": ""}]}],
            ["messages[0].content=", "must have text"],
            id="empty-parts",
        ),
        pytest.param(
            [{"role": "system", "content": "Be brief."}],
            ["roles: system", "no user or tool message"],
            id="system-only",
        ),
        pytest.param(
            [{"role": "system", "content": "s"}, {"role": "assistant", "content": "Hello"}],
            ["roles: system, assistant", "no user or tool message"],
            id="no-question",
        ),
    ],
)
def test_a_request_without_a_question_is_refused(messages: Any, expected: list[str]):
    message = refusal(messages)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


def test_hook_chat_of_an_empty_string_sends_nothing(hook: Any):
    qwen, route = hook
    with pytest.raises(InvalidRequestError, match=r"messages\[0\].content=''"):
        qwen.chat("")
    with pytest.raises(InvalidRequestError, match="only whitespace"):
        qwen.chat([{"role": "system", "content": "Be brief."}, {"role": "user", "content": " "}])
    assert route.call_count == 0


def test_tool_turns_with_null_assistant_content_are_accepted():
    history = [
        {"role": "user", "content": "6*7?"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    assert [m["role"] for m in build_request(history).to_body()["messages"]] == ["user", "assistant", "tool"]
    # a tool result is something to answer, even without a user turn in this request
    build_request([{"role": "assistant", "content": None, "tool_calls": [CALL]}, history[2]])


# -- text UTF-8 cannot carry -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "params", "where"),
    [
        pytest.param([{"role": "user", "content": "ab\ud800c"}], {}, "messages[0].content: character 2"),
        pytest.param(
            [
                {"role": "system", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "\udcff"}]},
            ],
            {},
            "messages[1].content[0].text: character 0",
            id="part",
        ),
        pytest.param(HI, {"stop": ["ok", "x\udc80"]}, "stop[1]: character 1", id="stop"),
    ],
)
def test_text_with_a_lone_surrogate_is_refused_naming_field_and_position(
    messages: Any, params: dict[str, Any], where: str
):
    message = refusal(messages, **params)
    assert where in message
    assert "cannot be encoded as UTF-8" in message
    message.encode("utf-8")  # the refusal itself is printable


def test_the_hook_refuses_a_surrogate_before_sending(hook: Any):
    qwen, route = hook
    with pytest.raises(InvalidRequestError, match=r"messages\[0\].content: character 5"):
        qwen.chat("Hello\ud800")
    assert route.call_count == 0
    json.dumps(build_request("Hello \U0001f600").to_body())  # a real astral character is fine
