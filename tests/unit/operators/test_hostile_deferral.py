"""Hostile deferral and review: events of a wrong shape, garbage send markers, a request that cannot be
rebuilt on resume, a triggerer that fails before sending, odd review answers. Each test drives the
operator as Airflow does: the task defers, the trigger runs (its kwargs and event round-tripped
through Airflow's serde), and a fresh copy of the operator, rendered again, resumes."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_qwen.client.errors import QwenError
from airflow_provider_qwen.operators import QwenChatOperator
from tests.support import deferral_fakes
from tests.support.deferral_fakes import PausedTask, TriggerClient, TriggerHook, fire
from tests.support.operator_fakes import (
    FakeClient,
    answer,
    no_usage_answer,
    with_client,
)

pytestmark = pytest.mark.usefixtures("deferral_storage")
deferral_storage = deferral_fakes.deferral_storage


def _chat(mocker: Any, *replies: Any, **params: Any) -> tuple[PausedTask, FakeClient]:
    client = with_client(mocker, QwenChatOperator, *replies)
    params.setdefault("max_completion_tokens", 1000)
    op = QwenChatOperator(task_id="chat", prompt="hi", deferrable=True, **params)
    return PausedTask(op), client


# -- qwen_cost: the same as in the worker ------------------------------------------------------


@pytest.mark.parametrize("budget", [None, "1"])
def test_an_estimated_answer_leaves_the_same_unsettled_as_in_the_worker(mocker, budget):
    """Without a budget nothing is held for a call in the worker, so nothing stays unsettled after an
    estimated answer; deferred, the call's worst case was kept unsettled after the resume."""
    params = {"max_cost_usd": budget} if budget else {}
    worker_client = with_client(mocker, QwenChatOperator, no_usage_answer())
    worker = PausedTask(QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=1000, **params))
    context = worker.context()
    assert worker.fresh(context).execute(context) == "the answer"
    assert worker_client.requests
    expected = worker.cost

    task, client = _chat(mocker, no_usage_answer(), **params)
    deferred = task.defer()
    assert task.resume(fire(deferred.trigger, mocker, client)) == "the answer"
    got = task.cost
    assert got["estimated"] is True
    assert got["usd_unsettled"] == expected["usd_unsettled"]
    assert [e["unsettled_usd"] for e in got["estimates"]] == [
        e["unsettled_usd"] for e in expected["estimates"]
    ]
    assert (Decimal(got["usd_unsettled"]) > 0) is bool(budget)


# -- events of a wrong shape --------------------------------------------------------------------


def _tampered(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    return {**event, **changes}


@pytest.mark.parametrize(
    "changes",
    [
        {"completion": {"completion": {"choices": "not a list"}, "call": None}},
        {"completion": {"no completion": True}},
        {"completion": {"completion": {}, "call": {"unconfirmed_tries": "many"}}},
        {"status": "error", "error": {"type": "ServerError", "charge": {"unconfirmed_tries": "x"}}},
        {"status": "error", "error": {"type": "StreamError", "charge": {"partial": {"choices": 5}}}},
    ],
)
def test_an_event_that_cannot_be_read_counts_the_call_and_says_so(mocker, changes):
    """The call was sent and may have been paid: it is counted (estimated, by its client request id)
    and the task fails with a QwenError naming the problem, not a bare pydantic or int() error."""
    task, client = _chat(mocker, answer("the answer"))
    deferred = task.defer()
    rid = deferred.trigger.client_request_id
    event = _tampered(fire(deferred.trigger, mocker, client), **changes)
    with pytest.raises(QwenError, match=r"the deferred call's event cannot be read") as raised:
        task.resume(event)
    assert raised.value.client_request_id == rid
    cost = task.cost
    assert cost["requests"] == 1
    assert cost["estimated"] is True
    assert [(e["kind"], e["client_request_id"]) for e in cost["estimates"]] == [("unconfirmed", rid)]


@pytest.mark.parametrize("reported", [True, False])
def test_an_answer_without_its_call_info_is_not_counted_as_free(mocker, reported):
    """``call: null`` in the event: the body's own cost is used, else it is estimated; never an exact 0."""
    task, client = _chat(mocker, answer("the answer", usd=Decimal("0.002")))
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    event["completion"]["call"] = None
    if not reported:
        del event["completion"]["completion"]["meta"]
    assert task.resume(event) == "the answer"
    cost = task.cost
    if reported:
        assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (1, "0.002", False)
    else:
        assert (cost["requests"], cost["estimated"]) == (1, True)
        assert Decimal(cost["usd_spent"]) > 0  # priced from its usage


# -- the send count: garbage markers and resend counts ------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    ["not json", "[]", "null", '{"sends": -3}', '{"sends": true}', '{"sends": "7"}', '{"sends": 1e12}'],
)
def test_a_garbage_marker_counts_one_earlier_send_and_is_rewritten(mocker, tmp_path, garbage):
    """The marker exists, so an earlier run of the trigger reached its send: one, not a number read
    from garbage (1e12 would hang the resume counting them, then bill them all)."""
    from pathlib import Path

    task, client = _chat(mocker, answer("the answer"))
    deferred = task.defer()
    marker = Path(deferred.trigger.marker.removeprefix("file://"))
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(garbage)
    event = fire(deferred.trigger, mocker, client)
    assert event["resent"] == 1
    assert json.loads(marker.read_text()) == {"sends": 2}


