"""require_approval: the result goes to a person (approve, edit, reject) before it is pushed."""

from __future__ import annotations

from datetime import timedelta

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskAwaitingInput
from pydantic import BaseModel

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.operators import QwenChatOperator, QwenToolCallOperator
from airflow_provider_qwen.operators.review import review_body
from tests.support.operator_fakes import FakeTI, answer, run, with_client


class Ticket(BaseModel):
    title: str
    priority: int


class _TI(FakeTI):
    """A task instance with the ids the cost journal is keyed by (files under [qwen] storage_base)."""

    id = "0190aaaa-0000-7000-8000-000000000000"
    dag_id, run_id, task_id, map_index = "dag", "manual__1", "chat", -1


@pytest.fixture(autouse=True)
def _storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(tmp_path))


def _parked(mocker, operator, *replies):
    with_client(mocker, type(operator), *replies)
    upsert = mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    ti = _TI()
    with pytest.raises(TaskAwaitingInput) as parked:
        run(operator, ti)
    return upsert, parked.value, ti


def _event(option, **params):
    return {
        "chosen_options": [option],
        "params_input": params,
        "responded_by_user": {"id": "1", "name": "ana"},
    }


def _resume(operator, parked, event):
    ti = _TI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1"}
    return getattr(operator, parked.method_name)(context, event, **parked.kwargs), ti


def test_the_answer_waits_for_a_person_and_an_approval_pushes_it(mocker):
    op = QwenChatOperator(task_id="chat", prompt="hi", require_approval=True)
    upsert, parked, ti = _parked(mocker, op, answer("the draft"))
    shown = upsert.call_args.kwargs
    assert shown["options"] == ["Approve", "Edit", "Reject"]
    assert shown["defaults"] == ["Reject"]
    assert "the draft" in shown["body"]
    assert shown["params"]["output"]["value"] == "the draft"
    assert ti.pushed["qwen_cost"]["requests"] == 1  # the try's cost is published at the pause
    result, resumed = _resume(op, parked, _event("Approve"))
    assert result == "the draft"
    assert resumed.pushed["qwen_cost"]["requests"] == 1  # counted once, not again


def test_an_edit_pushes_the_persons_text(mocker):
    op = QwenChatOperator(task_id="chat", prompt="hi", require_approval=True)
    _, parked, _ = _parked(mocker, op, answer("the draft"))
    assert _resume(op, parked, _event("Edit", output="my text", reason=""))[0] == "my text"


def test_a_rejection_fails_with_the_reason_and_no_retry(mocker):
    op = QwenChatOperator(task_id="chat", prompt="hi", require_approval=True)
    _, parked, _ = _parked(mocker, op, answer("the draft"))
    with pytest.raises(AirflowFailException, match=r"rejected by ana: too vague"):
        _resume(op, parked, _event("Reject", reason="too vague"))
    with pytest.raises(AirflowFailException, match="no review came within"):
        _resume(op, parked, {"timedout": True})
    with pytest.raises(AirflowFailException, match="approves nothing"):
        _resume(op, parked, {"chosen_options": ["Approve", "Reject"], "params_input": {}})


def test_an_edited_structured_result_is_validated_again(mocker):
    op = QwenToolCallOperator(task_id="extract", prompt="hi", output_model=Ticket, require_approval=True)
    reply = answer(None, tool_calls=[("c1", "Ticket", {"title": "fire", "priority": 1})])
    upsert, parked, _ = _parked(mocker, op, reply)
    assert '"priority": 1' in upsert.call_args.kwargs["params"]["output"]["value"]
    edited = _resume(op, parked, _event("Edit", output='{"title": "fire", "priority": 3}'))[0]
    assert edited == {"title": "fire", "priority": 3}
    with pytest.raises(AirflowFailException, match="priority"):
        _resume(op, parked, _event("Edit", output='{"title": "fire", "priority": "high"}'))


def test_the_review_page_cannot_be_broken_out_of():
    body = review_body("```\n# heading\u202e evil")
    assert "````" in body
    assert "\u202e" not in body
    assert "\\u202e" in body


@pytest.mark.parametrize(
    ("name", "value"), [("require_approval", "yes"), ("review_timeout", 30), ("review_timeout", timedelta(0))]
)
def test_bad_review_parameters_fail_at_parse_time(name, value):
    with pytest.raises(InvalidRequestError, match=name):
        QwenChatOperator(task_id="chat", prompt="hi", **{name: value})
