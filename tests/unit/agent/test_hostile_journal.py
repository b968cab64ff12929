"""A journal edited or damaged between tries (a wrong type, a missing key, a torn value, a turn of
another shape) is refused with JournalMismatchError saying so, never a bare KeyError, and never
replayed as something the loop did not write."""

from __future__ import annotations

import asyncio
import copy

import pytest

from airflow_provider_qwen.agent import AgentLoop, JournalMismatchError, tool
from airflow_provider_qwen.agent.journal import MemoryJournal
from tests.unit.agent._fakes import Model, answer, build, call

MESSAGES = [{"role": "user", "content": "go"}]


@tool
def echo(x: int) -> int:
    """Echo."""
    return x


@pytest.fixture(scope="module")
def events():
    journal = MemoryJournal()
    model = Model(answer(None, call("echo", {"x": 1}, call_id="a")), answer("ok"))
    asyncio.run(AgentLoop(send=model, build_request=build, tools=[echo], journal=journal).run(MESSAGES))
    assert [e["type"] for e in journal.events] == ["start", "answer", "call", "answer"]
    return journal.events


def _answer(ev):
    return ev[1]["turn"]


EDITS = {
    "answer without its turn": lambda ev: ev[1].pop("turn"),
    "turn index not a number": lambda ev: _answer(ev).__setitem__("index", "x"),
    "message not an object": lambda ev: _answer(ev).__setitem__("message", "x"),
    "tool_calls not a list": lambda ev: _answer(ev)["message"].__setitem__("tool_calls", "x"),
    "a call without an id": lambda ev: _answer(ev)["message"]["tool_calls"][0].pop("id"),
    "a call's name not text": lambda ev: _answer(ev)["message"]["tool_calls"][0]["function"].__setitem__(
        "name", 5
    ),
    "two calls with one id": lambda ev: _answer(ev)["message"]["tool_calls"].append(
        copy.deepcopy(_answer(ev)["message"]["tool_calls"][0])
    ),
    "call without its record": lambda ev: ev[2].pop("record"),
    "an unknown outcome": lambda ev: ev[2]["record"].__setitem__("outcome", "pwned"),
    "usage not numbers": lambda ev: _answer(ev).__setitem__("usage", {"total_tokens": "x"}),
    "an event that is text": lambda ev: ev.__setitem__(2, "x"),
    "a turn that is a list": lambda ev: ev[2].__setitem__("turn", [1]),
    "a decision that is text": lambda ev: ev.append(
        {"type": "decision", "turn": 1, "call_id": "a", "decision": "yes"}
    ),
    "a pending call that is a number": lambda ev: ev.append({"type": "pending", "turn": 1, "calls": [1]}),
    "a final answer that is an object": lambda ev: ev[3]["turn"]["message"].__setitem__("content", {"x": 1}),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_journal_is_refused_clearly_and_nothing_is_sent(events, edit):
    edited = copy.deepcopy(events)
    EDITS[edit](edited)
    model = Model()
    loop = AgentLoop(send=model, build_request=build, tools=[echo], journal=MemoryJournal(edited))

    with pytest.raises(JournalMismatchError, match="edited or damaged"):
        asyncio.run(loop.run(MESSAGES))
    assert model.requests == []


@pytest.mark.parametrize("approved", ["false", "no", 1, [True]])
def test_a_journaled_decision_approves_only_when_it_says_true(approved):
    from airflow_provider_qwen.agent import Decision

    ran: list[int] = []

    @tool(requires_approval=True)
    def transfer(amount: int) -> str:
        """Move money."""
        ran.append(amount)
        return "done"

    journal = MemoryJournal()
    first = AgentLoop(
        send=Model(answer(None, call("transfer", {"amount": 5}, call_id="t1"))),
        build_request=build,
        tools=[transfer],
        journal=journal,
    )
    with pytest.raises(Exception, match="wait for approval"):
        asyncio.run(first.run(MESSAGES))
    journal.events.append(
        {"type": "decision", "turn": 1, "call_id": "t1", "decision": {"approved": approved, "reason": None}}
    )
    again = AgentLoop(send=Model(answer("ok")), build_request=build, tools=[transfer], journal=journal)
    assert asyncio.run(again.run(MESSAGES)).output == "ok"
    assert ran == []
    with pytest.raises(TypeError, match="True or False"):
        Decision(approved=approved)
