"""Test DAGs (not examples): deferrable calls on the real deployment (tests/e2e/test_deferrable.py).

``qwen_deferrable_many``: 50 mapped deferrable chats; the deployment runs four task instances at a
time, so calls that held worker slots could never be more than four in flight at once.
``qwen_deferrable_restart``: one deferrable chat, for the triggerer restarted mid-call.
``qwen_review``: a deferrable chat whose answer a person reviews (approve, edit, reject).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_provider_qwen.operators import QwenChatOperator

START = pendulum.datetime(2025, 1, 1, tz="UTC")
CALLS = 50


@dag(schedule=None, start_date=START, catchup=False, tags=["qwen-e2e"])
def qwen_deferrable_many():
    QwenChatOperator.partial(
        task_id="chat", deferrable=True, max_completion_tokens=40, max_cost_usd="0.05", retries=0
    ).expand(prompt=[f"Summarize document {n} in one line." for n in range(CALLS)])


@dag(schedule=None, start_date=START, catchup=False, tags=["qwen-e2e"])
def qwen_deferrable_restart():
    QwenChatOperator(
        task_id="chat", prompt="One line on patience.", deferrable=True, max_completion_tokens=40
    )


@dag(schedule=None, start_date=START, catchup=False, tags=["qwen-e2e"])
def qwen_review():
    QwenChatOperator(
        task_id="draft",
        prompt="Draft a one-line release note for {{ run_id }}.",
        deferrable=True,
        require_approval=True,
        max_completion_tokens=60,
        retries=2,  # a rejection fails at once all the same
    )


qwen_deferrable_many()
qwen_deferrable_restart()
qwen_review()
