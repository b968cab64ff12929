"""Deferrable calls and human review on the real deployment (api-server, scheduler, dag-processor,
triggerer): calls wait in the triggerer holding no worker slot, a triggerer restarted mid-call is
survived and both sends are counted, and a person approves, edits or rejects an answer via REST."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from airflow_provider_qwen.testing.faults import Fault
from tests.e2e.conftest import Deployment
from tests.e2e.test_deployment import task_instances, xcom

pytestmark = pytest.mark.e2e

PARALLELISM = 4  # AIRFLOW__CORE__PARALLELISM of the deployment


@pytest.fixture
def slow_emulator(deployment: Deployment) -> Iterator[Any]:
    emulator = deployment.emulator
    before = emulator.latency
    emulator.latency = 2.0
    try:
        yield emulator
    finally:
        emulator.latency = before


def _chats(deployment: Deployment, since: int = 0) -> list[Any]:
    return [r for r in deployment.emulator.requests[since:] if r.path.endswith("/chat/completions")]


def test_fifty_deferred_calls_wait_in_the_triggerer_holding_no_worker_slot(
    deployment: Deployment, slow_emulator: Any
) -> None:
    since = len(deployment.emulator.requests)
    started = time.monotonic()
    run = deployment.run_test_dag("qwen_deferrable_many", timeout=600)
    elapsed = time.monotonic() - started

    assert run["state"] == "success", task_instances(deployment, run)
    chats = _chats(deployment, since)
    assert len(chats) == 50
    spans = sorted((r.time, r.time + 2.0) for r in chats)
    peak = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
    sent_over = spans[-1][0] - spans[0][0]  # the pace at which the worker starts the 50 tasks
    print(
        f"\n50 deferred calls at 2 s: run {elapsed:.1f} s, sent over {sent_over:.1f} s, "
        f"peak {peak} in flight (parallelism {PARALLELISM})"
    )
    assert peak > PARALLELISM  # held worker slots would cap this at the parallelism
    for index in (0, 17, 49):
        cost = xcom(deployment, run, "chat", "qwen_cost", map_index=index)
        assert cost["requests"] == 1
        assert cost["estimated"] is False
        assert cost["estimates"] == []


def test_a_triggerer_restarted_mid_call_is_survived_and_both_sends_counted(deployment: Deployment) -> None:
    emulator = deployment.emulator
    since = len(emulator.requests)
    emulator.add_faults(Fault.latency(60.0))  # the first send is still in flight when the triggerer stops
    run_id = deployment.trigger_test_dag("qwen_deferrable_restart")
    deadline = time.monotonic() + 120
    while not _chats(deployment, since):
        assert time.monotonic() < deadline, "the deferred call never reached the emulator"
        deployment.check_alive()
        time.sleep(0.5)

    deployment.restart("triggerer")
    run = deployment.wait_for_run("qwen_deferrable_restart", run_id, timeout=240)

    assert run["state"] == "success", task_instances(deployment, run)
    first, *rest = _chats(deployment, since)
    assert rest, "the call was not sent again after the restart"
    assert {r.client_request_id for r in rest} == {first.client_request_id}  # the same id for both
    cost = xcom(deployment, run, "chat", "qwen_cost")
    assert cost["requests"] == 1 + len(rest)
    assert cost["estimated"] is True  # the first send may have been paid: estimated until reconciled
    assert [e["kind"] for e in cost["estimates"]] == ["unconfirmed"]
    assert cost["estimates"][0]["client_request_id"] == first.client_request_id
    paid = [c for c in emulator.charges if c.client_request_id == first.client_request_id]
    assert Decimal(cost["usd_spent"]) >= sum((c.usd for c in paid), Decimal(0))


def _review(deployment: Deployment, run_id: str, option: str, **params: str) -> dict[str, Any]:
    path = f"/dags/qwen_review/dagRuns/{run_id}/taskInstances/draft"
    deadline = time.monotonic() + 180
    while (state := deployment.get(path)["state"]) != "awaiting_input":
        assert state not in ("success", "failed"), state
        assert time.monotonic() < deadline, f"never asked for a review: {state}"
        deployment.check_alive()
        time.sleep(1.0)
    detail = deployment.get(f"{path}/-1/hitlDetails")
    deployment.wait_until_the_scheduler_saw_the_park(run_id)
    assert deployment.api is not None
    response = deployment.api.patch(
        f"/api/v2{path}/-1/hitlDetails", json={"chosen_options": [option], "params_input": params}
    )
    assert response.status_code == 200, response.text
    return detail


@pytest.mark.parametrize("option", ["Approve", "Edit", "Reject"])
def test_a_person_reviews_a_deferred_answer_through_the_rest_api(deployment: Deployment, option: str) -> None:
    since = len(deployment.emulator.requests)
    run_id = deployment.trigger_test_dag("qwen_review")
    params = {"output": "my own line", "reason": ""} if option == "Edit" else {"reason": "off brand"}
    detail = _review(deployment, run_id, option, **params)
    run = deployment.wait_for_run("qwen_review", run_id, timeout=180)

    (chat,) = _chats(deployment, since)
    answer = chat.reply["content"]
    assert detail["options"] == ["Approve", "Edit", "Reject"]
    assert answer in detail["body"]
    (draft,) = task_instances(deployment, run)
    cost = xcom(deployment, run, "draft", "qwen_cost")
    assert cost["requests"] == 1  # reviewed after the call: never sent again
    if option == "Reject":
        assert run["state"] == "failed"
        assert draft["state"] == "failed"
        assert draft["try_number"] == 1  # no retry of a rejected answer
        return
    assert run["state"] == "success", draft
    expected = answer if option == "Approve" else "my own line"
    assert xcom(deployment, run, "draft", "return_value") == expected
