"""QwenAgentOperator: turns through Calls, the journal across tries and pauses, approval, XCom."""

from __future__ import annotations

import datetime
import json
from decimal import Decimal

import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.agent import tool
from airflow_provider_qwen.operators.agent import QwenAgentOperator, approval_body, approval_decision
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.spend import BudgetRefusedError
from tests.support.cost_fakes import FakeRun, FakeStateStore
from tests.support.operator_fakes import answer, with_client


@pytest.fixture
def storage(tmp_path, monkeypatch):
    base = tmp_path / "qwen"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(base))
    return base


class Ran:
    """Which tool calls ran, in order (a durable run must not repeat any)."""

    def __init__(self):
        self.calls = []


@pytest.fixture
def ran():
    return Ran()


def _tools(ran):
    def lookup_revenue(region: str, day: datetime.date) -> dict:
        """Revenue of a region on a day.

        :param region: EMEA, AMER or APAC.
        """
        ran.calls.append(("lookup_revenue", region, day))
        assert isinstance(day, datetime.date)  # typed, not the JSON string
        return {"region": region, "usd": 100 if region == "EMEA" else 250}

    async def count_orders(region: str) -> int:
        """Orders of a region."""
        ran.calls.append(("count_orders", region))
        return 7

    return [lookup_revenue, count_orders]


def _agent(ran, **kwargs):
    with DAG("agent_dag", schedule=None) as dag:
        op = QwenAgentOperator(
            task_id="agent",
            prompt="Compare EMEA and AMER",
            tools=kwargs.pop("tools", None) or _tools(ran),
            max_completion_tokens=100,
            **kwargs,
        )
    return dag, op


def _run(op, ti, dag, *, state=None, method=None, **method_kwargs):
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id, "dag": dag}
    if state is not None:
        context["task_state_store"] = state
    op.render_template_fields(context)
    if method is None:
        return op.execute(context)
    return getattr(op, method)(context, **method_kwargs)


TURN_1 = answer(
    None,
    reasoning="I should look both up.",
    tool_calls=[
        ("call_1", "lookup_revenue", {"region": "EMEA", "day": "2026-11-30"}),
        ("call_2", "lookup_revenue", {"region": "AMER", "day": "2026-11-30"}),
    ],
)
TURN_2 = answer(None, tool_calls=[("call_3", "count_orders", {"region": "AMER"})])
FINAL = answer("AMER made 250 USD, EMEA 100 USD.")


def test_a_multi_turn_run_returns_the_answer_and_pushes_transcript_and_cost(mocker, storage, ran):
    client = with_client(mocker, QwenBaseOperator, TURN_1, TURN_2, FINAL)
    dag, op = _agent(ran)
    ti = FakeRun("agent_dag").ti("agent")

    result = _run(op, ti, dag, state=FakeStateStore())

    assert result == "AMER made 250 USD, EMEA 100 USD."
    assert ran.calls == [
        ("lookup_revenue", "EMEA", datetime.date(2026, 11, 30)),
        ("lookup_revenue", "AMER", datetime.date(2026, 11, 30)),
        ("count_orders", "AMER"),
    ]
    second = client.bodies[1]["messages"]
    assistant = second[1]
    assert assistant["role"] == "assistant"
    assert "reasoning_content" not in assistant
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_1", "call_2"]
    tool_messages = [m for m in second if m["role"] == "tool"]
    assert [m["tool_call_id"] for m in tool_messages] == ["call_1", "call_2"]
    assert json.loads(tool_messages[1]["content"]) == {"region": "AMER", "usd": 250}
    assert {t["function"]["name"] for t in client.bodies[0]["tools"]} == {"lookup_revenue", "count_orders"}
    summary = ti.pushed["qwen_agent"]
    assert summary["turns"] == 3
    assert summary["tool_calls"] == 3
    assert [c["name"] for c in summary["per_turn"][0]["tool_calls"]] == ["lookup_revenue"] * 2
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 3
    assert Decimal(cost["usd_spent"]) == Decimal("0.003")


def test_a_retry_resumes_at_the_last_finished_turn_without_paying_or_running_again(mocker, storage, ran):
    from airflow_provider_qwen.client.errors import ServerError

    failure = ServerError("upstream failed", status_code=502)  # the try fails after turn 1
    client = with_client(mocker, QwenBaseOperator, TURN_1, failure, TURN_2, FINAL)
    dag, op = _agent(ran)
    run, state = FakeRun("agent_dag"), FakeStateStore()
    with pytest.raises(ServerError):
        _run(op, run.ti("agent", try_number=1), dag, state=state)
    assert len(ran.calls) == 2
    assert len(client.requests) == 2

    ti = run.ti("agent", try_number=2)
    result = _run(op, ti, dag, state=state)

    assert result == FINAL.content
    assert len(client.requests) == 4  # turn 1 not sent again: the failed request, then turns 2 and 3
    assert [c[0] for c in ran.calls] == ["lookup_revenue", "lookup_revenue", "count_orders"]
    assert ti.pushed["qwen_cost"]["requests"] == 3  # try 1 paid turn 1 (the failed one was not answered)


