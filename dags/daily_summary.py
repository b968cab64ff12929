"""Daily summary with Qwen.

Every day: collect the day's notes, have Qwen summarise them with the prompt file
`prompts/daily_summary.prompt`, and publish the summary with what it cost. Trigger it by hand
with other notes through the `notes` param; the prompt only uses values that exist on manual runs
(`dag_run.run_after`, `run_id`, `params`).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, XComArg, dag, task

from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.retry_policy import QwenRetryPolicy

DEFAULT_NOTES = [
    "Deploy of billing-api v2.14 finished at 09:40; error rate back to baseline by 10:05.",
    "Checkout latency p95 rose from 310 ms to 540 ms after the CDN change; rollback planned tomorrow.",
    "Two enterprise customers asked for SSO with Okta; sales wants a date.",
    "On-call noted the nightly backup job ran 40 minutes late (disk I/O contention).",
]


@dag(
    schedule="@daily",
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-example"],
    params={
        "audience": Param("the engineering leads", type="string"),
        "notes": Param(DEFAULT_NOTES, type="array", items={"type": "string"}),
    },
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_daily_summary():
    @task
    def collect_notes(**context) -> str:
        """The day's notes as one bullet list (in real life: from a ticket system, a chat export ...)."""
        return "\n".join(f"- {note}" for note in context["params"]["notes"])

    summarise = QwenChatOperator(
        task_id="summarise",
        system_prompt="You write short, factual summaries for busy readers.",
        prompt="prompts/daily_summary.prompt",  # a template file next to this DAG
        max_completion_tokens=16_000,  # counts reasoning tokens too
        max_cost_usd=0.50,
    )

    @task
    def publish(summary: str, cost: dict, **context):
        """Hand the summary on (here: the log and XCom) together with its exact cost."""
        day = context["dag_run"].run_after.date().isoformat()
        print(f"Daily summary for {day} ({cost['usd_spent']} USD):\n{summary}")
        return {"day": day, "summary": summary, "usd_spent": cost["usd_spent"], "requests": cost["requests"]}

    collect_notes() >> summarise
    publish(summarise.output, XComArg(summarise, key="qwen_cost"))


qwen_daily_summary()
