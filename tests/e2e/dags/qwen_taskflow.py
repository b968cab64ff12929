"""Test DAG (not an example): the Qwen TaskFlow decorators on a real deployment.

``verbatim`` returns a prompt holding ``{{ 7*7 }}``, which must reach the API as written; ``ask`` is
mapped over an upstream's output; ``deferred`` makes its call in the triggerer, and its prompt (with
a fresh id each time the function runs) must come back on resume without the function running
again; ``extract`` returns a validated pydantic value.
"""

from __future__ import annotations

import uuid

import pendulum
from airflow.sdk import dag, task
from pydantic import BaseModel

MARKER = "qwen_taskflow e2e"
VERBATIM = f"{MARKER}: repeat {{{{ 7*7 }}}} and {{% raw %}} as written"


class Ticket(BaseModel):
    """A support ticket's fields."""

    title: str
    priority: int


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["qwen-e2e"])
def qwen_taskflow():
    @task.qwen(system_prompt="You answer in one short sentence.", max_completion_tokens=500, retries=0)
    def verbatim() -> str:
        return VERBATIM

    @task
    def topics() -> list[str]:
        return [f"{MARKER}: tides {{{{ ds }}}}", f"{MARKER}: comets"]

    @task.qwen(max_completion_tokens=500, max_cost_usd=0.05, retries=0)
    def ask(topic: str) -> str:
        return f"Explain {topic}"

    @task.qwen(deferrable=True, max_completion_tokens=500, retries=0)
    def deferred() -> str:
        return f"{MARKER}: deferred {{{{ 7*7 }}}} {uuid.uuid4()}"

    @task.qwen_tool_call(output_model=Ticket, max_completion_tokens=500, retries=0)
    def extract() -> list[dict]:
        return [{"role": "user", "content": f"{MARKER}: extract the ticket 'Login is down {{{{ 7*7 }}}}'"}]

    verbatim()
    ask.expand(topic=topics())
    deferred()
    extract()


qwen_taskflow()
