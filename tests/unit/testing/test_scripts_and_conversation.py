"""Scripted turns (their JSON form and queue) and the conversation checks, without a server."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_qwen.testing.conversation import conversation_errors, message_fields
from airflow_provider_qwen.testing.scripts import ScriptBook, ScriptedCall, Turn, as_turn, check_script_id


def convo(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"model": "alibaba/qwen3.7-max", "messages": list(messages)}


USER = {"role": "user", "content": "Use lookup."}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
        {"id": "c2", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
    ],
}


def tool(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "ok"}


def test_a_well_formed_agent_history_passes():
    assert conversation_errors(convo(USER, CALL, tool("c1"), tool("c2"), USER)) == []


def test_a_tool_result_for_no_call_is_an_error():
    (problem,) = conversation_errors(convo(USER, tool("c9")))
    assert problem == "messages.1.tool_call_id: 'c9' matches no tool call of an earlier assistant message"


@pytest.mark.parametrize("after", [[USER], []])
def test_calls_left_unanswered_are_an_error(after):
    (problem,) = conversation_errors(convo(USER, CALL, tool("c1"), *after))
    assert problem.startswith("messages.1: an assistant message with 'tool_calls' must be followed")
    assert "'c2'" in problem
    assert "'c1'" not in problem


def test_reasoning_content_in_history_is_refused_when_strict_only():
    echoed = {**CALL, "reasoning_content": "thoughts"}
    (problem,) = conversation_errors(convo(USER, echoed, tool("c1"), tool("c2")))
    assert problem.startswith("messages.1.reasoning_content: not a field of a message with role 'assistant'")
    assert conversation_errors(convo(USER, echoed, tool("c1"), tool("c2")), strict=False) == []


def test_message_fields_come_from_the_published_schema():
    fields = message_fields()
    assert fields["assistant"] == {"role", "content", "name", "refusal", "tool_calls"}
    assert fields["tool"] == {"role", "content", "name", "tool_call_id"}
    assert "reasoning_content" not in set().union(*fields.values())


def test_turn_json_round_trip_and_errors():
    data = {
        "content": "Looking.",
        "tool_calls": [
            {"name": "lookup", "arguments": {"id": 7}},
            {"name": "x", "arguments": "{", "id": "c"},
        ],
        "reasoning": "why",
    }
    turn = Turn.from_json(data)
    assert turn.tool_calls == (ScriptedCall("lookup", '{"id": 7}'), ScriptedCall("x", "{", "c"))
    assert Turn.from_json(turn.to_json()) == turn
    assert as_turn("plain text") == Turn.text("plain text")
    for bad, message in [
        ({}, "needs content or at least one tool call"),
        ({"text": "x"}, "unknown turn field"),
        ({"tool_calls": [{"name": ""}]}, "tool_calls\\[0\\]"),
        ({"tool_calls": {"name": "a"}}, "must be a list"),
        (3, "must be a JSON object or a string"),
    ]:
        with pytest.raises(ValueError, match=message):
            Turn.from_json(bad)


def test_script_ids_follow_the_client_request_id_alphabet():
    assert check_script_id("run-1:turns.a_b") == "run-1:turns.a_b"
    assert check_script_id(None) is None
    for bad in ["", "a b", "x" * 129]:
        with pytest.raises(ValueError, match="1-128 characters"):
            check_script_id(bad)


def test_the_script_book_plays_turns_in_order_and_can_give_one_back():
    book = ScriptBook()
    one, two = Turn.text("1"), Turn.text("2")
    assert book.add("s", [one, two]) == 2
    assert book.take(None) is None
    assert book.take("s") == (one, 1)
    book.give_back("s", one)
    assert book.take("s") == (one, 1)
    assert book.take("s") == (two, 2)
    assert book.take("s") is None
    book.add(None, [one])
    assert book.scripts() == {None: [one]}
    book.clear(everything=True)
    assert book.scripts() == {}
