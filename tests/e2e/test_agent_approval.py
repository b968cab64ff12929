"""QwenAgentOperator's approval on a real deployment: the task waits in ``awaiting_input`` (no
worker slot held), a person answers through the REST API, the task resumes and the model hears it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_deployment import task_instances, xcom

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_agent_approval"


def _wait_for_approval(deployment: Deployment, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/agent"
    deadline = time.monotonic() + timeout
    while True:
        ti = deployment.get(path)
        if ti["state"] == "awaiting_input":
            return deployment.get(f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/agent/-1/hitlDetails")
        assert ti["state"] not in ("success", "failed", "upstream_failed"), ti
        deployment.check_alive()
        assert time.monotonic() < deadline, f"the agent never asked for approval: {ti['state']}"
        time.sleep(1.0)


def _answer(deployment: Deployment, run_id: str, option: str, reason: str) -> None:
    assert deployment.api is not None
    response = deployment.api.patch(
        f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/agent/-1/hitlDetails",
        json={"chosen_options": [option], "params_input": {"reason": reason}},
    )
    assert response.status_code == 200, response.text


def _chats(deployment: Deployment) -> list[dict[str, Any]]:
    return [r.body for r in deployment.emulator.requests if r.path.endswith("/chat/completions")]


def _published(deployment: Deployment) -> list[str]:
    ran = Path(deployment.home) / "published.txt"
    return ran.read_text().splitlines() if ran.exists() else []


@pytest.mark.parametrize("option", ["Approve", "Reject"])
def test_a_person_approves_or_rejects_a_tool_call_through_the_rest_api(
    deployment: Deployment, option: str
) -> None:
    before = _published(deployment)
    run_id = deployment.trigger_test_dag(DAG_ID)

    detail = _wait_for_approval(deployment, run_id)
    assert detail["options"] == ["Approve", "Reject"]
    assert "publish_report" in detail["body"]
    assert "channel" in detail["body"]
    assert _published(deployment) == before  # not run before the decision
    chats_before = _chats(deployment)
    deployment.wait_until_the_scheduler_saw_the_park(run_id)

    _answer(deployment, run_id, option, reason="" if option == "Approve" else "not this week")
    run = deployment.wait_for_run(DAG_ID, run_id, timeout=120)

    assert run["state"] == "success", task_instances(deployment, run)
    published = _published(deployment)[len(before) :]
    assert len(published) == (1 if option == "Approve" else 0)
    summary = xcom(deployment, run, "agent", "qwen_agent")
    outcomes = [c["outcome"] for t in summary["per_turn"] for c in t["tool_calls"]]
    assert outcomes == (["ok"] if option == "Approve" else ["rejected"])
    cost = xcom(deployment, run, "agent", "qwen_cost")
    assert cost["requests"] == summary["turns"] == 2  # the turn before the pause is not sent again
    assert cost["try_number"] == 1
    last = _chats(deployment)[len(chats_before) :]
    assert len(last) == 1  # after the decision: only the final turn was sent
    tool_answer = next(m for m in last[0]["messages"] if m["role"] == "tool")["content"]
    assert ("published to" in tool_answer) if option == "Approve" else ("not this week" in tool_answer)
