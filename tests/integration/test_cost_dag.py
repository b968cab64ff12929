"""The cost-tracking example DAG end to end (dag.test() against the emulator), its callbacks and metrics."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.callbacks import make_cost_callback
from airflow_provider_qwen.operators import QwenChatOperator
from tests.integration.conftest import load_dag

QWEN_TASKS = ("draft_brief", "review_brief", "release_notes")


def test_example_dag_reports_exactly_what_the_emulator_charged(run_dag, qwen_emulator):
    result = run_dag(load_dag("cost_tracking.py"), conf={"product": "a {{ 7*7 }} calculator"})

    assert result.state == "success", result.task_states
    chats = [r for r in qwen_emulator.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == len(QWEN_TASKS)
    assert all(body["max_completion_tokens"] == 4_000 for body in (r.body for r in chats))
    assert "a {{ 7*7 }} calculator" in chats[0].body["messages"][-1]["content"]  # params are data
    credits, usd = qwen_emulator.total_charged()
    assert usd > 0

    report = result.xcom("cost_report")
    assert report["total"]["credits_used"] == credits
    assert Decimal(report["total"]["usd_spent"]) == usd
    assert report["total"]["estimated"] is False
    assert sorted(report["by_task"]) == sorted(QWEN_TASKS)
    assert sum(Decimal(t["usd_spent"]) for t in report["by_task"].values()) == usd
    assert list(report["by_model"]) == ["alibaba/qwen3.7-max"]
    for task_id in QWEN_TASKS:
        record = result.xcom(task_id, "qwen_cost")
        assert report["by_task"][task_id]["usd_spent"] == record["usd_spent"]
    assert usd <= Decimal("0.50")  # the run budget held


def test_a_dag_callback_reports_the_run_without_a_task(run_dag, qwen_emulator):
    reports: list[dict] = []
    callback = make_cost_callback(lambda report, context: reports.append(report))
    start = pendulum.datetime(2025, 1, 1, tz="UTC")
    with DAG("qwen_cost_callback", schedule=None, start_date=start, on_success_callback=callback) as dag:
        QwenChatOperator.partial(task_id="mapped", max_completion_tokens=500).expand(prompt=["a", "b", "c"])

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    (report,) = reports
    credits, usd = qwen_emulator.total_charged()
    assert (report["total"]["credits_used"], Decimal(report["total"]["usd_spent"])) == (credits, usd)
    assert report["by_task"]["mapped"]["instances"] == 3


def test_every_task_emits_metrics_with_its_tags(run_dag, qwen_emulator, mocker):
    from airflow.sdk.observability.stats import Stats

    incr = mocker.patch.object(Stats, "incr")
    result = run_dag(load_dag("cost_tracking.py"))
    assert result.state == "success", result.task_states

    usd_by_task = {
        call.kwargs["tags"]["task_id"]: call.kwargs
        for call in incr.call_args_list
        if call.args and call.args[0] == "qwen.cost.usd"
    }
    assert sorted(usd_by_task) == sorted(QWEN_TASKS)
    for task_id, kwargs in usd_by_task.items():
        assert kwargs["tags"] == {
            "dag_id": "qwen_cost_tracking",
            "task_id": task_id,
            "model": "alibaba/qwen3.7-max",
        }
        assert kwargs["count"] == pytest.approx(float(result.xcom(task_id, "qwen_cost")["usd_spent"]))
