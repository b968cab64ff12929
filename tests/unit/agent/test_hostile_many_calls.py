"""A model asking for a thousand tool calls in one answer: only ``max_calls_per_turn`` run (each is
journaled, and each result is paid for in every later request); the model is told the rest were
not run, and may ask again."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_qwen.agent import AgentLoop, tool
from airflow_provider_qwen.agent.journal import MemoryJournal
from airflow_provider_qwen.client.errors import InvalidRequestError
from tests.unit.agent._fakes import Model, answer, build, call


def test_a_thousand_calls_in_one_answer_run_only_the_first_max_calls_per_turn():
    ran: list[int] = []

    @tool
    def lookup(n: int) -> int:
        """Look up n."""
        ran.append(n)
        return n

    calls = [call("lookup", {"n": n}, call_id=f"c{n}") for n in range(1000)]
    model = Model(answer(None, *calls), answer("done"))
    journal = MemoryJournal()
    loop = AgentLoop(send=model, build_request=build, tools=[lookup], journal=journal, max_calls_per_turn=5)

    result = asyncio.run(loop.run([{"role": "user", "content": "go"}]))

    assert sorted(ran) == [0, 1, 2, 3, 4]
    outcomes = [r.outcome for r in result.transcript.turns[0].calls]
    assert outcomes[:5] == ["ok"] * 5
    assert set(outcomes[5:]) == {"not_run"}
    tool_messages = [m for m in model.bodies[1]["messages"] if m["role"] == "tool"]
    assert len(tool_messages) == 1000  # every call answered, as the protocol wants
    assert "at most 5 tool calls" in tool_messages[-1]["content"]
    assert result.transcript.summary()["outcomes"] == {"not_run": 995, "ok": 5}
    assert len(json.dumps(journal.events)) < 400_000


def test_the_default_is_32_and_a_bad_value_fails_early():
    assert AgentLoop(send=None, build_request=build).max_calls_per_turn == 32
    with pytest.raises(InvalidRequestError, match="max_calls_per_turn"):
        AgentLoop(send=None, build_request=build, max_calls_per_turn=0)


def test_a_resume_runs_no_call_again_and_still_answers_the_calls_not_run():
    from tests.unit.agent._fakes import DyingJournal, Killed

    ran: list[int] = []

    @tool
    def lookup(n: int) -> int:
        """Look up n."""
        ran.append(n)
        return n

    calls = [call("lookup", {"n": n}, call_id=f"c{n}") for n in range(50)]
    journal = DyingJournal(lambda e: e["type"] == "call" and e["record"]["call_id"] == "c2")
    first = AgentLoop(
        send=Model(answer(None, *calls)),
        build_request=build,
        tools=[lookup],
        journal=journal,
        max_calls_per_turn=3,
        max_parallel_tools=1,
    )
    with pytest.raises(Killed):
        asyncio.run(first.run([{"role": "user", "content": "go"}]))
    model = Model(answer("done"))
    again = AgentLoop(send=model, build_request=build, tools=[lookup], journal=journal, max_calls_per_turn=3)

    assert asyncio.run(again.run([{"role": "user", "content": "go"}])).output == "done"
    assert sorted(ran) == [0, 1, 2]
    assert sum(m["role"] == "tool" for m in model.bodies[0]["messages"]) == 50
