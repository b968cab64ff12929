"""Test DAG (not an example): six mapped chats at once under one ``dag_run_budget_usd``.

The deployment runs up to four task instances in parallel; their claims on the run budget must keep
the run's spend within it, whatever order they run in.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_qwen.operators import QwenChatOperator

RUN_BUDGET_USD = "0.04"  # about 2.5 worst cases of one chat below (2,000 output tokens at 7.80/1M)


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["qwen-e2e"])
def qwen_run_budget():
    QwenChatOperator.partial(
        task_id="chat",
        model="alibaba/qwen3.7-max",
        max_completion_tokens=2000,
        dag_run_budget_usd=RUN_BUDGET_USD,
        retries=0,
    ).expand(prompt=[f"Write line {n} of a short poem about budgets." for n in range(6)])


qwen_run_budget()
