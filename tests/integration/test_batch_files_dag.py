"""A file input sharded over mapped batch tasks into a results folder: dag.test() against the emulator."""

from __future__ import annotations

import json
from decimal import Decimal

from tests.integration.conftest import load_dag

DAG_SOURCE = """
import os
from airflow.sdk import DAG, task
from airflow_provider_qwen.batch import results_asset, shard_input
from airflow_provider_qwen.operators import QwenBatchOperator

RESULTS = os.environ["BATCH_FILES_RESULTS"]

with DAG("batch_files", schedule=None, catchup=False):
    @task
    def shards():
        return shard_input(os.environ["BATCH_FILES_INPUT"], parts=3)

    summaries = QwenBatchOperator.partial(
        task_id="summarise",
        prompt="Summarise: {{ item.text }}",
        max_concurrency=4,
        max_completion_tokens=50,
        results_path=RESULTS,
        results_order="item",
        outlets=[results_asset(RESULTS)],
    ).expand(items=shards())

    @task
    def collect(manifests):
        return {"rows": sum(m["rows"] for m in manifests), "paths": [m["results_path"] for m in manifests]}

    collect(summaries.output)
"""


def test_a_jsonl_input_in_three_shards_lands_in_three_result_files_once(
    run_dag, qwen_emulator, tmp_path, monkeypatch
):
    docs = tmp_path / "docs.jsonl"
    texts = [f"Report {i}: {{{{ 7*7 }}}} stays text; revenue grew by {i}%." for i in range(25)]
    docs.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    results = tmp_path / "results"
    monkeypatch.setenv("BATCH_FILES_INPUT", f"file://{docs}")
    monkeypatch.setenv("BATCH_FILES_RESULTS", f"file://{results}/")
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'storage'}")
    dag_file = tmp_path / "batch_files.py"
    dag_file.write_text(DAG_SOURCE)

    result = run_dag(load_dag(dag_file))
    assert result.state == "success", result.task_states

    manifests = result.mapped("summarise")
    assert [m["total"] for m in manifests] == [8, 8, 9]
    assert result.xcom("collect")["rows"] == 25
    rows = [json.loads(line) for part in sorted(results.iterdir()) for line in part.read_text().splitlines()]
    assert [row["index"] for row in rows] == list(range(25))  # item order within a shard, shards in order
    assert all(row["status"] == "ok" and row["result"] for row in rows)

    prompts = [r.body["messages"][-1]["content"] for r in qwen_emulator.chat_requests()]
    assert sorted(prompts) == sorted(f"Summarise: {t}" for t in texts)  # each once; text never rendered
    credits, usd = qwen_emulator.total_charged()
    costs = result.mapped("summarise", "qwen_cost")
    assert sum(Decimal(c["usd_spent"]) for c in costs) == usd
    assert sum(c["credits_used"] for c in costs) == credits

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.query(AssetModel).filter(AssetModel.uri == f"file://{results}").one()
        events = session.query(AssetEvent).filter(AssetEvent.asset_id == asset.id).all()
    assert len(events) == 3  # one per shard: a downstream DAG can be scheduled on the results
