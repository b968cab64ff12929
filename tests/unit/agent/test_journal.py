"""Replay: a run rebuilt from its events; a journal of another prompt or other tools refused."""

from __future__ import annotations

import pytest

from airflow_provider_qwen.agent import (
    Decision,
    JournalMismatchError,
    MemoryJournal,
    PendingCall,
    Turn,
    replay,
)
from airflow_provider_qwen.agent.journal import (
    AgentJournal,
    answer_event,
    call_event,
    decision_event,
    pending_event,
    start_event,
)
from airflow_provider_qwen.agent.transcript import ToolCallRecord
from tests.unit.agent._fakes import answer, call

PROMPT = [{"role": "user", "content": "Go."}]


def _events() -> list[dict]:
    turn = Turn.from_completion(
        1, answer(None, call("a", {}, "c1"), call("b", {}, "c2"), call("c", {}, "c3"))
    )
    return [
        start_event(PROMPT, ["a", "b", "c"]),
        answer_event(turn),
        call_event(1, ToolCallRecord("c2", "b", "{}", "ok", "2")),
        pending_event(1, [PendingCall("c3", "c", "{}", 1)]),
        call_event(1, ToolCallRecord("c2", "b", "{}", "ok", "2")),  # written twice: counted once
        decision_event(1, "c3", Decision(True, by="ana")),
        decision_event(1, "c3", Decision(False)),  # the first decision holds
    ]


def test_replay_rebuilds_turns_records_pending_calls_and_decisions():
    state = replay(_events(), start_event(PROMPT, ["a", "b", "c"]), PROMPT)
    assert state is not None
    (turn,) = state.transcript.turns
    assert [r.call_id for r in turn.calls] == ["c2"]
    assert [c["id"] for c in turn.unfinished] == ["c1", "c3"]
    assert list(state.pending) == ["c3"]
    assert state.decisions == {"c3": Decision(True, by="ana")}
    assert state.finished_calls == 1


def test_records_are_kept_in_call_order():
    events = _events()[:2]
    events += [call_event(1, ToolCallRecord(i, n, "{}", "ok", n)) for i, n in (("c3", "c"), ("c1", "a"))]
    state = replay(events, events[0], PROMPT)
    assert state is not None
    assert [r.call_id for r in state.transcript.turns[0].calls] == ["c1", "c3"]


def test_no_events_means_a_fresh_start():
    assert replay([], start_event(PROMPT, ["a"]), PROMPT) is None


def test_a_journal_of_another_prompt_or_other_tools_is_refused_saying_what_changed():
    events = _events()
    with pytest.raises(JournalMismatchError) as caught:
        replay(events, start_event([{"role": "user", "content": "Other."}], ["a", "d"]), PROMPT)
    text = str(caught.value)
    assert "other messages" in text
    assert "other tools (added ['d']; removed ['b', 'c'])" in text
    assert "1 answered turn(s) and 2 tool call(s) cannot be reused" in text
    assert "on_journal_mismatch='restart'" in text


def test_restart_ignores_the_old_run_and_replay_reads_from_the_last_start():
    new = start_event(PROMPT, ["a"])
    assert replay(_events(), new, PROMPT, on_mismatch="restart") is None
    state = replay([*_events(), new], new, PROMPT)
    assert state is not None
    assert state.transcript.turns == []


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([{"type": "answer"}], "no start event"),
        ([{**start_event(PROMPT, []), "version": 99}], "version 99"),
        ([start_event(PROMPT, []), call_event(1, ToolCallRecord("c", "a", "", "ok", ""))], "never answered"),
        ([start_event(PROMPT, []), {"type": "mystery"}], "unknown type 'mystery'"),
    ],
)
def test_a_journal_that_does_not_read_as_one_run_is_refused(events, message):
    with pytest.raises(JournalMismatchError, match=message):
        replay(events, start_event(PROMPT, []), PROMPT)


def test_answers_out_of_order_and_results_of_calls_never_made_are_refused():
    events = _events()[:2]
    second = Turn.from_completion(3, answer("x"))
    with pytest.raises(JournalMismatchError, match="turn 3 follows 1 turn"):
        replay([*events, answer_event(second)], events[0], PROMPT)
    with pytest.raises(JournalMismatchError, match="'zz', never called"):
        replay([*events, call_event(1, ToolCallRecord("zz", "a", "", "ok", ""))], events[0], PROMPT)


def test_the_memory_journal_is_an_agent_journal_and_stores_json():
    journal = MemoryJournal()
    assert isinstance(journal, AgentJournal)
    event = {"type": "start", "list": (1, 2)}
    journal.append(event)
    event["type"] = "changed"
    assert journal.load() == [{"type": "start", "list": [1, 2]}]
