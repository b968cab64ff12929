"""The emulator plays agents, over real sockets: named tools called (in parallel or one by one), tool
results answered in text drawn from them, the conversation validated as the service would, faults on
agent arguments, and scripted turns set in-process or over HTTP by a test in another process."""

from __future__ import annotations

import json
from typing import Any

import httpx
import jsonschema
import pytest

from airflow_provider_qwen.testing import Fault, QwenEmulator, Turn
from airflow_provider_qwen.testing.schema import assert_valid_request, chunk_errors, response_errors
from airflow_provider_qwen.testing.template import completion_tokens

MODEL = "alibaba/qwen3.7-max"
KEY = {"Authorization": "Bearer test-key"}
CITY = {
    "type": "object",
    "properties": {"city": {"type": "string", "minLength": 1}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather now", "parameters": CITY},
    },
    {"type": "function", "function": {"name": "get_time", "description": "Local time", "parameters": CITY}},
    {"type": "function", "function": {"name": "search_docs", "parameters": {"type": "object"}}},
]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTION = "Plan my afternoon in Paris. Use get_weather and get_time for Paris, then summarise."
RESULTS = {"get_weather": "Sunny, 21 C in Paris. Light wind.", "get_time": "It is 14:05 in Paris."}


def post(emulator: Any, messages: list[dict[str, Any]], headers: dict[str, str] | None = None, **params: Any):
    body = {"model": MODEL, "messages": messages, "tools": TOOLS, **params}
    assert_valid_request(body)  # what the service's schema accepts
    return httpx.post(
        f"{emulator.base_url}/chat/completions", json=body, headers={**KEY, **(headers or {})}, timeout=30
    )


def answered(response: httpx.Response) -> dict[str, Any]:
    """The assistant message of a 200, after checking the body against the published schema."""
    assert response.status_code == 200, response.text
    body = response.json()
    assert response_errors(body) == []
    return body["choices"][0]["message"]


def calls_of(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]


def echo(message: dict[str, Any]) -> dict[str, Any]:
    """The assistant message as a client sends it back: no reasoning_content, no refusal."""
    return {"role": "assistant", "content": message["content"] or None, "tool_calls": message["tool_calls"]}


def results_for(message: dict[str, Any], texts: dict[str, str] | None = None) -> list[dict[str, Any]]:
    texts = RESULTS if texts is None else texts
    return [
        {"role": "tool", "tool_call_id": c["id"], "content": texts.get(c["function"]["name"], "unknown tool")}
        for c in message["tool_calls"]
    ]


def sse(response: httpx.Response) -> list[dict[str, Any]]:
    data = [line[len("data: ") :] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(d) for d in data[:-1]]


# -- agent play -----------------------------------------------------------------------------------


def test_a_multi_turn_run_calls_the_named_tools_in_parallel_then_answers_from_their_results(qwen_emulator):
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a travel assistant."},
        {"role": "user", "content": QUESTION},
    ]
    first = answered(post(qwen_emulator, messages))

    assert [name for name, _ in calls_of(first)] == ["get_weather", "get_time"]  # order of mention
    ids = [c["id"] for c in first["tool_calls"]]
    assert len(set(ids)) == 2
    assert all(i.startswith("call_") for i in ids)
    for name, arguments in calls_of(first):
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])
    messages += [echo(first), *results_for(first)]
    final = answered(post(qwen_emulator, messages))

    assert "tool_calls" not in final
    assert final["content"].startswith("Based on the tool results: ")
    assert "get_weather: Sunny, 21 C in Paris." in final["content"]
    assert "get_time: It is 14:05 in Paris." in final["content"]  # the results reached the model
    sent = qwen_emulator.chat_requests()
    assert len(sent) == 2
    assert [r.status for r in sent] == [200, 200]
    assert sent[0].reply["tool_calls"] == first["tool_calls"]  # the log keeps what was answered
    assert [m["role"] for m in sent[1].messages] == ["system", "user", "assistant", "tool", "tool"]
    assert len(qwen_emulator.charges) == 2


