"""OpenLineage events of Qwen tasks on the real deployment, read from the OpenLineage provider's file
transport (``<AIRFLOW_HOME>/openlineage.jsonl``, set in tests/e2e/conftest.py), checked against each
task's ``qwen_cost`` XCom and what the emulator billed; and QwenRetryPolicy deciding in the worker."""

from __future__ import annotations

import json
import time
from decimal import Decimal
from typing import Any

import jsonschema
import pytest

from tests.e2e.conftest import API_KEY, Deployment
from tests.e2e.test_deployment import task_instances, xcom
from tests.unit.operators.test_lineage import FACET_SCHEMA

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_lineage"
BAD_KEY_CONN_ID = "qwen_lineage_bad_key"
BAD_KEY = "sk-e2e-WRONG-9090"
FINAL = {"chat": "COMPLETE", "batch": "COMPLETE", "truncated": "FAIL", "bad_key": "FAIL", "refused": "FAIL"}


def _events(deployment: Deployment) -> tuple[list[dict[str, Any]], int]:
    """Every event of this DAG's tasks so far, and how many lines could not be read (processes of
    the deployment append to one file: a long event written in parts may interleave with another)."""
    path = deployment.home / "openlineage.jsonl"
    events, broken = [], 0
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            events.append(json.loads(line))
        except ValueError:
            broken += 1
    return [e for e in events if e.get("job", {}).get("name", "").startswith(f"{DAG_ID}.")], broken


def _event(events: list[dict[str, Any]], task_id: str, kind: str) -> dict[str, Any]:
    found = [e for e in events if e["eventType"] == kind and e["job"]["name"] == f"{DAG_ID}.{task_id}"]
    assert found, f"no {kind} event of {task_id}: {[(e['eventType'], e['job']['name']) for e in events]}"
    return found[-1]


