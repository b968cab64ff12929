"""Summaries with the Qwen TaskFlow decorators.

`load_articles` returns a few articles (in real life: an API, a bucket, a database). `@task.qwen`
turns each article into a prompt in plain Python and is mapped over them: one task instance per
article, each with its own `qwen_cost`. What the function returns is sent as written: the
`{{ ... }}` in the third article reaches the model as text, it is not a template. Then
`@task.qwen_tool_call` turns the summaries into a structured digest (a pydantic model), and
`publish` hands it on with the run's cost.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task
from pydantic import BaseModel

from airflow_provider_qwen.retry_policy import QwenRetryPolicy

ARTICLES = [
    "Billing-api v2.14 shipped on Tuesday; the error rate was back to baseline 25 minutes later.",
    "Checkout latency p95 rose from 310 ms to 540 ms after the CDN change; a rollback is planned.",
    "The docs site now renders code like {{ user.name }} and {% raw %} literally, as it should.",
]


class Digest(BaseModel):
    """A digest of the day's summaries."""

    headline: str
    highlights: list[str]


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["qwen-taskflow"],
    default_args={"retries": 2, "retry_policy": QwenRetryPolicy()},  # see docs/retry-policy.md
    doc_md=__doc__,
)
def qwen_taskflow_summaries():
    @task
    def load_articles() -> list[str]:
        return ARTICLES

    @task.qwen(
        system_prompt="You write one-sentence summaries for busy engineers.",
        max_completion_tokens=2_000,
        max_cost_usd=0.10,
    )
    def summarise(article: str) -> str:
        """One article's summary: the function returns the prompt, the task the model's text."""
        return f"Summarise in one sentence:\n\n{article}"

    @task.qwen_tool_call(output_model=Digest, max_completion_tokens=2_000, max_cost_usd=0.10)
    def digest(summaries: list[str]) -> list[dict]:
        """The function may return messages too; the task returns a validated Digest as a dict."""
        listed = "\n".join(f"- {s}" for s in summaries)
        return [
            {"role": "system", "content": "You turn summaries into a digest for a status page."},
            {"role": "user", "content": f"Today's summaries:\n{listed}"},
        ]

    @task
    def publish(digest: dict):
        print(f"{digest['headline']}: {len(digest['highlights'])} highlight(s)")
        return digest

    summaries = summarise.expand(article=load_articles())
    publish(digest(summaries))


qwen_taskflow_summaries()
