"""One try of a Qwen task in a process of its own, so a test can SIGTERM it mid-try.

    python -m tests.integration.kill_child batch <try_number> <work_dir>

SIGTERM is handled as Airflow's task runner does: its handler calls the task's ``on_kill()`` and
returns. The last stdout line is JSON: the result (or None), the error's class name (or None),
the XComs pushed, and how many TCP connections the process still had open once the try had
unwound (the requests in flight cancelled: none).
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import psutil
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import BatchTI


def batch() -> QwenBatchOperator:
    return QwenBatchOperator(
        task_id="task",
        items=[f"doc {i}" for i in range(5)],
        prompt="Summarise {{ item }}",
        max_concurrency=5,
        max_completion_tokens=40,
    )


def main(kind: str, try_number: int, work: Path) -> None:
    with DAG("kill_child", schedule=None) as dag:
        op = {"batch": batch}[kind]()
    ti = BatchTI(try_number, dag_id="kill_child", task_id="task")
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id, "dag": dag}
    signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())  # as the task runner's _on_term
    op.render_template_fields(context)
    result, error = None, None
    try:
        result = op.execute(context)
    except BaseException as exc:
        error = type(exc).__name__
    connections = [c for c in psutil.Process().net_connections(kind="tcp") if c.raddr]
    outcome = {"result": result, "error": error, "xcom": ti.pushed, "open_connections": len(connections)}
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]))
