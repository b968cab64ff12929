"""The emulator's agent rules, without a server: which tools are named, what is owed, what is said."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_qwen.testing import agent_play
from airflow_provider_qwen.testing.answers import plan_answer, summarize
from airflow_provider_qwen.testing.scripts import Turn

TOOLS = [
    {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
    for name in ("get_weather", "get_time", "search")
]


def body(*messages: dict[str, Any], **params: Any) -> dict[str, Any]:
    return {"model": "alibaba/qwen3.7-max", "messages": list(messages), "tools": TOOLS, **params}


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def calls(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": i, "type": "function", "function": {"name": n, "arguments": "{}"}} for i, n in pairs
        ],
    }


def result(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def names(move: agent_play.Move) -> list[str]:
    return [c.name for c in move.calls]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Use get_weather and get_time.", ["get_weather", "get_time"]),
        ("get_time first, then GET_WEATHER.", ["get_time", "get_weather"]),  # case-insensitive, by position
        ("get_weather twice: get_weather.", ["get_weather", "get_weather"]),
        ("my_get_weather or get_weather_v2 or get-weather", []),  # whole words only
        ("Search the docs (search).", ["search", "search"]),
        ("nothing here", []),
    ],
)
def test_mentions_are_whole_words_in_order(text, expected):
    assert agent_play.mentions(text, ["get_weather", "get_time", "search"]) == expected


@pytest.mark.parametrize(
    ("plan", "answered", "parallel", "owed"),
    [
        (["a", "b"], {}, True, ["a", "b"]),
        (["a", "b"], {}, False, ["a"]),
        (["a", "b"], {"a": 1}, False, ["b"]),
        (["a", "b", "a"], {"a": 1, "b": 1}, True, ["a"]),
        (["a", "b", "a"], {"a": 1, "b": 1}, False, ["a"]),
        (["a", "a", "b"], {}, True, ["a", "b"]),
        (["a", "b"], {"a": 1, "b": 1}, True, []),
    ],
)
def test_owed_calls(plan, answered, parallel, owed):
    assert agent_play.owed_calls(plan, answered, parallel=parallel) == owed


def test_only_the_latest_user_message_names_tools():
    history = body(
        user("Use get_weather."),
        calls(("c1", "get_weather")),
        result("c1", "Sunny."),
        {"role": "assistant", "content": "It is sunny."},
        user("And use get_time now."),
    )
    assert names(agent_play.plan_move(history, summarize)) == ["get_time"]


def test_the_final_text_draws_on_every_result_since_the_latest_user_message():
    done = body(
        user("Use get_weather and search."),
        calls(("c1", "get_weather"), ("c2", "search")),
        result("c1", "Sunny, 21 C. Light wind. Dry all day. Warm."),
        result("c2", '{"hits": 3}'),
    )
    move = agent_play.plan_move(done, summarize)
    assert move.calls == []
    assert (
        move.content == 'Based on the tool results: get_weather: Sunny, 21 C. Light wind. search: {"hits": 3}'
    )


def test_a_result_for_an_unoffered_name_leaves_the_named_tool_owed():
    retry = body(
        user("Use get_weather."), calls(("c1", "get_weather_unoffered")), result("c1", "unknown tool")
    )
    assert names(agent_play.plan_move(retry, summarize)) == ["get_weather"]


def test_tool_choice_modes_are_kept():
    question = user("Use get_time.")
    assert names(agent_play.plan_move(body(question, tool_choice="required"), summarize)) == ["get_weather"]
    forced = {"type": "function", "function": {"name": "search"}}
    assert names(agent_play.plan_move(body(question, tool_choice=forced), summarize)) == ["search"]
    assert agent_play.plan_move(body(question, tool_choice="none"), summarize).calls == []
    assert names(agent_play.plan_move(body(user("Hello")), summarize)) == ["get_weather"]  # none named


def test_unknown_name_is_never_offered():
    assert agent_play.unknown_name("a", ["a"]) == "a_unoffered"
    assert agent_play.unknown_name("a", ["a", "a_unoffered"]) == "xa_unoffered"
    assert len(agent_play.unknown_name("n" * 64, [])) <= 64


def test_a_scripted_turn_is_played_whatever_tool_choice_says_with_honest_tokens():
    turn = Turn.calls(("get_time", '{"city": '), ("nowhere", "{}"), content="Checking.")
    answer = plan_answer(body(user("Hi"), tool_choice="none"), turn=turn, prompt_tokens=10)
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [
        ("get_time", '{"city": '),
        ("nowhere", "{}"),
    ]
    assert answer.content == "Checking."
    assert answer.finish_reason == "tool_calls"
    plain = plan_answer(body(user("Hi")), turn=Turn.calls(("get_time", '{"city": '), ("nowhere", "{}")))
    assert answer.completion_tokens > plain.completion_tokens > 0  # the text beside the calls counts


def test_faults_shape_scripted_calls_too():
    turn = Turn.call("get_time", {"city": "Rome"})
    broken = plan_answer(body(user("Hi")), turn=turn, fault_kind="bad_json_args", prompt_tokens=1)
    assert broken.tool_calls[0].arguments == '{"city": "Rome",}'
    renamed = plan_answer(body(user("Hi")), turn=turn, fault_kind="unknown_tool", prompt_tokens=1)
    assert renamed.tool_calls[0].name == "get_time_unoffered"


def test_scripted_reasoning_is_shown_and_billed():
    answer = plan_answer(
        body(user("Hi")), turn=Turn.text("Done.", reasoning="Think it over."), prompt_tokens=1
    )
    assert answer.reasoning == "Think it over."
    assert answer.reasoning_tokens > 0
    hidden = plan_answer(
        body(user("Hi"), reasoning={"exclude": True}),
        turn=Turn.text("Done.", reasoning="Hm."),
        prompt_tokens=1,
    )
    assert hidden.reasoning is None
    assert hidden.reasoning_tokens > 0


CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def test_arguments_the_prompt_spells_out_are_sent_per_mention():
    text = 'Call get_weather with {"city": "Paris"}, then get_weather with {"city": "Rome"}.'
    assert agent_play.spelled_arguments(text, "get_weather", 0, CITY) == '{"city": "Paris"}'
    assert agent_play.spelled_arguments(text, "get_weather", 1, CITY) == '{"city": "Rome"}'
    once = 'Use get_weather to check. For example get_weather with {"city":\n"Oslo"}.'
    assert agent_play.spelled_arguments(once, "get_weather", 0, CITY) == '{"city": "Oslo"}'
    assert agent_play.spelled_arguments('get_weather with {"town": "Oslo"}', "get_weather", 0, CITY) is None
    assert agent_play.spelled_arguments('get_weather with {"city": ', "get_weather", 0, CITY) is None


def test_an_agent_call_uses_the_spelled_out_arguments_of_its_mention():
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": CITY}}]
    text = 'Call get_weather with {"city": "Paris"}, then get_weather with {"city": "Rome"}.'
    first = plan_answer({**body(user(text)), "tools": tools}, prompt_tokens=1)
    assert [(c.name, c.arguments) for c in first.tool_calls] == [("get_weather", '{"city": "Paris"}')]
    history = body(user(text), calls(("c1", "get_weather")), result("c1", "Sunny."))
    second = plan_answer({**history, "tools": tools}, prompt_tokens=1)
    assert [(c.name, c.arguments) for c in second.tool_calls] == [("get_weather", '{"city": "Rome"}')]
