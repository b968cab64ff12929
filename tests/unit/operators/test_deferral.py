"""Deferral without a triggerer: what the task journals and pushes when it defers (the call in flight
counted at its worst case), and how the resume settles it from the event."""

from __future__ import annotations

from decimal import Decimal

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_qwen.client.errors import RateLimitError, error_from_dict, error_to_dict
from airflow_provider_qwen.operators import QwenChatOperator
from tests.support.operator_fakes import FakeTI, answer, run, with_client

PRICES = {"alibaba/qwen3.7-max": {"input": "2.6", "output": "7.8"}}


def _deferred(mocker, **params):
    with_client(mocker, QwenChatOperator)
    op = QwenChatOperator(task_id="chat", prompt="hi", deferrable=True, max_completion_tokens=1000, **params)
    with pytest.raises(TaskDeferred) as deferred:
        run(op)
    return op, deferred.value


def test_deferring_pushes_the_call_in_flight_at_its_worst_case(mocker):
    with_client(mocker, QwenChatOperator)
    op = QwenChatOperator(
        task_id="chat", prompt="hi", deferrable=True, max_completion_tokens=1000, max_cost_usd="1"
    )
    ti = FakeTI()
    with pytest.raises(TaskDeferred) as deferred:
        run(op, ti)
    resume = deferred.value.trigger.resume
    held = Decimal(resume["call"]["held_usd"])
    assert held > 0  # prompt bound and 1,000 output tokens at the output price
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 0
    assert Decimal(cost["usd_unsettled"]) == held
    assert [e["kind"] for e in cost["estimates"]] == ["in_flight"]
    assert cost["estimates"][0]["client_request_id"] == deferred.value.trigger.client_request_id
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.trigger.retry_after_send is False  # under a budget: one paid try held


def test_the_resume_settles_the_call_from_the_event(mocker):
    op, deferred = _deferred(mocker)
    completion = answer("the answer")
    event = {
        "status": "success",
        "resent": 0,
        "resume": deferred.trigger.resume,
        "completion": completion.to_dict(),
    }
    ti = FakeTI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1"}
    assert op.execute_complete(context, event) == "the answer"
    cost = ti.pushed["qwen_cost"]
    assert (cost["requests"], cost["usd_spent"], cost["estimated"], cost["estimates"]) == (
        1,
        "0.001",
        False,
        [],
    )


def test_an_error_event_raises_its_error_and_counts_its_resends(mocker):
    op, deferred = _deferred(mocker)
    error = RateLimitError("slow down", status_code=429, retry_after=2.5, client_request_id="qwen-1")
    event = {"status": "error", "resent": 1, "resume": deferred.trigger.resume, "error": error_to_dict(error)}
    ti = FakeTI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1"}
    with pytest.raises(RateLimitError) as raised:
        op.execute_complete(context, event)
    assert raised.value.retry_after == 2.5
    assert raised.value.status_code == 429
    cost = ti.pushed["qwen_cost"]
    assert cost["requests"] == 1
    assert cost["estimated"] is True


def test_a_foreign_event_is_refused_clearly(mocker):
    op, _ = _deferred(mocker)
    ti = FakeTI()
    with pytest.raises(TypeError, match="not a Qwen trigger's event"):
        op.execute_complete({"ti": ti, "task_instance": ti, "params": {}}, {"status": "success"})


def test_errors_round_trip_through_json():
    import json

    from airflow_provider_qwen.client.errors import Charge, StreamError, StructuredOutputError

    for error in (
        RateLimitError("r", status_code=429, retry_after=None, inference_id="i"),
        StructuredOutputError("s", errors=["a: bad"]),
        StreamError("cut", charge=Charge(unconfirmed_tries=1, reported_by_service=True)),
    ):
        again = error_from_dict(json.loads(json.dumps(error_to_dict(error))))
        assert type(again) is type(error)
        assert str(again) == str(error)
        assert again.charge == error.charge
    assert type(error_from_dict({"type": "os.system", "message": "x"})).__name__ == "QwenError"
