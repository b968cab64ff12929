"""OpenLineage events of Qwen tasks on the real deployment, read from the OpenLineage provider's file
transport (``<AIRFLOW_HOME>/openlineage.jsonl``, set in tests/e2e/conftest.py)."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, Deployment
from tests.e2e.test_deployment import task_instances, xcom

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_lineage"


def _events(deployment: Deployment) -> list[dict[str, Any]]:
    """Every event of this DAG's tasks so far (the DAG runs once per test session)."""
    path = deployment.home / "openlineage.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if e.get("job", {}).get("name", "").startswith(f"{DAG_ID}.")]


def _event(events: list[dict[str, Any]], task_id: str, kind: str) -> dict[str, Any]:
    found = [e for e in events if e["eventType"] == kind and e["job"]["name"] == f"{DAG_ID}.{task_id}"]
    assert found, f"no {kind} event of {task_id}: {[(e['eventType'], e['job']['name']) for e in events]}"
    return found[-1]


def test_lineage_events_carry_the_qwen_facet_and_the_batchs_files(deployment: Deployment) -> None:
    emulator = deployment.emulator
    since = len(emulator.requests)
    run = deployment.run_test_dag(DAG_ID)
    assert run["state"] == "failed"  # the refused task fails; the others succeed
    states = {t["task_id"]: t["state"] for t in task_instances(deployment, run)}
    assert states == {"chat": "success", "batch": "success", "refused": "failed"}

    deadline = time.monotonic() + 30  # the listener writes after the task's own end
    while len({e["job"]["name"] for e in _events(deployment) if e["eventType"] != "START"}) < 3:
        assert time.monotonic() < deadline, "the COMPLETE/FAIL events never arrived"
        time.sleep(1.0)
    events = _events(deployment)

    chat = _event(events, "chat", "COMPLETE")["run"]["facets"]["qwen"]
    cost = xcom(deployment, run, "chat", "qwen_cost")
    assert chat["model"] == cost["model"]
    assert (chat["requests"], chat["promptTokens"], chat["completionTokens"], chat["totalTokens"]) == (
        cost["requests"],
        cost["prompt_tokens"],
        cost["completion_tokens"],
        cost["total_tokens"],
    )
    assert (chat["creditsUsed"], chat["usdSpent"], chat["estimated"]) == (
        cost["credits_used"],
        cost["usd_spent"],
        False,
    )
    sent = [r for r in emulator.requests[since:] if r.path.endswith("/chat/completions")]
    chat_request = next(r for r in sent if r.inference_id in chat["inferenceIds"])
    assert chat["inferenceIds"] == [chat_request.inference_id]
    paid = [c for c in emulator.charges if c.client_request_id == chat_request.client_request_id]
    assert Decimal(chat["usdSpent"]) == sum((c.usd for c in paid), Decimal(0))

    batch = _event(events, "batch", "COMPLETE")
    assert [(d["namespace"], d["name"]) for d in batch["inputs"]] == [
        ("file", str(deployment.home / "dags" / "documents"))
    ]
    assert [(d["namespace"], d["name"]) for d in batch["outputs"]] == [
        ("file", str(deployment.home / "lineage-results" / "summaries.jsonl"))
    ]
    batch_cost = xcom(deployment, run, "batch", "qwen_cost")
    assert batch["run"]["facets"]["qwen"]["requests"] == batch_cost["requests"] > 1
    assert len(batch["run"]["facets"]["qwen"]["inferenceIds"]) == batch_cost["requests"]

    refused = _event(events, "refused", "FAIL")["run"]["facets"]["qwen"]
    assert refused["requests"] == 0
    assert refused["usdSpent"] == "0"
    assert API_KEY not in json.dumps(events)
