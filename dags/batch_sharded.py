"""Summarise one input file with Qwen, sharded over workers, under one budget for the whole run.

`shard` cuts the input (the `input` param: a JSONL, CSV or Parquet file, or a folder or glob of
text files; `documents/` next to this file by default) into `shards` parts with `shard_input`,
reading it once: a shard is a small dict (the input's URL and an item range), never the items.
Each part is one mapped `QwenBatchOperator` task (`.expand(items=...)`), run by whichever worker
is free, which streams its range of the input and writes its results as they finish to
`<results>/<run_id>/summarize-<map_index>.jsonl`, one row per item: `{"index", "status", "result",
"error"}` (index: the item's place in the whole input). XCom carries only each shard's manifest;
`report` adds the manifests up.

Inside a task up to `max_concurrency` requests are in flight; the Airflow pool (`qwen_api`, or env
`QWEN_BATCH_POOL`) caps how many shards run at once, so the whole deployment has at most pool
slots x `max_concurrency` requests in flight. `dag_run_budget_usd` is one budget for all the
shards of a run: running in parallel, they never spend more than it together.

Every finished item is checkpointed under `[qwen] storage_base`, and the results go there too
(env `QWEN_BATCH_RESULTS` to put them elsewhere): point it at storage every worker sees
(`s3://bucket/qwen`, a shared folder). A shard retried after its worker died then resumes on any
worker and sends only the items it had not finished. The results folder is the shards' Asset
outlet, so a downstream DAG can be scheduled on it.

Create the pool once: `airflow pools set qwen_api 4 "Qwen API: shard tasks at once"`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import Param, dag, task

from airflow_provider_qwen.batch import results_asset
from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy
from airflow_provider_qwen.storage import storage_base

DOCUMENTS = Path(__file__).parent / "documents"
# read when the DAG is parsed: a task's pool and outlets cannot come from a run's params
POOL = os.environ.get("QWEN_BATCH_POOL", "qwen_api")
RESULTS = os.environ.get("QWEN_BATCH_RESULTS") or f"{storage_base()}/results/qwen_batch_sharded/"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    params={
        "input": Param(
            f"file://{DOCUMENTS}", type="string", description="JSONL/CSV/Parquet file, or folder or glob"
        ),
        "shards": Param(3, type="integer", minimum=1, description="Mapped batch tasks to cut it into"),
        "run_budget_usd": Param("0.50", type="string", description="What one run may spend, all shards"),
    },
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_batch_sharded():
    @task
    def shard(**context) -> list[dict]:
        """The input as `shards` ranges of items, one per mapped batch task (one pass over it)."""
        from airflow_provider_qwen.batch import shard_input

        return shard_input(context["params"]["input"], context["params"]["shards"])

    summaries = QwenBatchOperator.partial(
        task_id="summarize",
        pool=POOL,
        system_prompt="You write short, factual summaries for busy readers.",
        prompt="Summarise this document in at most two sentences.\n\n{{ item.text }}",
        results_path=RESULTS + "{{ run_id }}/",  # each shard writes summarize-<map_index>.jsonl here
        outlets=[results_asset(RESULTS)],
        max_concurrency=4,
        max_completion_tokens=300,  # bounds each answer, so the run budget is never passed
        dag_run_budget_usd="{{ params.run_budget_usd }}",
        retries=1,  # a retry resumes from the shard's checkpoint: finished items are not paid again
    ).expand(items=shard())

    @task
    def report(manifests: list[dict]) -> dict:
        """What the run did and spent, from the shards' manifests (the results stay in their files)."""
        from decimal import Decimal

        counts = {name: sum(m[name] for m in manifests) for name in ("total", "succeeded", "failed")}
        spent = sum((Decimal(m["usd_spent"]) for m in manifests), Decimal(0))
        for m in manifests:
            print(f"{m['input']}: {m['succeeded']}/{m['total']} -> {m['results_path']}, {m['usd_spent']} USD")
        print(
            f"{counts['succeeded']}/{counts['total']} items summarised, {spent} USD, {len(manifests)} shards"
        )
        return {
            **counts,
            "usd_spent": str(spent),
            "shards": len(manifests),
            "results": [m["results_path"] for m in manifests],
        }

    report(summaries.output)


qwen_batch_sharded()