def test_parallel_tool_calls_false_calls_one_tool_per_answer_in_order(qwen_emulator):
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    called = []
    for _ in range(2):
        message = answered(post(qwen_emulator, messages, parallel_tool_calls=False))
        (call,) = message["tool_calls"]
        called.append(call["function"]["name"])
        messages += [echo(message), *results_for(message)]
    final = answered(post(qwen_emulator, messages, parallel_tool_calls=False))

    assert called == ["get_weather", "get_time"]
    assert "14:05" in final["content"]
    assert "Sunny" in final["content"]


def test_a_tool_named_twice_is_called_again_after_its_first_result(qwen_emulator):
    question = "Use get_weather for Paris, then get_weather again for Rome."
    messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
    first = answered(post(qwen_emulator, messages))
    messages += [echo(first), *results_for(first, {"get_weather": "Paris: sunny."})]
    second = answered(post(qwen_emulator, messages))
    messages += [echo(second), *results_for(second, {"get_weather": "Rome: rain."})]
    final = answered(post(qwen_emulator, messages))

    assert [n for n, _ in calls_of(first)] == ["get_weather"]
    assert [n for n, _ in calls_of(second)] == ["get_weather"]
    assert first["tool_calls"][0]["id"] != second["tool_calls"][0]["id"]
    assert "Paris: sunny." in final["content"]
    assert "Rome: rain." in final["content"]


def test_no_tool_named_keeps_the_old_rule_first_tool_then_text(qwen_emulator):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "What should I do today?"}]
    first = answered(post(qwen_emulator, messages))
    assert [n for n, _ in calls_of(first)] == ["get_weather"]
    messages += [echo(first), *results_for(first)]
    assert answered(post(qwen_emulator, messages))["content"] == (
        "Based on the tool results: Sunny, 21 C in Paris. Light wind."
    )


def test_a_streamed_agent_answer_carries_the_parallel_calls_in_valid_chunks(qwen_emulator):
    response = post(
        qwen_emulator,
        [{"role": "user", "content": QUESTION}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = sse(response)

    assert all(chunk_errors(c) == [] for c in chunks)
    fragments = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    names = [f["function"]["name"] for f in fragments if f.get("function", {}).get("name")]
    assert names == ["get_weather", "get_time"]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] == "tool_calls"


# -- the conversation is validated like the service's ---------------------------------------------


def test_a_tool_result_for_no_call_is_refused_in_the_service_error_shape(qwen_emulator):
    first = answered(post(qwen_emulator, [{"role": "user", "content": QUESTION}]))
    messages = [{"role": "user", "content": QUESTION}, echo(first), *results_for(first)]
    messages[-1] = {**messages[-1], "tool_call_id": "call_nobody_made_this"}
    response = post(qwen_emulator, messages)

    assert response.status_code == 400
    error = response.json()
    assert set(error) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert error["statusCode"] == 400
    assert any("'call_nobody_made_this' matches no tool call" in m for m in error["message"])
    assert any("no tool message answers" in m for m in error["message"])  # and its call is unanswered
    assert qwen_emulator.charge_log()[-1].failed  # refused, billed 0
    assert len(qwen_emulator.charges) == 1


def test_reasoning_content_sent_back_in_history_is_refused(qwen_emulator):
    first = answered(post(qwen_emulator, [{"role": "user", "content": QUESTION}], reasoning_effort="low"))
    assert first["reasoning_content"]
    history = [{"role": "user", "content": QUESTION}, {**echo(first), "reasoning_content": "thoughts"}]
    response = post(qwen_emulator, [*history, *results_for(first)])

    assert response.status_code == 400
    assert any(m.startswith("messages.1.reasoning_content:") for m in response.json()["message"])
    assert post(qwen_emulator, [history[0], echo(first), *results_for(first)]).status_code == 200


def test_a_lenient_emulator_drops_unknown_message_fields_but_still_checks_tool_call_ids():
    with QwenEmulator(strict=False) as emulator:
        first = answered(post(emulator, [{"role": "user", "content": QUESTION}]))
        history = [{"role": "user", "content": QUESTION}, {**echo(first), "reasoning_content": "x"}]
        assert post(emulator, [*history, *results_for(first)]).status_code == 200
        orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "c", "content": "r"}]
        assert post(emulator, orphan).status_code == 400


