"""One try of an agent task in a process of its own, so a test can SIGKILL it mid-turn.

    python -m tests.integration.agent_child <try_number> <tools_log>

The task's journal lives under ``[qwen] storage_base`` (no task state store here), as on a
deployment without 3.3's store; the emulator is ``qwen_default``. Each tool appends its name to
``tools_log`` so the test counts how often a tool really ran; ``step_two`` then waits for
``<tools_log>.go`` so the test can make turn 3 slow before it is sent.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenAgentOperator
from tests.support.batch_fakes import BatchTI

PROMPT = "Use step_one, then step_two, then step_three, and report what they said."


def main(try_number: int, tools_log: Path) -> None:
    def ran(name: str) -> str:
        with tools_log.open("a") as out:
            out.write(name + "\n")
        return f"{name} is done."

    def step_one() -> str:
        """The first step."""
        return ran("step_one")

    def step_two() -> str:
        """The second step."""
        done = ran("step_two")
        go = tools_log.with_suffix(".go")  # the test slows the emulator down, then lets turn 3 go
        for _ in range(600):
            if go.exists():
                break
            time.sleep(0.05)
        return done

    def step_three() -> str:
        """The third step."""
        return ran("step_three")

    with DAG("agent_kill", schedule=None) as dag:
        op = QwenAgentOperator(
            task_id="agent",
            prompt=PROMPT,
            tools=[step_one, step_two, step_three],
            parallel_tool_calls=False,
            max_completion_tokens=300,
        )
    ti = BatchTI(try_number, dag_id="agent_kill", task_id="agent")
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id, "dag": dag}
    op.render_template_fields(context)
    result = op.execute(context)
    print(json.dumps({"result": result, "xcom": ti.pushed}), flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), Path(sys.argv[2]))