def _log(deployment: Deployment, run: dict[str, Any], task_id: str, try_number: int = 1) -> str:
    assert deployment.api is not None
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/logs/{try_number}"
    response = deployment.api.get(path, params={"full_content": True}, headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text[:300]
    return response.text


def _matches_the_cost_record(facet: dict[str, Any], cost: dict[str, Any], label: str) -> None:
    pairs = {
        "model": "model",
        "requests": "requests",
        "promptTokens": "prompt_tokens",
        "completionTokens": "completion_tokens",
        "reasoningTokens": "reasoning_tokens",
        "totalTokens": "total_tokens",
        "creditsUsed": "credits_used",
        "usdSpent": "usd_spent",
        "estimated": "estimated",
        "tryNumber": "try_number",
    }
    assert {f: facet.get(f) for f in pairs} == {f: cost[c] for f, c in pairs.items()}, label
    assert (facet["taskRequests"], facet["taskUsdSpent"]) == (cost["requests"], cost["usd_spent"]), label


def _matches_the_emulators_charges(facet: dict[str, Any], deployment: Deployment, label: str) -> None:
    """The facet's inference ids are the answers the emulator billed, and they add up to the facet."""
    by_id = {c.inference_id: c for c in deployment.emulator.charges}
    assert set(facet["inferenceIds"]) <= set(by_id), label
    charged = [by_id[i] for i in facet["inferenceIds"]]
    assert len(charged) == facet["requests"], label
    assert sum(c.credits for c in charged) == facet["creditsUsed"], label
    assert sum((c.usd for c in charged), Decimal(0)) == Decimal(facet["usdSpent"]), label
    assert sum(c.prompt_tokens for c in charged) == facet["promptTokens"], label
    assert sum(c.completion_tokens for c in charged) == facet["completionTokens"], label


def test_lineage_events_carry_the_qwen_facet_and_the_batchs_files(deployment: Deployment) -> None:
    assert deployment.api is not None
    bad_key_conn = {
        "connection_id": BAD_KEY_CONN_ID,
        "conn_type": "qwen",
        "host": deployment.emulator.base_url,
        "password": BAD_KEY,
    }
    created = deployment.api.post("/api/v2/connections", json=bad_key_conn)
    assert created.status_code in (201, 409), created.text
    run = deployment.run_test_dag(DAG_ID)
    assert run["state"] == "failed"  # three tasks fail on purpose; the others succeed
    tis = {t["task_id"]: t for t in task_instances(deployment, run)}
    assert {k: t["state"] for k, t in tis.items()} == {
        "chat": "success",
        "write_input": "success",
        "batch": "success",
        "truncated": "failed",
        "bad_key": "failed",
        "refused": "failed",
    }

    deadline = time.monotonic() + 60  # the listener writes after the task's own end, in a fork
    while True:
        events, broken = _events(deployment)
        seen = {(e["job"]["name"].split(".", 1)[1], e["eventType"]) for e in events}
        if set(FINAL.items()) <= seen:
            break
        missing = set(FINAL.items()) - seen
        assert time.monotonic() < deadline, f"missing events {missing} ({broken} unreadable lines)"
        time.sleep(1.0)
    for event in events:
        assert event["job"]["namespace"] == "qwen-e2e"
        if "qwen" in event["run"].get("facets", {}):
            jsonschema.validate(event["run"]["facets"]["qwen"], FACET_SCHEMA)

    # the chat: its facet is its qwen_cost, and what the emulator billed for its one answer
    chat = _event(events, "chat", "COMPLETE")["run"]["facets"]["qwen"]
    _matches_the_cost_record(chat, xcom(deployment, run, "chat", "qwen_cost"), "chat")
    _matches_the_emulators_charges(chat, deployment, "chat")
    assert len(chat["inferenceIds"]) == chat["requests"] == 1
    assert "qwen" not in _event(events, "chat", "START")["run"]["facets"]  # no figures before the run

    # the batch over a JSON-lines file: its files as datasets (on START too), its three answers
    home = deployment.home
    for kind in ("START", "COMPLETE"):
        batch_event = _event(events, "batch", kind)
        assert [(d["namespace"], d["name"]) for d in batch_event["inputs"]] == [
            ("file", str(home / "lineage-input" / "docs.jsonl"))
        ], kind
        assert [(d["namespace"], d["name"]) for d in batch_event["outputs"]] == [
            ("file", str(home / "lineage-results" / "summaries.jsonl"))
        ], kind
    batch = _event(events, "batch", "COMPLETE")["run"]["facets"]["qwen"]
    _matches_the_cost_record(batch, xcom(deployment, run, "batch", "qwen_cost"), "batch")
    _matches_the_emulators_charges(batch, deployment, "batch")
    assert batch["requests"] == 3
    assert (home / "lineage-results" / "summaries.jsonl").read_text().count("\n") == 3

    # a try that paid for an answer cut at its token limit, then failed: its FAIL event says so
    truncated = _event(events, "truncated", "FAIL")["run"]["facets"]["qwen"]
    _matches_the_cost_record(truncated, xcom(deployment, run, "truncated", "qwen_cost"), "truncated")
    _matches_the_emulators_charges(truncated, deployment, "truncated")
    assert truncated["requests"] == 1

    # a wrong key: QwenRetryPolicy failed the task at once, its three retries unspent
    assert tis["bad_key"]["try_number"] == 1
    assert tis["bad_key"]["max_tries"] >= 3
    log = _log(deployment, run, "bad_key")
    assert "Retry policy decision" in log
    assert "AuthenticationError status=401" in log
    bad_key = _event(events, "bad_key", "FAIL")["run"]["facets"]["qwen"]
    assert (bad_key["requests"], bad_key["usdSpent"], bad_key["tryNumber"]) == (0, "0", 1)
    refused_401 = {r.inference_id for r in deployment.emulator.requests if r.status == 401}
    assert bad_key["inferenceIds"], "the 401's id: the service logs the failed request under it"
    assert set(bad_key["inferenceIds"]) <= refused_401
    fails = [e for e in events if e["job"]["name"] == f"{DAG_ID}.bad_key" and e["eventType"] == "FAIL"]
    assert len(fails) == 1  # one try, one FAIL event

    # refused by its budget before sending: a facet of zeros
    refused = _event(events, "refused", "FAIL")["run"]["facets"]["qwen"]
    assert (refused["requests"], refused["usdSpent"], refused["inferenceIds"]) == (0, "0", [])

    text = (home / "openlineage.jsonl").read_text()
    for secret in (API_KEY, BAD_KEY, API_KEY[-11:], BAD_KEY[-11:]):
        assert secret not in text, "a key in the OpenLineage events"
    print(f"lineage: {len(events)} events of {DAG_ID}, {broken} unreadable line(s) in the file")