# -- faults on agent arguments --------------------------------------------------------------------


def test_bad_json_args_by_header_breaks_every_agent_call(qwen_emulator):
    message = answered(
        post(qwen_emulator, [{"role": "user", "content": QUESTION}], {"X-Emulator-Fault": "bad_json_args"})
    )
    assert [n for n, _ in calls_of(message)] == ["get_weather", "get_time"]
    for _, arguments in calls_of(message):
        with pytest.raises(json.JSONDecodeError):
            json.loads(arguments)


def test_queued_schema_invalid_args_then_a_normal_answer(qwen_emulator):
    qwen_emulator.add_faults(Fault.schema_invalid_args())
    broken = answered(post(qwen_emulator, [{"role": "user", "content": QUESTION}]))
    fine = answered(post(qwen_emulator, [{"role": "user", "content": QUESTION}]))

    for name, arguments in calls_of(broken):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(json.loads(arguments), SCHEMAS[name])
    for name, arguments in calls_of(fine):
        jsonschema.validate(json.loads(arguments), SCHEMAS[name])
    assert [r.fault for r in qwen_emulator.chat_requests()] == ["schema_invalid_args", None]


def test_unknown_tool_calls_a_function_not_offered_and_the_agent_asks_again(qwen_emulator):
    qwen_emulator.add_faults(Fault.unknown_tool())
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    wrong = answered(post(qwen_emulator, messages))
    offered = {t["function"]["name"] for t in TOOLS}
    assert [n for n, _ in calls_of(wrong)] == ["get_weather_unoffered", "get_time_unoffered"]
    assert not offered & {n for n, _ in calls_of(wrong)}
    messages += [echo(wrong), *results_for(wrong)]  # "unknown tool" for each
    retry = answered(post(qwen_emulator, messages))

    assert [n for n, _ in calls_of(retry)] == ["get_weather", "get_time"]  # still owed
    assert Fault.unknown_tool().header_value() == "unknown_tool"


# -- scripted mode --------------------------------------------------------------------------------


def test_scripted_turns_play_in_order_for_their_script_id_only(qwen_emulator):
    qwen_emulator.script(
        Turn.calls(("get_weather", '{"city": "Oslo"}'), ("no_such_tool", '{"city": ')),
        Turn.text("Oslo is cold, take a coat."),
        script_id="trip-1",
    )
    header = {"X-Emulator-Script": "trip-1"}
    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    refused = post(qwen_emulator, messages, {**header, "X-Emulator-Fault": "status;status=429"})
    assert refused.status_code == 429  # a refused request plays no turn
    unscripted = answered(post(qwen_emulator, messages))  # no header: agent play, script untouched
    response = post(qwen_emulator, messages, header)
    first = answered(response)

    assert [n for n, _ in calls_of(unscripted)] == ["get_weather", "get_time"]
    assert calls_of(first) == [("get_weather", '{"city": "Oslo"}'), ("no_such_tool", '{"city": ')]
    usage = response.json()["usage"]
    assert usage["completion_tokens"] == completion_tokens("", "", calls_of(first))  # honest tokens
    assert int(response.headers["x-aimlapi-credits-used"]) == qwen_emulator.charges[-1].credits > 0
    messages += [echo(first), *results_for(first)]
    second = answered(post(qwen_emulator, messages, header))
    assert second["content"] == "Oslo is cold, take a coat."
    assert qwen_emulator.pending_turns("trip-1") == []
    messages += [{"role": "assistant", "content": second["content"]}, {"role": "user", "content": QUESTION}]
    after = answered(post(qwen_emulator, messages, header))  # used up: agent play again
    assert [n for n, _ in calls_of(after)] == ["get_weather", "get_time"]

    sent = qwen_emulator.chat_requests(script="trip-1")
    assert [(r.status, r.script_turn) for r in sent] == [(429, None), (200, 1), (200, 2), (200, None)]
    assert len(qwen_emulator.chat_requests()) == 5


