"""Hostile pass over how issue 16's features meet (2/2): decorated tasks that defer and wait for a
review (the returned prompt stays data), a tool call repaired over deferrals and then reviewed, and a
hostile server's odd bodies through the real client, in the worker and in the triggerer alike; the
lineage facet of each against its ``qwen_cost``."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import TaskAwaitingInput, TaskDeferred
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_qwen.operators import QwenChatOperator
from tests.support import deferral_fakes
from tests.support.deferral_fakes import PausedTask, approve, decorated_task, fire, run_trigger
from tests.support.operator_fakes import (
    FakeClient,
    answer,
    with_client,
)

pytestmark = pytest.mark.usefixtures("deferral_storage")
deferral_storage = deferral_fakes.deferral_storage


# -- decorators: deferred, then reviewed; the returned prompt is data throughout --------------------


def _echo(request: Any) -> Any:
    """The emulator's echo: the answer is the last message's text as it reached the service."""
    return answer(f"you said: {request.to_body()['messages'][-1]['content']}")


def _facet(operator: Any, ti: Any) -> Any:
    return operator.get_openlineage_facets_on_complete(ti).run_facets["qwen"]


@pytest.mark.parametrize(
    "returned",
    ["{{ 7*7 }}", [{"role": "user", "content": "{{ 7*7 }} {% raw %}"}]],
    ids=["prompt", "messages"],
)
def test_a_deferred_reviewed_decorated_task_sends_and_keeps_the_returned_text_verbatim(
    mocker, tmp_path, returned
):
    client = with_client(mocker, QwenChatOperator, _echo)
    upsert = mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    operator, calls = decorated_task(tmp_path, "qwen", returned, deferrable=True, require_approval=True)
    task = PausedTask(operator)
    deferred = task.defer()
    text = returned if isinstance(returned, str) else returned[0]["content"]
    assert deferred.trigger.request["messages"][-1]["content"] == text  # sent as returned
    event = fire(deferred.trigger, mocker, client)

    with pytest.raises(TaskAwaitingInput) as parked:
        task.resume_execution(deferred.method_name, {**(deferred.kwargs or {}), "event": event})
    assert parked.value.kwargs["value"] == f"you said: {text}"
    assert upsert.call_args.kwargs["params"]["output"]["value"] == f"you said: {text}"
    assert task.cost["requests"] == 1

    context = task.context()
    resumed = task.fresh(context)
    kwargs = deserialize(serialize({**parked.value.kwargs, "event": approve()}))
    assert resumed.resume_execution(parked.value.method_name, kwargs, context) == f"you said: {text}"
    assert calls == [1]  # the function ran once, before the first pause
    assert len(client.requests) == 1
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"]) == (1, "0.001")
    facet = _facet(resumed, task.ti)
    assert (facet.requests, facet.usdSpent, facet.taskRequests) == (1, "0.001", 1)


def test_a_reviewed_tasks_facet_names_or_counts_the_paid_answers_inference_id(mocker, tmp_path):
    with_client(mocker, QwenChatOperator, answer("draft"))
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100, require_approval=True)
    )
    with pytest.raises(TaskAwaitingInput) as parked:
        task.execute()
    context = task.context()
    resumed = task.fresh(context)
    kwargs = deserialize(serialize({**parked.value.kwargs, "event": approve()}))
    assert resumed.resume_execution(parked.value.method_name, kwargs, context) == "draft"
    facet = _facet(resumed, task.ti)
    assert facet.requests == 1
    assert facet.inferenceIds == ["inf-1"] or facet.inferenceIdsNotListed >= 1


# -- a tool call repaired over two deferrals, then reviewed ------------------------------------------


def _ticket_task(mocker: Any) -> tuple[PausedTask, FakeClient]:
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenToolCallOperator

    class Ticket(BaseModel):
        title: str
        priority: int

    client = with_client(
        mocker,
        QwenToolCallOperator,
        answer(None, tool_calls=[("c1", "Ticket", {"title": "fire", "priority": "high"})]),
        answer(None, tool_calls=[("c2", "Ticket", {"title": "fire", "priority": 1})]),
    )
    op = QwenToolCallOperator(
        task_id="chat",
        prompt="Ticket of {{ run_id }}: printer on fire",
        output_model=Ticket,
        max_completion_tokens=300,
        deferrable=True,
        require_approval=True,
    )
    return PausedTask(op), client


def _through_deferrals(task: PausedTask, mocker: Any, client: FakeClient) -> TaskAwaitingInput:
    pause: Any = task.defer()
    for _ in range(3):
        if isinstance(pause, TaskAwaitingInput):
            return pause
        event = fire(pause.trigger, mocker, client)
        try:
            task.resume_execution(pause.method_name, {**(pause.kwargs or {}), "event": event})
        except (TaskDeferred, TaskAwaitingInput) as again:
            pause = again
    raise AssertionError("the task never reached its review")


@pytest.mark.parametrize("answer_", ["approve", "edit", "bad edit"])
def test_a_repaired_deferred_tool_call_is_reviewed_with_every_turn_counted_once(mocker, answer_):
    from airflow.sdk.exceptions import AirflowFailException

    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    task, client = _ticket_task(mocker)
    parked = _through_deferrals(task, mocker, client)
    assert parked.kwargs["value"] == {"title": "fire", "priority": 1}
    assert task.cost["requests"] == 2
    event = {
        "approve": approve(),
        "edit": {**approve(output='{"title": "{{ 7*7 }}", "priority": 2}'), "chosen_options": ["Edit"]},
        "bad edit": {**approve(output='{"title": "x", "priority": "p"}'), "chosen_options": ["Edit"]},
    }[answer_]
    context = task.context()
    resumed = task.fresh(context)
    kwargs = deserialize(serialize({**parked.kwargs, "event": event}))
    if answer_ == "bad edit":
        with pytest.raises(AirflowFailException, match="not valid"):
            resumed.resume_execution(parked.method_name, kwargs, context)
    else:
        expected = {"title": "{{ 7*7 }}", "priority": 2} if answer_ == "edit" else parked.kwargs["value"]
        assert resumed.resume_execution(parked.method_name, kwargs, context) == expected
    assert len(client.requests) == 2
    cost = task.cost
    assert (cost["requests"], cost["usd_spent"], cost["estimated"]) == (2, "0.002", False)
    facet = (
        resumed.get_openlineage_facets_on_failure(task.ti)
        if answer_ == "bad edit"
        else resumed.get_openlineage_facets_on_complete(task.ti)
    ).run_facets["qwen"]
    assert (facet.requests, facet.usdSpent, facet.estimated) == (2, "0.002", False)
    assert (facet.taskRequests, facet.taskUsdSpent) == (2, "0.002")


# -- a hostile server's odd bodies, through the real client: worker and triggerer alike -----------------


def _odd(name: str) -> Any:
    from tests.support.client_helpers import KEY, completion, ok

    usage = {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30}
    return {
        "float usd": lambda: ok(completion("a", meta={"usage": {"credits_used": 260, "usd_spent": 0.00013}})),
        "string credits": lambda: ok(
            completion("a", meta={"usage": {"credits_used": "260", "usd_spent": "0.000130000000000000001"}})
        ),
        "no meta": lambda: ok(completion("a", meta=None)),
        "no usage, no meta": lambda: ok(completion("a", usage=None, meta=None)),
        "negative cost": lambda: ok(completion("a", meta={"usage": {"credits_used": -5, "usd_spent": "-1"}})),
        "reasoning details": lambda: ok(
            completion(
                "a",
                usage={**usage, "completion_tokens_details": {"reasoning_tokens": 7}},
                choices=[
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "a", "reasoning_content": "hmm"},
                        "finish_reason": "stop",
                    }
                ],
            )
        ),
        "template answer": lambda: ok(completion("{{ 7*7 }} {% raw %}")),
        "key in inference id": lambda: ok(completion("a"), inference_id=f"Bearer {KEY}"),
        "key-shaped inference id": lambda: ok(completion("a"), inference_id=KEY),
        "extra fields": lambda: ok(
            {**completion("a"), "unknown": {"nested": [1, 2]}, "system_fingerprint": 5}
        ),
        "truncated": lambda: ok(
            completion(
                "a",
                choices=[
                    {"index": 0, "message": {"role": "assistant", "content": "a"}, "finish_reason": "length"}
                ],
            )
        ),
    }[name]()


ODD = [
    "float usd",
    "string credits",
    "no meta",
    "no usage, no meta",
    "negative cost",
    "reasoning details",
    "template answer",
    "key in inference id",
    "key-shaped inference id",
    "extra fields",
    "truncated",
]


@pytest.fixture
def _real_connection(monkeypatch):
    import json

    from tests.support.client_helpers import BASE_URL, KEY

    conn = {"conn_type": "qwen", "host": BASE_URL, "password": KEY, "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", json.dumps(conn))


def _run_odd(deferrable: bool) -> tuple[tuple[str, Any], dict[str, Any], Any]:
    """The chat in the worker or deferred (the trigger on the real client): its outcome (the result,
    or the class of what it raised), its qwen_cost and its COMPLETE facet."""
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100, deferrable=deferrable)
    )
    if deferrable:
        deferred = task.defer()
        event = run_trigger(deferred.trigger)
        context = task.context()
        operator = task.fresh(context)
        kwargs = deserialize(serialize({**(deferred.kwargs or {}), "event": event}))
        method = deferred.method_name
    else:
        context = task.context()
        operator = task.fresh(context)
    try:
        if deferrable:
            outcome: tuple[str, Any] = ("ok", operator.resume_execution(method, kwargs, context))
        else:
            outcome = ("ok", operator.execute(context))
    except Exception as exc:  # compared by class across the two paths
        outcome = (type(exc).__name__, None)
    facet = operator.get_openlineage_facets_on_complete(task.ti).run_facets["qwen"]
    return outcome, task.cost, facet


@pytest.mark.parametrize("name", ODD)
@pytest.mark.usefixtures("_real_connection")
def test_an_odd_200_gives_the_same_result_qwen_cost_and_facet_deferred_as_in_the_worker(api, caplog, name):
    import logging

    from tests.support.client_helpers import CHAT_URL, KEY
    from tests.support.cost_fakes import COST_FIELDS

    caplog.set_level(logging.DEBUG)
    api.post(CHAT_URL).mock(side_effect=lambda request: _odd(name))
    (w_out, w_cost, w_facet), (d_out, d_cost, d_facet) = _run_odd(False), _run_odd(True)
    assert d_out == w_out
    assert {k: d_cost[k] for k in COST_FIELDS} == {k: w_cost[k] for k in COST_FIELDS}
    assert [e["kind"] for e in d_cost["estimates"]] == [e["kind"] for e in w_cost["estimates"]]
    for field in (
        "requests",
        "usdSpent",
        "usdUnsettled",
        "estimated",
        "inferenceIds",
        "inferenceIdsNotListed",
    ):
        assert getattr(d_facet, field) == getattr(w_facet, field), field
    assert KEY not in repr(d_facet) + repr(d_cost) + repr(d_out) + caplog.text
    if name == "template answer":
        assert d_out == ("ok", "{{ 7*7 }} {% raw %}")


@pytest.mark.parametrize("name", ["key in inference id", "key-shaped inference id", "401 with the key as id"])
@pytest.mark.usefixtures("_real_connection")
def test_a_key_echoed_in_the_inference_id_stays_out_of_the_trigger_event(api, name):
    import json

    from tests.support.client_helpers import CHAT_URL, KEY, status

    if name.startswith("401"):
        api.post(CHAT_URL).mock(
            return_value=status(401, {"error": {"message": "bad key"}}, x_inference_id=KEY)
        )
    else:
        api.post(CHAT_URL).mock(side_effect=lambda request: _odd(name))
    task = PausedTask(
        QwenChatOperator(task_id="chat", prompt="hi", max_completion_tokens=100, deferrable=True)
    )
    deferred = task.defer()
    event = run_trigger(deferred.trigger)
    assert event["status"] == ("error" if name.startswith("401") else "success")
    assert KEY not in json.dumps(event, default=str)  # what becomes next_kwargs["event"]
