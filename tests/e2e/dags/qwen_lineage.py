"""Test DAG (not an example): what the OpenLineage provider's file transport records of Qwen tasks
(tests/e2e/test_lineage.py): a chat; a batch over a JSON-lines file into a results file; a chat
whose paid answer is cut at its token limit (it fails having spent); a chat on a connection with a
wrong key, which QwenRetryPolicy fails at once though it has retries; and a task a budget refuses."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_provider_qwen.operators import QwenBatchOperator, QwenChatOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy

HOME = Path(os.environ.get("AIRFLOW_HOME", "/tmp"))
INPUT = HOME / "lineage-input" / "docs.jsonl"
RESULTS = HOME / "lineage-results" / "summaries.jsonl"
BAD_KEY_CONN_ID = "qwen_lineage_bad_key"  # created by the test: the emulator, another key
DOCS = [
    "Lineage records which tasks read and wrote which files.",
    "Every Qwen task reports its tokens, its cost and its inference ids.",
    "A batch names the file it read and the file it wrote.",
]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-e2e"],
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},
)
def qwen_lineage():
    QwenChatOperator(task_id="chat", prompt="One line on lineage.", max_completion_tokens=40)

    @task
    def write_input() -> str:
        INPUT.parent.mkdir(parents=True, exist_ok=True)
        INPUT.write_text("".join(json.dumps({"id": n, "text": text}) + "\n" for n, text in enumerate(DOCS)))
        return f"file://{INPUT}"

    QwenBatchOperator(
        task_id="batch",
        items=write_input(),
        prompt="Summarise in one line:\n\n{{ item.text }}",
        results_path=str(RESULTS),
        max_completion_tokens=40,
    )
    QwenChatOperator(
        task_id="truncated",
        prompt="Lineage tracks where data comes from and where it goes, task by task and file by file.",
        max_completion_tokens=3,
        fail_on_truncation=True,
        retries=0,  # a cut answer is not a failure the retry policy decides: no second paid try here
    )
    QwenChatOperator(task_id="bad_key", prompt="Say hi.", qwen_conn_id=BAD_KEY_CONN_ID, retries=3)
    QwenChatOperator(
        task_id="refused", prompt="A long essay.", max_completion_tokens=50_000, max_cost_usd="0.000001"
    )


qwen_lineage()