def test_a_huge_resend_count_in_the_event_is_capped(mocker):
    from airflow_provider_qwen.calls import MAX_RESENDS

    task, client = _chat(mocker, answer("the answer"))
    deferred = task.defer()
    event = {**fire(deferred.trigger, mocker, client), "resent": 10**12}
    assert task.resume(event) == "the answer"
    assert task.cost["requests"] == 1 + MAX_RESENDS


def test_a_failed_event_with_resends_is_one_estimate_of_the_call(mocker):
    """One entry per client request id: reconciliation gives each entry the call's whole service
    figure, so two entries of one call would count it twice."""
    task, client = _chat(mocker, answer("the answer"))
    deferred = task.defer()
    rid = deferred.trigger.client_request_id
    event = {**fire(deferred.trigger, mocker, client), "status": "failed", "resent": 2, "message": "boom"}
    event.pop("completion")
    with pytest.raises(QwenError, match="boom"):
        task.resume(event)
    cost = task.cost
    assert cost["requests"] == 3
    assert [(e["kind"], e["client_request_id"]) for e in cost["estimates"]] == [("unconfirmed", rid)]


# -- the resume: a request that cannot be rebuilt -----------------------------------------------


def test_a_prompt_that_renders_differently_on_resume_keeps_the_paid_answer(mocker):
    """The resumed task renders its templates again (a param, an upstream XCom cleared meanwhile): a
    prompt that now has no value must not drop the answer the triggerer paid for from qwen_cost
    (it did, with "nothing was sent"); the answer came from the request that was sent."""
    client = with_client(mocker, QwenChatOperator, answer("the answer"))
    op = QwenChatOperator(
        task_id="chat", prompt="{{ params.topic }}", deferrable=True, max_completion_tokens=50
    )
    task = PausedTask(op, params={"topic": "tides"})
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    assert client.requests[0].messages[0].content == "tides"
    task.params = {"topic": None}
    assert task.resume(event) == "the answer"
    assert (task.cost["requests"], task.cost["usd_spent"], task.cost["estimated"]) == (1, "0.001", False)


def test_a_tool_call_state_that_cannot_be_read_still_records_the_call(mocker):
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenToolCallOperator

    class Ticket(BaseModel):
        title: str

    client = with_client(
        mocker, QwenToolCallOperator, answer(None, tool_calls=[("c1", "Ticket", {"title": "fire"})])
    )
    op = QwenToolCallOperator(task_id="chat", prompt="hi", output_model=Ticket, deferrable=True)
    task = PausedTask(op)
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    event["resume"]["state"] = {"turn": "x"}
    with pytest.raises(KeyError, match="messages"):
        task.resume(event)
    assert (task.cost["requests"], task.cost["usd_spent"]) == (1, "0.001")


# -- the triggerer's own failures ---------------------------------------------------------------


