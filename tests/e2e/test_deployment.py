"""The example DAGs in a real deployment, driven and read only through the REST API v2.

Each DAG is unpaused, so the scheduler starts its run exactly as it would every day (a DAG without a
periodic schedule is triggered instead); the LocalExecutor runs the tasks in their own processes,
which get ``qwen_default`` from the API server. Results and ``qwen_cost`` are read back through the
API and checked against what the emulator billed; every task log, fetched through the API, must
not contain the API key, masked or not.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import pytest

from tests.e2e.conftest import API_KEY, EXAMPLE_TAG, Deployment
from tests.support.cost_fakes import COST_FIELDS as QWEN_COST_FIELDS

pytestmark = pytest.mark.e2e

COST_FIELDS = set(QWEN_COST_FIELDS)  # every qwen_cost has them
KEY_FRAGMENTS = (API_KEY, API_KEY[-11:], API_KEY[:10])  # also no partially masked key
SCHEDULE_WAIT = 90.0
EXAMPLE_DAGS = {
    "qwen_daily_summary",
    "qwen_structured_extraction",
    "qwen_batch_summarize",
    "qwen_cost_tracking",
}
POOLS = {"qwen_api": 4}  # as dags/batch_summarize.py says to create it


def xcom(deployment: Deployment, run: dict[str, Any], task_id: str, key: str, map_index: int = -1) -> Any:
    """An XCom value as the REST API returns it (the stored JSON value, not stringified)."""
    path = f"/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances/{task_id}/xcomEntries/{key}"
    return deployment.get(path, map_index=map_index)["value"]


def task_instances(deployment: Deployment, run: dict[str, Any]) -> list[dict[str, Any]]:
    found = deployment.get(f"/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances", limit=100)
    return found["task_instances"]


def _start_run(deployment: Deployment, dag: dict[str, Any]) -> dict[str, Any]:
    """Unpause the DAG and return the run the scheduler creates; trigger one if it has no schedule."""
    assert deployment.api is not None
    dag_id = dag["dag_id"]
    response = deployment.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False})
    assert response.status_code == 200, response.text
    if not dag["timetable_periodic"]:
        body = {"logical_date": None, "conf": {}}
        response = deployment.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        assert response.status_code == 200, response.text
        return response.json()
    deadline = time.monotonic() + SCHEDULE_WAIT
    while time.monotonic() < deadline:
        runs = deployment.get(f"/dags/{dag_id}/dagRuns", run_type="scheduled")["dag_runs"]
        if runs:
            return runs[0]
        deployment.check_alive()
        time.sleep(1.0)
    raise AssertionError(f"the scheduler started no run of {dag_id} within {SCHEDULE_WAIT:.0f}s of unpausing")


@pytest.fixture(scope="module")
def example_runs(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Every example DAG's run, finished: ``{dag_id: run as the API shows it}``. The emulator's log
    starts afresh, so what it billed is the example runs' alone (other modules share it)."""
    assert deployment.api is not None
    deployment.emulator.reset()
    for name, slots in POOLS.items():  # the setup step the batch DAG's docs ask for
        body = {"name": name, "slots": slots, "description": "Qwen API: shard tasks at once"}
        response = deployment.api.post("/api/v2/pools", json=body)
        assert response.status_code == 201, response.text
    dags = deployment.get("/dags", tags=EXAMPLE_TAG, limit=100)["dags"]
    started = [_start_run(deployment, dag) for dag in dags]
    return {run["dag_id"]: deployment.wait_for_run(run["dag_id"], run["dag_run_id"]) for run in started}


def test_every_example_dag_runs_on_its_schedule_and_succeeds(
    deployment: Deployment, example_runs: dict[str, dict[str, Any]]
) -> None:
    assert set(example_runs) >= EXAMPLE_DAGS
    for dag_id, run in example_runs.items():
        states = {f"{t['task_id']}[{t['map_index']}]": t["state"] for t in task_instances(deployment, run)}
        assert run["state"] == "success", f"{dag_id}: {states}"
        assert set(states.values()) == {"success"}, f"{dag_id}: {states}"
        dag = deployment.get(f"/dags/{dag_id}")
        if dag["timetable_periodic"]:
            assert run["run_type"] == "scheduled"
            assert run["logical_date"] is not None


