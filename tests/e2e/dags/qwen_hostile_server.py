"""Test DAG (not an example): chats against a server that echoes the request's headers back, the
API key included (malformed HTTP, a JSON error, a proxy's 407 page; sync and streamed). The tasks
fail; their logs must not show the key."""

from __future__ import annotations

import pendulum
from airflow.sdk import chain, dag

from airflow_provider_qwen.operators import QwenChatOperator


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["qwen-e2e"])
def qwen_hostile_server():
    chain(
        *[
            QwenChatOperator(
                task_id=f"echoed_{n}", prompt="Say hi.", stream=stream, retries=0, trigger_rule="all_done"
            )
            for n, stream in enumerate([False, False, False, True, True, True])
        ]
    )


qwen_hostile_server()
