"""A hostile model's call ids: reused from an earlier turn, colliding with a stand-in, or holding
Markdown and control characters that would reach the approval page and the log."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from airflow_provider_qwen.agent import AgentLoop, Decision, tool
from airflow_provider_qwen.agent.journal import MemoryJournal
from tests.unit.agent._fakes import Model, answer, build, call


def _danger_tool(ran: list[str]):
    @tool(requires_approval=True)
    def transfer(amount: int) -> str:
        """Move money."""
        ran.append(f"transfer {amount}")
        return "done"

    return transfer


def test_an_id_reused_from_an_approved_call_does_not_inherit_its_approval() -> None:
    ran: list[str] = []
    asked: list[str] = []

    def approve(pending):
        asked.append(pending.arguments)
        return Decision(approved=json.loads(pending.arguments)["amount"] == 1)

    model = Model(
        answer(None, call("transfer", {"amount": 1}, call_id="c1")),
        answer(None, call("transfer", {"amount": 1000000}, call_id="c1")),
        answer("ok"),
    )
    loop = AgentLoop(send=model, build_request=build, tools=[_danger_tool(ran)], approve=approve)
    result = asyncio.run(loop.run([{"role": "user", "content": "go"}]))

    assert ran == ["transfer 1"]  # the million was asked about, and rejected
    assert len(asked) == 2
    ids = [c["id"] for t in result.transcript.turns for c in t.tool_calls]
    assert len(set(ids)) == len(ids)


def test_an_id_reused_from_an_earlier_turn_is_replaced_and_survives_a_resume() -> None:
    ran: list[str] = []
    journal = MemoryJournal()
    model = Model(
        answer(None, call("transfer", {"amount": 1}, call_id="c1")),
        answer(None, call("transfer", {"amount": 2}, call_id="c1")),
    )
    loop = AgentLoop(
        send=model,
        build_request=build,
        tools=[_danger_tool(ran)],
        journal=journal,
        approve=lambda p: Decision(approved=True),
    )
    with pytest.raises(AssertionError, match="unexpected request"):  # the script ends: a crash
        asyncio.run(loop.run([{"role": "user", "content": "go"}]))
    assert ran == ["transfer 1", "transfer 2"]
    # a new try replays: nothing runs again
    again = AgentLoop(
        send=Model(answer("ok")),
        build_request=build,
        tools=[_danger_tool(ran)],
        journal=journal,
        approve=lambda p: Decision(approved=True),
    )
    asyncio.run(again.run([{"role": "user", "content": "go"}]))
    assert ran == ["transfer 1", "transfer 2"]


def test_an_id_equal_to_a_stand_in_does_not_collide() -> None:
    @tool
    def echo(x: int) -> int:
        """Echo."""
        return x

    model = Model(
        answer(None, call("echo", {"x": 1}, call_id="call_1_1"), call("echo", {"x": 2}, call_id="call_1_1")),
        answer("ok"),
    )
    loop = AgentLoop(send=model, build_request=build, tools=[echo])
    result = asyncio.run(loop.run([{"role": "user", "content": "go"}]))
    ids = [c["id"] for c in result.transcript.turns[0].tool_calls]
    assert len(set(ids)) == 2
    assert [r.result for r in result.transcript.turns[0].calls] == ["1", "2"]


def test_an_id_with_markdown_or_control_characters_is_replaced() -> None:
    @tool
    def echo(x: int) -> int:
        """Echo."""
        return x

    hostile = "x`\n\n# APPROVED BY SECURITY\n\u202e" + "a" * 500
    model = Model(answer(None, call("echo", {"x": 1}, call_id=hostile)), answer("ok"))
    loop = AgentLoop(send=model, build_request=build, tools=[echo])
    result = asyncio.run(loop.run([{"role": "user", "content": "go"}]))
    (call_id,) = [c["id"] for c in result.transcript.turns[0].tool_calls]
    assert re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", call_id)