def test_the_budget_holds_across_turns_and_refuses_before_sending(mocker, storage, ran):
    client = with_client(mocker, QwenBaseOperator, TURN_1, TURN_2, FINAL)
    dag, op = _agent(ran, max_cost_usd="0.0025")  # one turn's worst case fits, not two
    with pytest.raises(BudgetRefusedError, match=r"max_cost_usd=0\.0025"):
        _run(op, FakeRun("agent_dag").ti("agent"), dag, state=FakeStateStore())
    assert len(client.requests) == 1


def test_an_approval_parks_the_task_and_a_rejection_reaches_the_model(mocker, storage, ran):
    from airflow.sdk.exceptions import TaskAwaitingInput

    def delete_region(region: str) -> str:
        """Delete every row of a region."""
        ran.calls.append(("delete_region", region))
        return "deleted"

    guarded = tool(delete_region, requires_approval=True)
    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("call_9", "delete_region", {"region": "EMEA"})]),
        answer("I did not delete EMEA: the reviewer said no."),
    )
    upsert = mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    dag, op = _agent(ran, tools=[guarded])
    run, state = FakeRun("agent_dag"), FakeStateStore()
    ti = run.ti("agent")
    ti.id = "ti-uuid"

    with pytest.raises(TaskAwaitingInput) as parked:
        _run(op, ti, dag, state=state)

    assert parked.value.method_name == "execute_approval"
    assert parked.value.kwargs == {"pending": ["call_9"]}
    shown = upsert.call_args.kwargs
    assert shown["options"] == ["Approve", "Reject"]
    assert "delete_region" in shown["body"]
    assert '"region": "EMEA"' in shown["body"]
    assert ran.calls == []
    assert ti.pushed["qwen_cost"]["requests"] == 1

    event = {
        "chosen_options": ["Reject"],
        "params_input": {"reason": "not in production"},
        "responded_by_user": {"id": "1", "name": "ana"},
    }
    result = _run(op, ti, dag, state=state, method="execute_approval", event=event, pending=["call_9"])

    assert result == "I did not delete EMEA: the reviewer said no."
    assert ran.calls == []
    rejected = next(m for m in client.bodies[1]["messages"] if m["role"] == "tool")["content"]
    assert "not in production" in rejected
    assert ti.pushed["qwen_cost"]["requests"] == 2  # before the pause and after, one try
    assert len(client.requests) == 2


def test_an_approved_call_runs_once(mocker, storage, ran):
    from airflow.sdk.exceptions import TaskAwaitingInput

    def send_report(to: str) -> str:
        """E-mail the report."""
        ran.calls.append(("send_report", to))
        return "sent"

    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("call_1", "send_report", {"to": "ops@example.com"})]),
        answer("Sent."),
    )
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    dag, op = _agent(ran, tools=[tool(send_report, requires_approval=True)])
    run, state = FakeRun("agent_dag"), FakeStateStore()
    ti = run.ti("agent")
    ti.id = "ti-uuid"
    with pytest.raises(TaskAwaitingInput):
        _run(op, ti, dag, state=state)
    event = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": None}
    result = _run(op, ti, dag, state=state, method="execute_approval", event=event, pending=["call_1"])
    assert result == "Sent."
    assert ran.calls == [("send_report", "ops@example.com")]
    assert len(client.requests) == 2


def test_approval_decisions_from_the_hitl_event():
    assert approval_decision({"chosen_options": ["Approve"]}).approved
    rejected = approval_decision({"chosen_options": ["Reject"], "params_input": {"reason": " no "}})
    assert not rejected.approved
    assert rejected.reason == "no"
    timed_out = approval_decision({"chosen_options": ["Reject"], "timedout": True})
    assert not timed_out.approved
    assert "approval_timeout" in timed_out.reason


def test_approval_body_shows_each_call_and_its_arguments():
    from airflow_provider_qwen.agent import PendingCall

    body = approval_body([PendingCall("call_1", "drop", '{"table": "sales"}', 2, "Drop a table.")])
    assert "### drop (turn 2, call `call_1`)" in body
    assert '"table": "sales"' in body
    assert "Drop a table." in body


def test_bad_tools_and_limits_fail_when_the_dag_is_parsed(ran):
    def untyped(x):
        return x

    with pytest.raises(Exception, match="type hint"):
        _agent(ran, tools=[untyped])
    with pytest.raises(Exception, match="max_turns"):
        _agent(ran, max_turns=0)
    with pytest.raises(TypeError, match="approval_timeout"):
        _agent(ran, approval_timeout=30)


def test_a_long_transcript_goes_to_storage_and_xcom_carries_its_path(mocker, storage, ran, monkeypatch):
    from airflow_provider_qwen.operators import agent as agent_module

    monkeypatch.setattr(agent_module, "SUMMARY_XCOM_MAX_BYTES", 200)
    with_client(mocker, QwenBaseOperator, TURN_1, TURN_2, FINAL)
    dag, op = _agent(ran)
    ti = FakeRun("agent_dag").ti("agent")
    _run(op, ti, dag, state=FakeStateStore())

    summary = ti.pushed["qwen_agent"]
    assert "per_turn" not in summary
    assert summary["turns"] == 3
    from airflow.sdk import ObjectStoragePath

    stored = json.loads(ObjectStoragePath(summary["transcript_path"]).read_text())
    assert len(stored["turns"]) == 3
