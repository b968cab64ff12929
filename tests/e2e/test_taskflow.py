"""The Qwen TaskFlow decorators on a real deployment (tests/e2e/dags/qwen_taskflow.py): the DAG
processor finds ``@task.qwen`` through the provider info, the worker runs the functions, the
triggerer makes the deferred call, and what the functions returned reaches the API as written."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_deployment import COST_FIELDS, KEY_FRAGMENTS, task_instances, xcom

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_taskflow"
MARKER = "qwen_taskflow e2e"
VERBATIM = f"{MARKER}: repeat {{{{ 7*7 }}}} and {{% raw %}} as written"


def _task_log(deployment: Deployment, run: dict[str, Any], ti: dict[str, Any]) -> str:
    assert deployment.api is not None
    path = (
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{ti['task_id']}"
        f"/logs/{ti['try_number']}"
    )
    response = deployment.api.get(
        path,
        params={"map_index": ti["map_index"], "full_content": True},
        headers={"Accept": "application/json"},
    )
    assert response.status_code == 200, response.text[:300]
    return response.text


def test_taskflow_decorators_run_on_the_deployment_and_send_what_the_functions_returned(
    deployment: Deployment,
) -> None:
    emulator = deployment.emulator
    seen = len(emulator.requests)
    run = deployment.run_test_dag(DAG_ID)

    tis = task_instances(deployment, run)
    states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in tis}
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}, states
    qwen_tis = [t for t in tis if t["task_id"] != "topics"]
    assert {t["operator"] for t in qwen_tis} == {"QwenChatDecoratedOperator", "QwenToolCallDecoratedOperator"}
    assert {t["operator_name"] for t in qwen_tis} == {"@task.qwen", "@task.qwen_tool_call"}

    ours = [
        r.body
        for r in emulator.requests[seen:]
        if r.path.endswith("/chat/completions") and MARKER in str(r.body.get("messages"))
    ]
    texts = [body["messages"][-1]["content"] for body in ours]
    assert len(ours) == 5  # verbatim, two mapped, deferred, extract
    assert VERBATIM in texts  # "{{ 7*7 }}" arrived as written, not as 49
    assert f"Explain {MARKER}: tides {{{{ ds }}}}" in texts  # an upstream's output mapped in is data
    deferred = [t for t in texts if t.startswith(f"{MARKER}: deferred {{{{ 7*7 }}}} ")]
    assert len(deferred) == 1
    assert any("Login is down {{ 7*7 }}" in t for t in texts)

    assert len(qwen_tis) == 5
    for ti in qwen_tis:
        label = f"{ti['task_id']}[{ti['map_index']}]"
        result = xcom(deployment, run, ti["task_id"], "return_value", ti["map_index"])
        cost = xcom(deployment, run, ti["task_id"], "qwen_cost", ti["map_index"])
        assert result, f"{label} returned nothing"
        assert set(cost) >= COST_FIELDS, f"{label}: {cost}"
        assert cost["requests"] == 1, f"{label}: {cost}"
        assert isinstance(cost["credits_used"], int)
        assert Decimal(cost["usd_spent"]) > 0
        assert cost["try_number"] == ti["try_number"]
        if ti["task_id"] == "extract":
            assert isinstance(result["title"], str)
            assert isinstance(result["priority"], int)
        else:
            assert isinstance(result, str)
    assert sorted(t["map_index"] for t in qwen_tis if t["task_id"] == "ask") == [0, 1]

    for ti in tis:
        log = _task_log(deployment, run, ti)
        for fragment in KEY_FRAGMENTS:
            assert fragment not in log, f"key in the log of {ti['task_id']}[{ti['map_index']}]"
        if ti["task_id"] == "deferred":
            assert "deferring call" in log
            assert log.count("the function returned a prompt of") == 1  # ran once: the resume kept it
            assert "running it again" not in log


def test_the_taskflow_example_dag_runs_on_the_deployment(deployment: Deployment) -> None:
    """dags/taskflow_summaries.py (not tagged qwen-example, so run here): mapped @task.qwen, then
    @task.qwen_tool_call over the summaries."""
    emulator = deployment.emulator
    seen = len(emulator.requests)
    run = deployment.run_test_dag("qwen_taskflow_summaries")

    tis = task_instances(deployment, run)
    states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in tis}
    assert run["state"] == "success", states
    assert set(states.values()) == {"success"}, states
    bodies = [r.body for r in emulator.requests[seen:] if r.path.endswith("/chat/completions")]
    assert len(bodies) == 4
    assert any("{{ user.name }} and {% raw %}" in str(b["messages"]) for b in bodies)
    summaries = [t for t in tis if t["task_id"] == "summarise"]
    assert len(summaries) == 3
    spent = Decimal(0)
    for ti in [*summaries, *(t for t in tis if t["task_id"] == "digest")]:
        cost = xcom(deployment, run, ti["task_id"], "qwen_cost", ti["map_index"])
        assert cost["requests"] == 1
        spent += Decimal(cost["usd_spent"])
    assert spent > 0
    digest = xcom(deployment, run, "digest", "return_value")
    assert set(digest) == {"headline", "highlights"}
