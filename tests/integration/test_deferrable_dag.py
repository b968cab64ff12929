"""Deferrable chat and tool-call operators under ``dag.test()`` (which runs the trigger inline) against
the emulator: the same result and ``qwen_cost`` as in the worker, repairs in further deferrals, the
budget reserved before deferring, errors and their charges through the event, resends counted."""

from __future__ import annotations

import json
from decimal import Decimal

import pendulum
import pytest
from airflow.sdk import DAG
from pydantic import BaseModel

from airflow_provider_qwen.operators import QwenChatOperator, QwenToolCallOperator
from airflow_provider_qwen.testing.faults import Fault
from tests.support.cost_fakes import COST_FIELDS

START = pendulum.datetime(2025, 1, 1, tz="UTC")


class Ticket(BaseModel):
    """A support ticket's fields."""

    title: str
    priority: int


@pytest.fixture(autouse=True)
def _fire_at_once(monkeypatch):
    """dag.test() runs the trigger inline: no scheduler to race, so no resume guard."""
    monkeypatch.setenv("AIRFLOW__QWEN__RESUME_GUARD_SECONDS", "0")


def _chats(emulator):
    return [r for r in emulator.requests if r.path.endswith("/chat/completions")]


def _run_both(run_dag, emulator, make):
    """The same task in the worker and deferred: their results, cost records and sent bodies."""
    out = {}
    for deferrable in (False, True):
        emulator.reset()
        with DAG(f"qwen_deferral_{deferrable}", schedule=None, start_date=START) as dag:
            make(deferrable)
        result = run_dag(dag)
        assert result.state == "success", result.task_states
        out[deferrable] = (result, [r.body for r in _chats(emulator)], emulator.total_charged())
    return out


def test_a_deferred_chat_gives_the_same_result_and_cost_as_in_the_worker(run_dag, qwen_emulator):
    runs = _run_both(
        run_dag,
        qwen_emulator,
        lambda d: QwenChatOperator(
            task_id="chat",
            prompt="Summarize the {{ 'quarterly' | upper }} report",
            max_completion_tokens=200,
            deferrable=d,
        ),
    )
    (worker, worker_bodies, _worker_charged), (deferred, deferred_bodies, deferred_charged) = (
        runs[False],
        runs[True],
    )
    assert deferred.xcom("chat") == worker.xcom("chat")
    assert [b["messages"] for b in deferred_bodies] == [
        [{"role": "user", "content": "Summarize the QUARTERLY report"}]
    ]
    assert {k: v for k, v in deferred_bodies[0].items() if k != "messages"} == {
        k: v for k, v in worker_bodies[0].items() if k != "messages"
    }
    worker_cost, deferred_cost = worker.xcom("chat", "qwen_cost"), deferred.xcom("chat", "qwen_cost")
    assert {k: deferred_cost[k] for k in COST_FIELDS} == {k: worker_cost[k] for k in COST_FIELDS}
    assert deferred_cost["estimates"] == []
    assert deferred_cost["estimated"] is False
    assert len(deferred_cost["tries"]) == 1
    assert (deferred_cost["credits_used"], Decimal(deferred_cost["usd_spent"])) == deferred_charged


def test_repairs_of_structured_output_continue_in_further_deferrals(run_dag, qwen_emulator):
    def make(deferrable: bool) -> None:
        qwen_emulator.add_faults(Fault.schema_invalid_args(), Fault.bad_json_args())
        QwenToolCallOperator(
            task_id="extract",
            prompt="Ticket: printer on fire, urgent",
            output_model=Ticket,
            max_completion_tokens=300,
            max_repairs=2,
            deferrable=deferrable,
        )

    runs = _run_both(run_dag, qwen_emulator, make)
    (worker, worker_bodies, _), (deferred, deferred_bodies, charged) = runs[False], runs[True]
    assert len(deferred_bodies) == len(worker_bodies) == 3  # two repairs, each a deferral of its own
    assert [len(b["messages"]) for b in deferred_bodies] == [len(b["messages"]) for b in worker_bodies]
    assert Ticket.model_validate(deferred.xcom("extract"))
    cost = deferred.xcom("extract", "qwen_cost")
    assert cost["requests"] == 3
    assert (cost["credits_used"], Decimal(cost["usd_spent"])) == charged
    assert {k: cost[k] for k in ("requests", "estimated")} == {
        k: worker.xcom("extract", "qwen_cost")[k] for k in ("requests", "estimated")
    }


def test_a_budget_refuses_before_deferring(run_dag, qwen_emulator):
    with DAG("qwen_deferral_budget", schedule=None, start_date=START) as dag:
        QwenChatOperator(
            task_id="chat",
            prompt="Write a long essay",
            max_completion_tokens=100_000,
            max_cost_usd="0.0001",
            deferrable=True,
        )
    result = run_dag(dag)
    assert result.task_states[("chat", -1)] == "failed"
    assert _chats(qwen_emulator) == []
    assert result.xcom("chat", "qwen_cost")["requests"] == 0


