"""Test DAG (not an example): what the OpenLineage provider's file transport records of Qwen tasks
(tests/e2e/test_lineage.py): a chat, a batch over a folder of files into a results file, and a task
a budget refuses."""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import dag

from airflow_provider_qwen.operators import QwenBatchOperator, QwenChatOperator

DOCUMENTS = Path(__file__).parent / "documents"
RESULTS = Path(os.environ.get("AIRFLOW_HOME", "/tmp")) / "lineage-results" / "summaries.jsonl"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-e2e"],
    default_args={"retries": 0},
)
def qwen_lineage():
    QwenChatOperator(task_id="chat", prompt="One line on lineage.", max_completion_tokens=40)
    QwenBatchOperator(
        task_id="batch",
        items=f"file://{DOCUMENTS}",
        prompt="Summarise in one line:\n\n{{ item.text }}",
        results_path=str(RESULTS),
        max_completion_tokens=40,
    )
    QwenChatOperator(
        task_id="refused", prompt="A long essay.", max_completion_tokens=50_000, max_cost_usd="0.000001"
    )


qwen_lineage()