def test_results_and_costs_read_back_through_the_api(
    deployment: Deployment, example_runs: dict[str, dict[str, Any]]
) -> None:
    credits, usd = 0, Decimal(0)
    for run in example_runs.values():
        for ti in task_instances(deployment, run):
            if not (ti["operator"] or "").startswith("Qwen") or ti["operator"] == "QwenCostReportOperator":
                continue
            label = f"{run['dag_id']}.{ti['task_id']}[{ti['map_index']}]"
            result = xcom(deployment, run, ti["task_id"], "return_value", ti["map_index"])
            assert result, f"{label} returned nothing"
            cost = xcom(deployment, run, ti["task_id"], "qwen_cost", ti["map_index"])
            assert set(cost) >= COST_FIELDS, f"{label}: {cost}"
            assert isinstance(cost["credits_used"], int), f"{label}: {cost}"
            assert cost["credits_used"] > 0
            assert isinstance(cost["usd_spent"], str), f"{label}: usd_spent must be an exact decimal string"
            assert Decimal(cost["usd_spent"]) > 0
            assert cost["requests"] >= 1
            assert cost["estimated"] is False  # the emulator reports the cost like the service
            assert cost["try_number"] == ti["try_number"]
            credits += cost["credits_used"]
            usd += Decimal(cost["usd_spent"])
    assert (credits, usd) == deployment.emulator.total_charged(), "qwen_cost records != what was billed"

    summary_run = example_runs["qwen_daily_summary"]
    summary = xcom(deployment, summary_run, "summarise", "return_value")
    assert isinstance(summary, str)
    assert summary.strip()
    published = xcom(deployment, summary_run, "publish", "return_value")
    assert published["summary"] == summary
    assert published["day"] == summary_run["run_after"][:10]

    extraction_run = example_runs["qwen_structured_extraction"]
    mapped = [t for t in task_instances(deployment, extraction_run) if t["task_id"] == "extract_ticket"]
    tickets = xcom(deployment, extraction_run, "load_tickets", "return_value")
    assert len(mapped) == len(tickets) > 0  # one mapped task per ticket
    for ti in mapped:
        ticket = xcom(deployment, extraction_run, "extract_ticket", "return_value", ti["map_index"])
        assert ticket["category"] in {"billing", "bug", "account", "feature_request", "other"}
        assert ticket["urgency"] in {"low", "medium", "high"}
        assert isinstance(ticket["summary"], str)
    routed = xcom(deployment, extraction_run, "route", "return_value")
    assert routed["requests"] == len(tickets)


def test_cost_reports_add_up_the_runs_qwen_costs(
    deployment: Deployment, example_runs: dict[str, dict[str, Any]]
) -> None:
    reports = 0
    for run in example_runs.values():
        tis = task_instances(deployment, run)
        spent = sum(
            (
                Decimal(xcom(deployment, run, t["task_id"], "qwen_cost", t["map_index"])["usd_spent"])
                for t in tis
                if (t["operator"] or "").startswith("Qwen") and t["operator"] != "QwenCostReportOperator"
            ),
            Decimal(0),
        )
        for ti in (t for t in tis if t["operator"] == "QwenCostReportOperator"):
            report = xcom(deployment, run, ti["task_id"], "return_value", ti["map_index"])
            reports += 1
            assert Decimal(str(report["total"]["usd_spent"])) == spent, report
    if not reports:
        pytest.skip("no example DAG has a QwenCostReportOperator task yet")


def test_task_logs_never_show_the_api_key(
    deployment: Deployment, example_runs: dict[str, dict[str, Any]]
) -> None:
    assert deployment.api is not None
    fetched = 0
    for run in example_runs.values():
        for ti in task_instances(deployment, run):
            for try_number in range(1, ti["try_number"] + 1):
                path = (
                    f"/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}/taskInstances/"
                    f"{ti['task_id']}/logs/{try_number}"
                )
                response = deployment.api.get(
                    path,
                    params={"map_index": ti["map_index"], "full_content": True},
                    headers={"Accept": "application/json"},
                )
                assert response.status_code == 200, response.text[:300]
                events = [e.get("event", "") for e in response.json()["content"] if isinstance(e, dict)]
                assert any("Pre Execute" in str(e) for e in events), f"not a task log: {events[:5]}"
                for fragment in KEY_FRAGMENTS:  # the raw answer: events, error details, everything
                    assert fragment not in response.text, f"key in the log of {run['dag_id']}.{ti['task_id']}"
                fetched += 1
    assert fetched >= sum(len(task_instances(deployment, r)) for r in example_runs.values())

    leaks = [
        str(path)
        for path in deployment.home.rglob("*")
        if path.is_file()
        and path.suffix in {".log", ".json", ".txt", ""}
        and any(f.encode() in path.read_bytes() for f in KEY_FRAGMENTS)
    ]
    assert not leaks, f"API key written to {leaks}"
