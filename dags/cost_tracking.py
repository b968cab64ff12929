"""Cost tracking with Qwen: a run budget over all Qwen tasks, a cap per task, and the cost report last.

A product brief is drafted, reviewed and condensed into release notes by three Qwen tasks.
`default_args` give every one of them the same `dag_run_budget_usd` (what the whole run may spend)
and `max_cost_usd` (what one task may spend, over all its tries); `max_completion_tokens` bounds
each answer, so no request is sent unless its worst case fits: with it, spend never passes either
budget. `QwenCostReportOperator` runs last, also when a task failed, and returns the run's total,
per task and per model; the same table is logged by the DAG callbacks, which need no task.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag

from airflow_provider_qwen.callbacks import qwen_cost_callback
from airflow_provider_qwen.operators import QwenChatOperator, QwenCostReportOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    params={"product": Param("a self-hosted status page for small teams", type="string")},
    default_args={
        "retries": 2,
        "retry_policy": QwenRetryPolicy(),  # fail at once on 4xx and budget refusals; retry 429/5xx
        "dag_run_budget_usd": 0.50,  # every Qwen task of one run together
        "max_cost_usd": 0.25,  # each task, all its tries together
        "max_completion_tokens": 4_000,  # bounds each answer (reasoning included)
    },
    on_success_callback=qwen_cost_callback,
    on_failure_callback=qwen_cost_callback,
    doc_md=__doc__,
)
def qwen_cost_tracking():
    draft = QwenChatOperator(
        task_id="draft_brief",
        system_prompt="You write concise product briefs.",
        prompt="Draft a one-page product brief for {{ params.product }}.",
    )
    review = QwenChatOperator(
        task_id="review_brief",
        system_prompt="You are a critical product reviewer.",
        prompt="List the three biggest gaps in this brief:\n\n{{ ti.xcom_pull(task_ids='draft_brief') }}",
    )
    notes = QwenChatOperator(
        task_id="release_notes",
        prompt="Five bullet release notes from this brief:\n\n{{ ti.xcom_pull(task_ids='draft_brief') }}",
        temperature=0.3,
    )
    report = QwenCostReportOperator(task_id="cost_report")

    draft >> [review, notes] >> report


qwen_cost_tracking()