def test_an_error_in_the_triggerer_fails_the_task_with_its_charge(run_dag, qwen_emulator):
    qwen_emulator.add_faults(Fault.cut(after_chunks=3))
    with DAG("qwen_deferral_error", schedule=None, start_date=START) as dag:
        QwenChatOperator(
            task_id="chat", prompt="Tell a story", stream=True, max_completion_tokens=300, deferrable=True
        )
    result = run_dag(dag)
    assert result.task_states[("chat", -1)] == "failed"
    (chat,) = _chats(qwen_emulator)
    assert chat.body["stream"] is True
    cost = result.xcom("chat", "qwen_cost")
    assert cost["estimated"] is True  # a stream cut after it began may have been paid
    assert Decimal(cost["usd_spent"]) > 0
    assert [e["kind"] for e in cost["estimates"]] == ["cut_stream"]


def test_a_resent_call_is_counted_as_a_possibly_paid_try(run_dag, qwen_emulator, mocker):
    """A triggerer restarted mid-call runs the trigger again: the marker counts the earlier send."""
    from airflow_provider_qwen.triggers import qwen as trigger_module

    real_bump = trigger_module._bump

    def restarted(url: str, conn_id: str | None) -> int:
        real_bump(url, conn_id)  # the send of the triggerer that died
        return real_bump(url, conn_id)

    mocker.patch.object(trigger_module, "_bump", side_effect=restarted)
    with DAG("qwen_deferral_resent", schedule=None, start_date=START) as dag:
        QwenChatOperator(task_id="chat", prompt="Hello", max_completion_tokens=50, deferrable=True)
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    cost = result.xcom("chat", "qwen_cost")
    assert cost["requests"] == 2
    assert cost["estimated"] is True
    (estimate,) = cost["estimates"]
    assert estimate["kind"] == "unconfirmed"
    assert estimate["client_request_id"] == _chats(qwen_emulator)[0].headers["x-client-request-id"]


def test_the_default_comes_from_operators_default_deferrable(monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert QwenChatOperator(task_id="t", prompt="x").deferrable is True
    assert QwenChatOperator(task_id="u", prompt="x", deferrable=False).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert QwenToolCallOperator(task_id="v", prompt="x", output_model=Ticket).deferrable is False


def test_deferrable_must_be_a_boolean():
    from airflow_provider_qwen.client.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match=r"deferrable='yes' must be a boolean"):
        QwenChatOperator(task_id="t", prompt="x", deferrable="yes")


def test_the_trigger_round_trips_and_keeps_the_request_out_of_its_repr():
    from airflow_provider_qwen.client.request import build_request
    from airflow_provider_qwen.triggers.qwen import QwenChatTrigger

    request = build_request("a secret plan", max_completion_tokens=5, extra_body={"x_custom": 1})
    trigger = QwenChatTrigger(request=request.to_dict(), client_request_id="qwen-abc", marker=None)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_qwen.triggers.qwen.QwenChatTrigger"
    json.dumps(kwargs)
    again = QwenChatTrigger(**kwargs)
    from airflow_provider_qwen.client.request import ChatRequest

    assert ChatRequest.from_dict(again.request).to_body() == request.to_body()
    assert "secret plan" not in repr(again)


def test_the_event_waits_for_the_resume_guard_but_the_call_does_not(qwen_emulator):
    import asyncio
    import time

    from airflow_provider_qwen.client.request import build_request
    from airflow_provider_qwen.triggers.qwen import QwenChatTrigger

    request = build_request("hi", max_completion_tokens=5)
    trigger = QwenChatTrigger(request=request.to_dict(), client_request_id="qwen-" + "a" * 32)
    trigger.not_before = time.time() + 1.5

    async def first_event():
        async for event in trigger.run():
            return event, time.time()

    event, fired = asyncio.run(first_event())
    (chat,) = _chats(qwen_emulator)
    assert event.payload["status"] == "success"
    assert fired >= trigger.not_before
    assert chat.time < trigger.not_before - 1.0  # sent at once, only the event was held


@pytest.mark.parametrize("value", ["-1", "soon", "inf", "nan"])
def test_a_bad_resume_guard_is_refused_before_anything_is_sent(run_dag, qwen_emulator, monkeypatch, value):
    monkeypatch.setenv("AIRFLOW__QWEN__RESUME_GUARD_SECONDS", value)
    with DAG("qwen_deferral_guard", schedule=None, start_date=START) as dag:
        QwenChatOperator(task_id="chat", prompt="Hello", max_completion_tokens=50, deferrable=True)
    result = run_dag(dag)
    assert result.task_states[("chat", -1)] == "failed"
    assert _chats(qwen_emulator) == []
