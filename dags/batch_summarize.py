"""Summarise a folder of documents with Qwen, sharded across workers.

`list_documents` reads the folder (`documents/` next to this file by default; any
ObjectStoragePath URL such as `s3://bucket/docs` through the `folder` param) and cuts the
documents into shards of `shard_size`. Each shard is one mapped `QwenBatchOperator` task
(`.expand(items=...)`): inside a task up to `max_concurrency` requests run at once, adapting
to rate limits; across tasks the Airflow pool `qwen_api` caps how many shards run together,
so at most pool slots x `max_concurrency` requests are in flight for the whole deployment.
A document longer than `max_input_tokens` is summarised in parts, then combined.
Finished documents are checkpointed: a retried or killed shard sends only what is left.
`collect` gathers the summaries by document name with the exact spend of every shard.

Create the pool once: `airflow pools set qwen_api 4 "Qwen API: shard tasks at once"`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import Param, XComArg, dag, task

from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy

DOCUMENTS = Path(__file__).parent / "documents"
POOL = "qwen_api"


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    params={
        "folder": Param(f"file://{DOCUMENTS}", type="string", description="Folder of .txt/.md documents"),
        "shard_size": Param(4, type="integer", minimum=1, description="Documents per mapped task"),
    },
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_batch_summarize():
    @task
    def list_documents(**context) -> list[list[dict]]:
        """The documents as shards: one list of {"name", "text"} per mapped batch task."""
        from airflow.sdk import ObjectStoragePath

        folder = ObjectStoragePath(context["params"]["folder"])
        paths = sorted((p for p in folder.iterdir() if p.suffix in (".txt", ".md")), key=lambda p: p.name)
        documents = [{"name": p.name, "text": p.read_text()} for p in paths]
        size = context["params"]["shard_size"]
        return [documents[i : i + size] for i in range(0, len(documents), size)]

    shards = list_documents()

    summarize = QwenBatchOperator.partial(
        task_id="summarize",
        pool=POOL,
        system_prompt="You write short, factual summaries for busy readers.",
        prompt=(
            "Summarise this document in at most two sentences"
            "{% if chunk %} (this is part {{ chunk.index + 1 }} of {{ chunk.count }} of a longer one)"
            "{% endif %}."
            "\n\nTitle: {{ item.name }}\n\n{{ item.text }}"
        ),
        max_input_tokens=1000,  # longer documents are summarised in parts, then combined
        max_concurrency=8,
        max_completion_tokens=4000,  # counts reasoning tokens too
        max_cost_usd=0.50,  # per shard
        max_failures=0.1,  # a shard succeeds with up to 10% of its documents failed
        retries=2,  # a retry resumes from the checkpoint: finished documents are not paid again
        retry_delay=timedelta(seconds=30),
    ).expand(items=shards)

    @task
    def collect(shards: list[list[dict]], summaries: list[list], costs: list[dict]) -> dict:
        """Summaries by document name (None for a failed one) and the spend of every shard."""
        from decimal import Decimal

        from airflow_provider_qwen.batch import load_result

        by_name = {
            document["name"]: load_result(summary)
            for shard, results in zip(shards, summaries, strict=True)
            for document, summary in zip(shard, results, strict=True)
        }
        spent = sum((Decimal(cost["usd_spent"]) for cost in costs), Decimal(0))
        failed = sorted(name for name, summary in by_name.items() if summary is None)
        for name, summary in by_name.items():
            print(f"{name}: {summary}")
        print(f"{len(by_name)} documents, {len(failed)} failed, {spent} USD over {len(costs)} shards")
        return {"summaries": by_name, "failed": failed, "usd_spent": str(spent), "shards": len(costs)}

    collect(shards, summarize.output, XComArg(summarize, key="qwen_cost"))


qwen_batch_summarize()
