"""Transcript records: the messages sent back (never reasoning), JSON round-trips, the XCom summary."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.agent import ToolCallRecord, Transcript, Turn
from tests.unit.agent._fakes import answer, call

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"}]


def _turn() -> Turn:
    completion = answer(
        "Looking.",
        call("weather", {"city": "Paris"}, "c1"),
        call("weather", {"city": "Rome"}, "c2"),
        reasoning="I should check both cities.",
        usd="0.0025",
        inference_id="inf-7",
    )
    return Turn.from_completion(1, completion, duration_s=1.5)


def test_a_turn_keeps_reasoning_apart_from_the_message_sent_back():
    turn = _turn()
    assert turn.reasoning_content == "I should check both cities."
    assert "reasoning_content" not in turn.message
    assert turn.message["content"] == "Looking."
    assert [c["id"] for c in turn.tool_calls] == ["c1", "c2"]
    assert (turn.usd_spent, turn.estimated, turn.inference_id) == ("0.0025", False, "inf-7")
    assert turn.usage == {
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "reasoning_tokens": 5,
        "total_tokens": 120,
    }


def test_calls_without_ids_or_with_a_repeated_id_get_stand_ins_unique_in_the_run():
    nameless = {"type": "function", "function": {"name": "f", "arguments": "{}"}}
    completion = answer(None, nameless, call("f", {}, "x"), call("g", {}, "x"))
    assert [c["id"] for c in Turn.from_completion(3, completion).tool_calls] == ["call_3_0", "x", "call_3_2"]


def test_messages_answer_each_call_in_call_order_whatever_order_they_finished():
    turn = _turn()
    turn.calls = [
        ToolCallRecord("c2", "weather", '{"city": "Rome"}', "error", "The tool weather failed: boom"),
        ToolCallRecord("c1", "weather", '{"city": "Paris"}', "ok", '{"c": 21}'),
    ]
    transcript = Transcript.start(PROMPT)
    transcript.turns.append(turn)
    messages = transcript.messages()
    assert messages[:2] == PROMPT
    assert messages[2]["role"] == "assistant"
    assert "reasoning_content" not in messages[2]
    assert messages[3:] == [
        {"role": "tool", "tool_call_id": "c1", "content": '{"c": 21}'},
        {"role": "tool", "tool_call_id": "c2", "content": "The tool weather failed: boom"},
    ]


def test_messages_refuse_a_turn_with_unanswered_calls():
    transcript = Transcript.start(PROMPT)
    transcript.turns.append(_turn())
    with pytest.raises(ValueError, match="turn 1 has calls without a result: c1, c2"):
        transcript.messages()


def test_a_transcript_round_trips_through_json():
    turn = _turn()
    turn.calls = [ToolCallRecord("c1", "weather", "{}", "rejected", "No.", 0.25, "rejected by ana")]
    final = Turn.from_completion(2, answer("Sunny."), kind="output")
    transcript = Transcript(PROMPT, [turn, final])
    again = Transcript.from_json(transcript.to_json())
    assert again == transcript
    assert again.turns[1].kind == "output"


def test_an_unknown_outcome_is_refused():
    with pytest.raises(ValueError, match="outcome='fine'"):
        ToolCallRecord("c1", "f", "{}", "fine", "x")  # type: ignore[arg-type]


def test_the_summary_has_turns_calls_outcomes_and_costs_but_no_text():
    turn = _turn()
    turn.calls = [
        ToolCallRecord("c1", "weather", '{"city": "' + "P" * 500 + '"}', "ok", "secret result", 0.5),
        ToolCallRecord("c2", "weather", '{"city": "Rome"}', "timeout", "too slow", 2.0, "note"),
    ]
    transcript = Transcript(
        PROMPT, [turn, Turn.from_completion(2, answer("Sunny.", usd="0.0005"), duration_s=1)]
    )
    summary = transcript.summary()
    assert summary["turns"] == 2
    assert summary["tool_calls"] == 2
    assert summary["outcomes"] == {"ok": 1, "timeout": 1}
    assert summary["usd_spent"] == "0.003"
    assert (summary["model_s"], summary["tools_s"]) == (2.5, 2.5)
    first = summary["per_turn"][0]
    assert first["usd_spent"] == "0.0025"
    assert first["inference_id"] == "inf-7"
    shown = first["tool_calls"][0]["arguments"]
    assert len(shown) == 200
    assert shown.endswith("...")
    assert first["tool_calls"][1]["note"] == "note"
    assert "secret result" not in str(summary)
    assert "both cities" not in str(summary)
