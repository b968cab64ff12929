"""An agent whose tool needs a person's approval: run twice by tests/e2e/test_agent_approval.py,
approved once and rejected once through the REST API. The tool appends to a file, so the test
counts how often it really ran."""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import dag

from airflow_provider_qwen.agent import tool
from airflow_provider_qwen.operators import QwenAgentOperator


def publish_report(channel: str) -> str:
    """Publish the report to a channel (acts on the world: a person approves it first).

    :param channel: where to publish.
    """
    ran = Path(os.environ["AIRFLOW_HOME"]) / "published.txt"
    with ran.open("a") as out:
        out.write(f"{channel}\n")
    return f"published to {channel}"


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
def qwen_agent_approval():
    QwenAgentOperator(
        task_id="agent",
        prompt="Write the weekly report, then use publish_report to publish it to the team channel.",
        tools=[tool(publish_report, requires_approval=True)],
        max_turns=4,
        max_completion_tokens=400,
    )


qwen_agent_approval()