class _UnreadableConnectionHook(TriggerHook):
    """The triggerer cannot read the connection (another secrets backend, a missing variable)."""

    @asynccontextmanager
    async def async_client(self, **_: Any):
        raise RuntimeError("The conn_id `qwen_default` isn't defined")
        yield  # pragma: no cover


class _ClosingFailsHook(TriggerHook):
    @asynccontextmanager
    async def async_client(self, **_: Any):
        yield TriggerClient(self.client)
        raise OSError("closing the pool failed")


def test_a_trigger_that_fails_before_sending_counts_no_request(mocker):
    task, client = _chat(mocker, answer("unused"))
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client, hook=_UnreadableConnectionHook(client))
    assert event["status"] == "failed"
    assert event["sent"] is False
    with pytest.raises(QwenError, match="isn't defined"):
        task.resume(event)
    assert client.requests == []
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"], cost["estimates"]) == (0, "0", False, [])


def test_a_trigger_that_fails_after_sending_counts_the_call(mocker):
    task, client = _chat(mocker, RuntimeError("the parser broke"))
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client)
    assert (event["status"], event["sent"]) == ("failed", True)
    with pytest.raises(QwenError, match="the parser broke"):
        task.resume(event)
    assert (task.cost["requests"], task.cost["estimated"]) == (1, True)


def test_an_answer_is_kept_when_closing_the_client_fails(mocker):
    task, client = _chat(mocker, answer("the answer"))
    deferred = task.defer()
    event = fire(deferred.trigger, mocker, client, hook=_ClosingFailsHook(client))
    assert event["status"] == "success"
    assert task.resume(event) == "the answer"
    assert (task.cost["requests"], task.cost["estimated"]) == (1, False)


# -- bad input: refused before anything is paid -------------------------------------------------


@pytest.mark.parametrize(
    ("extra_body", "where"),
    [
        ({"x_rate": Decimal("0.5")}, "extra_body.x_rate=Decimal('0.5')"),
        ({"x_when": __import__("datetime").date(2025, 1, 1)}, "extra_body.x_when=datetime.date(2025, 1, 1)"),
        ({"x_weights": [1.0, float("nan")]}, "extra_body.x_weights[1]=nan"),
        ({"x_cfg": {"limit": float("inf")}}, "extra_body.x_cfg.limit=inf"),
        ({"x_tags": {"a", "b"}}, "extra_body.x_tags="),
        ({"x_raw": b"bytes"}, "extra_body.x_raw=b'bytes'"),
        ({"x_cfg": {1: "a"}}, "extra_body.x_cfg"),
    ],
)
def test_an_extra_body_that_is_not_json_is_refused_when_the_dag_is_parsed(extra_body, where):
    """A Decimal or a date in extra_body passed every check, then failed in json.dumps at the send
    (a bare TypeError, after the budget was reserved, counted as a possibly paid request; deferred, in
    the triggerer); NaN was sent as invalid JSON."""
    from airflow_provider_qwen.client.errors import InvalidRequestError
    from airflow_provider_qwen.client.request import build_request

    with pytest.raises(InvalidRequestError, match=r"cannot be sent as JSON; allowed:") as raised:
        QwenChatOperator(task_id="chat", prompt="hi", extra_body=extra_body, deferrable=True)
    assert where in str(raised.value)
    with pytest.raises(InvalidRequestError, match=r"cannot be sent as JSON"):
        build_request("hi", extra_body=extra_body)


def test_a_json_extra_body_still_goes_through_the_trigger_unchanged(mocker):
    extra = {"x_opts": {"depth": 2, "tags": ["a", None, True], "ratio": 0.25}}
    task, client = _chat(mocker, answer("the answer"), extra_body=extra)
    deferred = task.defer()
    assert task.resume(fire(deferred.trigger, mocker, client)) == "the answer"
    assert client.bodies[0]["x_opts"] == extra["x_opts"]


# -- review: odd answers from the person or the HITL machinery ----------------------------------


