"""A DAG run under Airflow's own task runner (``dag.test()``) in a process of its own, so a test can
SIGTERM it mid-try the way the supervisor does when a user marks the task failed: the task
runner's ``_on_term`` calls ``on_kill()``. The task has one retry; between the tries its
``on_retry_callback`` writes ``<work>/retry.json`` (the TCP connections the process still holds
once the killed try unwound: none) and waits for ``<work>/go``, so the test can look at the
emulator meanwhile.

    python -m tests.integration.kill_runner_child <chat|agent|batch> <work_dir>

The metadata DB and the emulator connection come from the environment (the test's). The last
stdout line is JSON: the run's state and the task's ``qwen_cost``, ``qwen_agent`` and result XComs.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
import psutil
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenAgentOperator, QwenBatchOperator, QwenChatOperator

AGENT_PROMPT = "Use step_one, then step_two, then step_three, and report what they said."
WORK = Path(".")


def _ran(name: str) -> str:
    with (WORK / "tools.log").open("a") as out:
        out.write(name + "\n")
    return f"{name} is done."


def step_one() -> str:
    """The first step."""
    return _ran("step_one")


def step_two() -> str:
    """The second step."""
    return _ran("step_two")


def step_three() -> str:
    """The third step."""
    return _ran("step_three")


def between_tries(context: Any) -> None:
    """After the killed try: what the process still has open, then wait for the test to look."""
    open_tcp = [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr]
    (WORK / "retry.json").write_text(json.dumps({"open_connections": len(open_tcp)}))
    for _ in range(300):
        if (WORK / "go").exists():
            return
        time.sleep(0.05)


def build(kind: str) -> DAG:
    common: dict[str, Any] = {
        "task_id": "task",
        "max_completion_tokens": 40,
        "retries": 1,
        "retry_delay": timedelta(0),
        "on_retry_callback": between_tries,
    }
    with DAG(f"kill_runner_{kind}", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        if kind == "chat":
            QwenChatOperator(prompt="Say hi", **common)
        elif kind == "agent":
            common["max_completion_tokens"] = 300
            QwenAgentOperator(
                prompt=AGENT_PROMPT,
                tools=[step_one, step_two, step_three],
                parallel_tool_calls=False,
                **common,
            )
        else:
            QwenBatchOperator(
                items=[f"doc {i}" for i in range(5)],
                prompt="Summarise {{ item }}",
                max_concurrency=5,
                progress_interval=60,
                **common,
            )
    return dag


def main(kind: str, work: Path) -> None:
    global WORK
    WORK = work
    from airflow.models.xcom import XComModel
    from airflow.sdk.bases.xcom import BaseXCom
    from airflow.utils.session import create_session

    from tests.integration.conftest import write_dag_to_db

    dag = build(kind)
    write_dag_to_db(dag)
    run = dag.test()
    xcoms = {}
    with create_session() as session:
        rows = session.query(XComModel).filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == run.run_id)
        for row in rows:
            xcoms[row.key] = BaseXCom.deserialize_value(row)
    print(json.dumps({"state": str(run.state), "xcom": xcoms}, default=str), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
