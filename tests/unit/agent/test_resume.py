"""Durability and approval: a new try replays the journal and pays for no answered turn and runs no
finished call again; calls waiting for a person pause the run and resume in a new loop."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from pydantic import BaseModel

from airflow_provider_qwen.agent import (
    AgentLoop,
    ApprovalRequired,
    Decision,
    JournalMismatchError,
    MemoryJournal,
    ToolContext,
    tool,
)
from tests.unit.agent._fakes import DyingJournal, Killed, Lines, Model, answer, build, call

PROMPT = [{"role": "user", "content": "Weather in Paris and Rome?"}]


def turn_one():
    return answer(None, call("lookup", {"city": "Paris"}, "c1"), call("lookup", {"city": "Rome"}, "c2"))


class World:
    """The tools and what they did, across tries (a file the tool appends to, in the real test)."""

    def __init__(self, die_on: str | None = None) -> None:
        self.runs: Counter[str] = Counter()
        self.keys: list[str] = []
        self.die_on = die_on

    def tools(self) -> list:
        def lookup(city: str, context: ToolContext) -> str:
            self.runs[city] += 1
            self.keys.append(context.idempotency_key)
            if city == self.die_on:
                self.die_on = None
                raise Killed("the worker died while the tool ran")
            return f"{city}: 20 C"

        return [lookup]


def loop(model: Model, world: World, journal, try_number: int = 1, **options) -> AgentLoop:
    def context(turn: int, call_id: str) -> ToolContext:
        return ToolContext("run-1", "agent", None, try_number, turn, call_id)

    return AgentLoop(
        send=model,
        build_request=build,
        tools=world.tools(),
        journal=journal,
        context=context,
        max_parallel_tools=1,
        **options,
    )


@pytest.mark.parametrize(
    ("where", "dies", "ran_first"),
    [
        ("after the answer", lambda e: e["type"] == "answer", {}),
        ("after one result", None, {"Paris": 1, "Rome": 1}),
        (
            "after every result",
            lambda e: e["type"] == "call" and e["record"]["call_id"] == "c2",
            {"Paris": 1, "Rome": 1},
        ),
    ],
)
def test_a_retry_after_a_kill_pays_no_answered_turn_and_runs_no_finished_call_again(where, dies, ran_first):
    world = World(die_on="Rome" if dies is None else None)
    journal = DyingJournal(dies or (lambda e: False))
    first = Model(turn_one())
    with pytest.raises(Killed):
        asyncio.run(loop(first, world, journal).run(PROMPT))
    assert len(first.requests) == 1
    assert dict(world.runs) == ran_first

    retry = Model(answer("Both 20 C."))
    result = asyncio.run(loop(retry, world, MemoryJournal(journal.events), try_number=2).run(PROMPT))
    assert result.output == "Both 20 C."
    assert len(retry.requests) == 1  # turn 2 only: turn 1 was not sent again
    expected_rome = 2 if where == "after one result" else 1  # the call the kill cut short runs again
    assert world.runs == {"Paris": 1, "Rome": expected_rome}
    tool_messages = [m for m in retry.bodies[0]["messages"] if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["c1", "c2"]
    assert [t.index for t in result.transcript.turns] == [1, 2]


def test_the_idempotency_key_is_the_same_on_the_try_that_runs_the_call_again():
    world = World(die_on="Rome")
    journal = MemoryJournal()
    with pytest.raises(Killed):
        asyncio.run(loop(Model(turn_one()), world, journal).run(PROMPT))
    asyncio.run(loop(Model(answer("ok")), world, journal, try_number=2).run(PROMPT))
    paris, rome_try1, rome_try2 = world.keys
    assert rome_try1 == rome_try2
    assert paris != rome_try1


def test_a_finished_run_replays_whole_without_a_request_or_a_call():
    world = World()
    journal = MemoryJournal()
    asyncio.run(loop(Model(turn_one(), answer("Done.")), world, journal).run(PROMPT))
    log = Lines()
    again = asyncio.run(loop(Model(), world, journal, logger=log).run(PROMPT))
    assert again.output == "Done."
    assert world.runs == {"Paris": 1, "Rome": 1}
    assert log.lines == [
        "resuming from the agent journal: 2 turn(s) answered and 2 tool call(s) finished before; "
        "none is sent or run again"
    ]


class Verdict(BaseModel):
    city: str


def test_output_turns_are_replayed_too():
    world = World()
    journal = DyingJournal(lambda e: e["type"] == "answer" and e["turn"]["kind"] == "output")
    first = Model(answer("Paris."), answer(None, call("Verdict", {"town": "Paris"}, "o1")))
    with pytest.raises(Killed):
        asyncio.run(loop(first, world, journal, output_model=Verdict).run(PROMPT))
    retry = Model(answer(None, call("Verdict", {"city": "Paris"}, "o2")))
    result = asyncio.run(loop(retry, world, MemoryJournal(journal.events), output_model=Verdict).run(PROMPT))
    assert result.output == {"city": "Paris"}
    assert len(retry.requests) == 1
    assert retry.bodies[0]["messages"][-1]["role"] == "tool"


def test_a_changed_prompt_is_refused_or_with_restart_started_over():
    world = World()
    journal = MemoryJournal()
    asyncio.run(loop(Model(turn_one(), answer("Done.")), world, journal).run(PROMPT))
    other = [{"role": "user", "content": "Weather in Oslo?"}]
    with pytest.raises(JournalMismatchError, match=r"other messages .* 2 answered turn\(s\) and 2 tool call"):
        asyncio.run(loop(Model(), world, journal).run(other))
    fresh = Model(answer("Oslo: 5 C."))
    result = asyncio.run(loop(fresh, world, journal, on_journal_mismatch="restart").run(other))
    assert result.output == "Oslo: 5 C."
    assert len(fresh.requests) == 1
    assert asyncio.run(loop(Model(), world, journal).run(other)).output == "Oslo: 5 C."  # the new run holds


# -- approval ---------------------------------------------------------------------------------


class Ops:
    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()

    def tools(self) -> list:
        @tool(requires_approval=True)
        def deploy(version: str) -> str:
            """Deploy a version to production."""
            self.runs["deploy"] += 1
            return f"deployed {version}"

        def status() -> str:
            self.runs["status"] += 1
            return "green"

        def refund(amount: int) -> str:
            self.runs[f"refund {amount}"] += 1
            return "refunded"

        return [deploy, status, refund]


def ops_loop(model: Model, ops: Ops, journal, **options) -> AgentLoop:
    return AgentLoop(send=model, build_request=build, tools=ops.tools(), journal=journal, **options)


def deploy_turn():
    return answer(None, call("deploy", {"version": "1.2"}, "c1"), call("status", {}, "c2"))


def test_a_call_that_needs_approval_pauses_after_the_other_calls_ran():
    ops, journal = Ops(), MemoryJournal()
    model = Model(deploy_turn())
    with pytest.raises(ApprovalRequired) as caught:
        asyncio.run(ops_loop(model, ops, journal).run(PROMPT))
    (pending,) = caught.value.pending
    assert (pending.call_id, pending.name, pending.arguments, pending.turn) == (
        "c1",
        "deploy",
        '{"version": "1.2"}',
        1,
    )
    assert pending.description == "Deploy a version to production."
    assert ops.runs == {"status": 1}
    assert [e["type"] for e in journal.events] == ["start", "answer", "call", "pending"]
    with pytest.raises(ApprovalRequired):  # resumed without a decision: still waiting, nothing sent or run
        asyncio.run(ops_loop(Model(), ops, journal).run(PROMPT))
    assert ops.runs == {"status": 1}


def test_resumed_approved_the_call_runs_once():
    ops, journal = Ops(), MemoryJournal()
    with pytest.raises(ApprovalRequired):
        asyncio.run(ops_loop(Model(deploy_turn()), ops, journal).run(PROMPT))
    model = Model(answer("Deployed."))
    decisions = {"c1": Decision(True, by="ana")}
    result = asyncio.run(ops_loop(model, ops, journal).run(PROMPT, decisions=decisions))
    assert result.output == "Deployed."
    assert ops.runs == {"status": 1, "deploy": 1}
    record = result.transcript.turns[0].record("c1")
    assert record is not None
    assert (record.outcome, record.note) == ("ok", "approved by ana")
    sent = [m for m in model.bodies[0]["messages"] if m["role"] == "tool"]
    assert sent == [
        {"role": "tool", "tool_call_id": "c1", "content": "deployed 1.2"},
        {"role": "tool", "tool_call_id": "c2", "content": "green"},
    ]
    again = asyncio.run(ops_loop(Model(), ops, journal).run(PROMPT, decisions=decisions))  # decisions resent
    assert again.output == "Deployed."
    assert ops.runs == {"status": 1, "deploy": 1}


def test_resumed_rejected_the_model_is_told_and_the_tool_never_runs():
    ops, journal = Ops(), MemoryJournal()
    with pytest.raises(ApprovalRequired):
        asyncio.run(ops_loop(Model(deploy_turn()), ops, journal).run(PROMPT))
    model = Model(answer("Not deployed."))
    decisions = {"c1": Decision(False, reason="not on a Friday", by="bo")}
    asyncio.run(ops_loop(model, ops, journal).run(PROMPT, decisions=decisions))
    assert ops.runs == {"status": 1}
    (told,) = [m["content"] for m in model.bodies[0]["messages"] if m.get("tool_call_id") == "c1"]
    assert told.startswith("A person rejected this call: not on a Friday.")
    events = [e for e in journal.events if e["type"] == "call" and e["record"]["call_id"] == "c1"]
    assert events[0]["record"]["outcome"] == "rejected"
    assert events[0]["record"]["note"] == "rejected by bo"


def test_a_policy_picks_calls_and_an_approve_callback_decides_without_a_pause():
    ops, journal = Ops(), MemoryJournal()
    asked = []

    async def approve(pending):
        asked.append(pending.name)
        return Decision(pending.name == "deploy", by="policy-bot")

    model = Model(
        answer(
            None,
            call("deploy", {"version": "2"}, "c1"),
            call("refund", {"amount": 500}, "c2"),
            call("refund", {"amount": 5}, "c3"),
        ),
        answer("Done."),
    )
    loop = ops_loop(
        model, ops, journal, tool_approval=lambda t, kw: kw.get("amount", 0) > 100, approve=approve
    )
    result = asyncio.run(loop.run(PROMPT))
    assert sorted(asked) == ["deploy", "refund"]
    assert ops.runs == {"deploy": 1, "refund 5": 1}
    outcomes = {r.call_id: r.outcome for r in result.transcript.turns[0].calls}
    assert outcomes == {"c1": "ok", "c2": "rejected", "c3": "ok"}
    assert sum(e["type"] == "decision" for e in journal.events) == 2


def test_a_decision_survives_a_kill_while_the_approved_call_runs():
    ops, journal = Ops(), MemoryJournal()
    with pytest.raises(ApprovalRequired):
        asyncio.run(ops_loop(Model(deploy_turn()), ops, journal).run(PROMPT))
    dying = DyingJournal(lambda e: e["type"] == "decision", journal.events)
    with pytest.raises(Killed):
        asyncio.run(ops_loop(Model(), ops, dying).run(PROMPT, decisions={"c1": Decision(True)}))
    result = asyncio.run(ops_loop(Model(answer("ok")), ops, MemoryJournal(dying.events)).run(PROMPT))
    assert result.output == "ok"
    assert ops.runs == {"status": 1, "deploy": 1}