def _reviewed(mocker, operator_cls=QwenChatOperator, reply=None, **params):
    """A deferred call whose answer parks for review: (task, parked)."""
    from airflow.sdk.exceptions import TaskAwaitingInput

    client = with_client(mocker, operator_cls, reply or answer("the draft"))
    params.setdefault("prompt", "hi")
    task = PausedTask(operator_cls(task_id="chat", deferrable=True, require_approval=True, **params))
    deferred = task.defer()
    upsert = mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    with pytest.raises(TaskAwaitingInput) as parked:
        task.resume(fire(deferred.trigger, mocker, client))
    assert upsert.called
    assert task.cost["requests"] == 1
    return task, parked.value


def _answer_review(task, parked, event):
    kwargs = deserialize(serialize(parked.kwargs or {}))
    return task.resume(event, method=parked.method_name, **kwargs)


@pytest.mark.parametrize("output", [None, 5, ["a"], {"content": "x"}])
def test_an_edit_without_text_says_so_rather_than_rejected(mocker, output):
    """The person chose Edit but the output field holds no text (a REST client sent a number): the
    task failed with "rejected ... (the answer ['Edit'] approves nothing)"."""
    from airflow.sdk.exceptions import AirflowFailException

    task, parked = _reviewed(mocker)
    params = {} if output is None else {"output": output}
    event = {"chosen_options": ["Edit"], "params_input": params, "responded_by_user": {"name": "ana"}}
    with pytest.raises(AirflowFailException) as raised:
        _answer_review(task, parked, event)
    message = str(raised.value)
    assert "Edit was chosen by ana" in message
    assert "no text" in message
    assert "rejected" not in message
    assert task.cost["requests"] == 1  # the call counted once over both pauses


def test_a_hitl_error_event_is_not_reported_as_a_rejection(mocker):
    from airflow.sdk.exceptions import AirflowFailException

    task, parked = _reviewed(mocker)
    event = {"error": "the response could not be recorded", "error_type": "unknown"}
    with pytest.raises(AirflowFailException, match=r"the review failed: the response could not be recorded"):
        _answer_review(task, parked, event)


def test_an_edited_reasoning_must_be_text(mocker):
    from airflow.sdk.exceptions import AirflowFailException

    task, parked = _reviewed(mocker, reply=answer("the draft", reasoning="why"), include_reasoning=True)
    assert parked.kwargs["value"] == {"content": "the draft", "reasoning_content": "why"}
    edit = {
        "chosen_options": ["Edit"],
        "params_input": {"output": '{"content": "x", "reasoning_content": 5}'},
    }
    with pytest.raises(AirflowFailException, match=r"reasoning_content"):
        _answer_review(task, parked, edit)
    edit["params_input"]["output"] = '{"content": "x", "reasoning_content": null}'
    assert _answer_review(task, parked, edit) == {"content": "x", "reasoning_content": None}


# -- the trigger timed out or failed: no event, the call may still have been paid ----------------


@pytest.mark.parametrize("budget", [None, "1"])
@pytest.mark.parametrize("reason", ["timeout", "failed"])
def test_a_call_whose_trigger_timed_out_counts_as_a_possibly_paid_try(mocker, budget, reason):
    """``execution_timeout`` over a deferred call (Airflow's trigger timeout) or a trigger that
    crashed: Airflow resumes the task only to fail it. The call was sent and may have been billed; in
    the worker a timeout counts it as one possibly paid request (estimated), deferred the try's
    record said 0 requests, 0 USD, not estimated."""
    from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
    from airflow.sdk.exceptions import TaskDeferralError, TaskDeferralTimeout

    params = {"max_cost_usd": budget} if budget else {}
    task, _ = _chat(mocker, **params)
    deferred = task.defer()
    rid = deferred.trigger.client_request_id
    held = Decimal(deferred.trigger.resume["call"]["held_usd"])
    error = (
        TriggerFailureReason.TRIGGER_TIMEOUT if reason == "timeout" else TriggerFailureReason.TRIGGER_FAILURE
    )
    context = task.context()
    operator = task.fresh(context)
    expected = TaskDeferralTimeout if reason == "timeout" else TaskDeferralError
    with pytest.raises(expected):
        operator.resume_execution(TRIGGER_FAIL_REPR, {"error": error, "traceback": ["boom"]}, context)
    cost = task.cost
    assert cost["requests"] == 1
    assert cost["estimated"] is True
    assert [(e["kind"], e["client_request_id"]) for e in cost["estimates"]] == [("unconfirmed", rid)]
    assert Decimal(cost["usd_spent"]) + Decimal(cost["usd_unsettled"]) == held  # at most its worst case