def test_a_scripted_text_turn_is_cut_by_the_budget_and_billed_for_what_was_generated(qwen_emulator):
    qwen_emulator.script(Turn.text("One two three four five six seven eight nine ten eleven twelve."))
    response = post(qwen_emulator, [{"role": "user", "content": "Hi"}], max_completion_tokens=3)
    body = response.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["message"]["content"] == "One two three"


def test_a_scripted_call_streams_with_its_exact_arguments(qwen_emulator):
    qwen_emulator.script(Turn.call("search_docs", {"query": "refund policy"}), script_id="s")
    response = post(
        qwen_emulator, [{"role": "user", "content": "Hi"}], {"X-Emulator-Script": "s"}, stream=True
    )
    chunks = sse(response)
    fragments = [
        tc for c in chunks if c["choices"] for tc in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert "".join(f["function"].get("arguments", "") for f in fragments) == '{"query": "refund policy"}'
    assert all(chunk_errors(c) == [] for c in chunks)


def test_scripts_and_the_request_log_over_http(qwen_emulator):
    control = f"{qwen_emulator.url}/_emulator"
    turns = [
        {"tool_calls": [{"name": "get_time", "arguments": '{"city": "Lima"}', "id": "call_lima"}]},
        {"content": "It is late in Lima."},
    ]
    assert httpx.post(f"{control}/scripts", json={"script_id": "r", "turns": turns}).status_code == 401
    bad = httpx.post(f"{control}/scripts", json={"script_id": "r", "turns": [{"text": "?"}]}, headers=KEY)
    assert bad.status_code == 400
    assert "turns[0]" in bad.json()["message"][0]
    queued = httpx.post(f"{control}/scripts", json={"script_id": "r", "turns": turns}, headers=KEY)
    assert queued.json() == {"script_id": "r", "pending": 2}
    listed = httpx.get(f"{control}/scripts", headers=KEY).json()["scripts"]
    assert listed == [{"script_id": "r", "pending": 2, "turns": turns}]

    messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
    first = answered(post(qwen_emulator, messages, {"X-Emulator-Script": "r"}))
    assert first["tool_calls"][0]["id"] == "call_lima"
    messages += [echo(first), *results_for(first)]
    assert (
        answered(post(qwen_emulator, messages, {"X-Emulator-Script": "r"}))["content"]
        == "It is late in Lima."
    )

    log = httpx.get(f"{control}/requests", params={"script": "r"}, headers=KEY).json()["requests"]
    assert [(r["status"], r["script_turn"]) for r in log] == [(200, 1), (200, 2)]
    assert log[1]["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_lima",
        "content": RESULTS["get_time"],
    }
    assert log[0]["reply"]["tool_calls"][0]["function"]["name"] == "get_time"
    assert len(qwen_emulator.requests) == 2  # the control calls are not service traffic

    httpx.post(f"{control}/scripts", json={"script_id": None, "turns": ["Default queue."]}, headers=KEY)
    assert httpx.delete(f"{control}/scripts", headers=KEY).json() == {"script_id": None, "pending": 0}
    assert httpx.get(f"{control}/scripts", headers=KEY).json() == {"scripts": []}


def test_an_invalid_script_header_is_a_400(qwen_emulator):
    response = post(qwen_emulator, [{"role": "user", "content": "Hi"}], {"X-Emulator-Script": "bad id!"})
    assert response.status_code == 400
    assert "X-Emulator-Script" in response.json()["message"][0]
