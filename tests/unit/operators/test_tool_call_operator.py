"""QwenToolCallOperator: forced structured output, several tools, repair turns and their cost."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from airflow_provider_qwen.client.errors import InvalidRequestError, StructuredOutputError
from airflow_provider_qwen.operators import QwenToolCallOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from tests.support.operator_fakes import FakeTI, answer, run, with_client


class Sentiment(BaseModel):
    """The sentiment of a review."""

    label: Literal["positive", "neutral", "negative"]
    score: float = Field(ge=0, le=1)


class Tree(BaseModel):
    name: str
    children: list[Tree] = []


def get_weather(city: str, unit: Literal["C", "F"] = "C") -> dict:
    """Current weather in a city."""
    raise AssertionError("never called")


SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Web search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


def test_output_model_forces_one_call_and_returns_model_dump(mocker):
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("c1", "Sentiment", {"label": "positive", "score": 0.9})]),
    )
    op = QwenToolCallOperator(task_id="t", prompt="Great!", output_model=Sentiment)
    result, ti = run(op)
    assert result == {"label": "positive", "score": 0.9}
    body = client.bodies[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Sentiment"}}
    assert body["parallel_tool_calls"] is False
    (tool,) = body["tools"]
    assert tool["function"]["name"] == "Sentiment"
    assert tool["function"]["description"] == "The sentiment of a review."
    assert "title" not in tool["function"]["parameters"]
    assert "normalize_tool_schemas" not in body
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_output_schema_validates_with_jsonschema(mocker):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    with_client(mocker, QwenBaseOperator, answer(None, tool_calls=[("c1", "count", '{"n": 3}')]))
    result, _ = run(QwenToolCallOperator(task_id="t", prompt="?", output_schema=schema, tool_name="count"))
    assert result == {"n": 3}


@pytest.mark.parametrize("bad", ['{"label": "positive", "score": ', '{"label": "great", "score": 2}'])
def test_invalid_arguments_are_repaired_and_every_turn_is_counted(mocker, bad):
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("c1", "Sentiment", bad)]),
        answer(None, tool_calls=[("c2", "Sentiment", {"label": "negative", "score": 0.1})]),
    )
    result, ti = run(QwenToolCallOperator(task_id="t", prompt="Awful.", output_model=Sentiment))
    assert result == {"label": "negative", "score": 0.1}
    repair = client.bodies[1]
    assert repair["tool_choice"] == {"type": "function", "function": {"name": "Sentiment"}}  # still forced
    assistant, tool = repair["messages"][-2:]
    assert assistant["tool_calls"][0]["function"]["arguments"] == bad  # its own arguments shown back
    assert tool["tool_call_id"] == "c1"
    assert "rejected" in tool["content"]
    assert ti.pushed["qwen_cost"]["requests"] == 2
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == Decimal("0.002")


def test_gives_up_after_max_repairs_listing_violations(mocker):
    bad = answer(None, tool_calls=[("c", "Sentiment", {"label": "great", "score": 0.5})])
    client = with_client(mocker, QwenBaseOperator, bad, bad, bad)
    ti = FakeTI()
    with pytest.raises(StructuredOutputError) as info:
        run(QwenToolCallOperator(task_id="t", prompt="?", output_model=Sentiment, max_repairs=2), ti)
    assert len(client.requests) == 3
    assert "after 2 repair turn(s)" in str(info.value)
    assert info.value.errors == ["label: Input should be 'positive', 'neutral' or 'negative' (got 'great')"]
    assert ti.pushed["qwen_cost"]["requests"] == 3
    # the conversation grows turn by turn: prompt, then (assistant, tool) per repair
    assert [m["role"] for m in client.bodies[2]["messages"]] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "tool",
    ]


def test_max_repairs_zero_fails_on_the_first_invalid_answer(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("no tool for you"))
    with pytest.raises(StructuredOutputError, match="no call of Sentiment"):
        run(QwenToolCallOperator(task_id="t", prompt="?", output_model=Sentiment, max_repairs=0))
    assert len(client.requests) == 1


def test_recursive_model_asks_gateway_normalisation(mocker):
    client = with_client(mocker, QwenBaseOperator, answer(None, tool_calls=[("c", "Tree", {"name": "root"})]))
    result, _ = run(QwenToolCallOperator(task_id="t", prompt="?", output_model=Tree))
    assert result == {"name": "root", "children": []}
    assert client.bodies[0]["normalize_tool_schemas"] is True
    assert "$defs" in client.bodies[0]["tools"][0]["function"]["parameters"]


def test_user_choice_of_normalize_tool_schemas_wins(mocker):
    client = with_client(mocker, QwenBaseOperator, answer(None, tool_calls=[("c", "Tree", {"name": "r"})]))
    run(QwenToolCallOperator(task_id="t", prompt="?", output_model=Tree, normalize_tool_schemas=False))
    assert client.bodies[0]["normalize_tool_schemas"] is False


def test_several_tools_return_validated_calls_in_order(mocker):
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("a", "get_weather", {"city": "Oslo"}), ("b", "search", {"q": "fjords"})]),
    )
    op = QwenToolCallOperator(
        task_id="t", prompt="?", tools=[get_weather, SEARCH, Sentiment], tool_choice="required"
    )
    result, _ = run(op)
    assert result == [
        {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "C"}, "id": "a"},
        {"name": "search", "arguments": {"q": "fjords"}, "id": "b"},
    ]
    body = client.bodies[0]
    assert [t["function"]["name"] for t in body["tools"]] == ["get_weather", "search", "Sentiment"]
    assert body["tool_choice"] == "required"
    assert "parallel_tool_calls" not in body


def test_named_tool_choice_and_auto_without_call(mocker):
    client = with_client(mocker, QwenBaseOperator, answer(None, tool_calls=[("a", "search", {"q": "x"})]))
    run(QwenToolCallOperator(task_id="t", prompt="?", tools=[get_weather, SEARCH], tool_choice="search"))
    assert client.bodies[0]["tool_choice"] == {"type": "function", "function": {"name": "search"}}
    with_client(mocker, QwenBaseOperator, answer("No tool needed."))
    result, _ = run(QwenToolCallOperator(task_id="t", prompt="?", tools=[SEARCH], tool_choice="auto"))
    assert result == []


def test_several_tools_repair_only_the_failed_call(mocker):
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("a", "search", {"q": "ok"}), ("b", "get_weather", {"unit": "K"})]),
        answer(None, tool_calls=[("c", "get_weather", {"city": "Rome", "unit": "F"})]),
    )
    op = QwenToolCallOperator(task_id="t", prompt="?", tools=[get_weather, SEARCH], parallel_tool_calls=True)
    result, ti = run(op)
    assert result == [
        {"name": "search", "arguments": {"q": "ok"}, "id": "a"},
        {"name": "get_weather", "arguments": {"city": "Rome", "unit": "F"}, "id": "c"},
    ]
    repair = client.bodies[1]
    assert repair["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    answers = {m["tool_call_id"]: m["content"] for m in repair["messages"] if m["role"] == "tool"}
    assert answers["a"] == "Accepted."
    assert "city: Field required" in answers["b"]
    assert ti.pushed["qwen_cost"]["requests"] == 2


def test_required_call_missing_is_repaired(mocker):
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer("I'd rather chat."),
        answer(None, tool_calls=[("a", "search", {"q": "x"})]),
    )
    result, _ = run(QwenToolCallOperator(task_id="t", prompt="?", tools=[SEARCH], tool_choice="required"))
    assert result == [{"name": "search", "arguments": {"q": "x"}, "id": "a"}]
    assert client.bodies[1]["messages"][-1]["role"] == "user"
    assert client.bodies[1]["tool_choice"] == "required"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of output_model, output_schema or tools"),
        ({"output_model": Sentiment, "tools": [SEARCH]}, "exactly one of"),
        ({"output_model": Sentiment, "tool_choice": "auto"}, "tool_choice='auto' cannot be used"),
        ({"output_model": Sentiment, "parallel_tool_calls": True}, "parallel_tool_calls=True cannot"),
        ({"tools": [SEARCH], "tool_name": "x"}, "tool_name/tool_description name the single output tool"),
        ({"tools": [SEARCH], "tool_choice": "nosuch"}, "tool_choice='nosuch' names a tool that is not in"),
        ({"output_model": Sentiment, "max_repairs": -1}, "max_repairs=-1"),
        ({"tools": [lambda q: q]}, "needs a type hint"),
        ({"output_model": Sentiment, "temperature": 3}, "temperature=3"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        QwenToolCallOperator(task_id="t", prompt="?", **kwargs)


def test_operator_with_model_and_functions_survives_copy():
    op = QwenToolCallOperator(task_id="t", prompt="?", tools=[get_weather, Sentiment, SEARCH])
    clone = copy.deepcopy(op)
    assert clone.specs["get_weather"].check_arguments('{"city": "Rome"}') == {"city": "Rome", "unit": "C"}