def test_a_rejection_reason_and_name_are_bounded_and_shown_safely(mocker):
    """A 1 MB reason became a 1 MB exception and log line; a reviewer name with a newline wrote a line
    of its own ("rejected by ana\\nApproved by root"); escapes and bidi overrides went out raw."""
    from airflow.sdk.exceptions import AirflowFailException

    task, parked = _reviewed(mocker)
    event = {
        "chosen_options": ["Reject"],
        "params_input": {"reason": "too vague " + "r" * 1_000_000 + "\x1b[31m\u202e"},
        "responded_by_user": {"name": "ana\nApproved by root"},
    }
    with pytest.raises(AirflowFailException) as raised:
        _answer_review(task, parked, event)
    message = str(raised.value)
    assert len(message) < 2_000
    assert "\n" not in message
    assert "\x1b" not in message
    assert "\u202e" not in message
    assert "rejected by ana Approved by root: too vague rrr" in message


# -- storage that cannot be written: what the try spent before a pause ---------------------------


def test_repairs_over_pauses_are_all_counted_when_the_journal_cannot_be_written(
    mocker, tmp_path, monkeypatch
):
    """Without Airflow's task state store the journal is a folder under [qwen] storage_base; when it
    cannot be written, what the try paid before each pause was lost at the resume: three paid turns
    of a repaired tool call ended as a qwen_cost of one request."""
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenToolCallOperator

    class Ticket(BaseModel):
        title: str
        priority: int

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder would be")
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(blocker / "qwen"))
    client = with_client(
        mocker,
        QwenToolCallOperator,
        answer(None, tool_calls=[("c1", "Ticket", '{"title": 1')]),
        answer(None, tool_calls=[("c2", "Ticket", {"title": "fire", "priority": "high"})]),
        answer(None, tool_calls=[("c3", "Ticket", {"title": "fire", "priority": 1})]),
    )
    task = PausedTask(QwenToolCallOperator(task_id="chat", prompt="hi", output_model=Ticket, deferrable=True))
    task.store = None  # no task state store (Airflow < 3.3)
    original = task.context

    def without_store() -> dict[str, Any]:
        context = original()
        del context["task_state_store"]
        return context

    task.context = without_store  # type: ignore[method-assign]
    deferred = task.defer()
    for _ in range(2):
        with pytest.raises(TaskDeferred) as again:
            task.resume(fire(deferred.trigger, mocker, client))
        deferred = again.value
    assert task.resume(fire(deferred.trigger, mocker, client)) == {"title": "fire", "priority": 1}
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (3, "0.003", False)


@pytest.mark.parametrize("deferrable", [False, True])
def test_a_reviewed_answer_is_counted_when_the_journal_cannot_be_written(
    mocker, tmp_path, monkeypatch, deferrable
):
    """The same for the pause of a review: the approved answer's cost was gone from qwen_cost."""
    from airflow.sdk.exceptions import TaskAwaitingInput

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder would be")
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(blocker / "qwen"))
    client = with_client(mocker, QwenChatOperator, answer("the draft"))
    op = QwenChatOperator(task_id="chat", prompt="hi", deferrable=deferrable, require_approval=True)
    task = PausedTask(op)
    original = task.context

    def without_store() -> dict[str, Any]:
        context = original()
        del context["task_state_store"]
        return context

    task.context = without_store  # type: ignore[method-assign]
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    if deferrable:
        event = fire(task.defer().trigger, mocker, client)
        with pytest.raises(TaskAwaitingInput) as parked:
            task.resume(event)
    else:
        context = task.context()
        with pytest.raises(TaskAwaitingInput) as parked:
            task.fresh(context).execute(context)
    approve = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"name": "ana"}}
    assert _answer_review(task, parked.value, approve) == "the draft"
    assert (task.cost["requests"], task.cost["usd_spent"]) == (1, "0.001")
