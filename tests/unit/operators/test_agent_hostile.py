"""QwenAgentOperator against hostile tools, models and people: secrets in tool results, odd approval
events, wrong approval timeouts."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators.agent import QwenAgentOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from tests.support.cost_fakes import FakeRun, FakeStateStore
from tests.support.operator_fakes import answer, with_client

SECRET = "pg-password-hostile-7f3a9c1e5b"


@pytest.fixture
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(tmp_path / "qwen"))
    return tmp_path


def _run(op, ti, dag, state):
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": ti.run_id, "dag": dag}
    context["task_state_store"] = state
    op.render_template_fields(context)
    return op.execute(context)


def test_a_masked_secret_in_a_tool_result_is_not_journaled_nor_sent(mocker, storage):
    from airflow.sdk.log import mask_secret

    mask_secret(SECRET)  # as Airflow does for a connection's password the task read

    def connect(db: str) -> str:
        """Connect to a database."""
        raise RuntimeError(f"connection to postgresql://app:{SECRET}@{db}/x failed")

    def dump(db: str) -> dict:
        """The settings of a database."""
        return {"db": db, "password": SECRET}

    client = with_client(
        mocker,
        QwenBaseOperator,
        answer(None, tool_calls=[("c1", "connect", {"db": "prod"}), ("c2", "dump", {"db": "prod"})]),
        answer("done"),
    )
    with DAG("agent_hostile", schedule=None) as dag:
        op = QwenAgentOperator(task_id="agent", prompt="go", tools=[connect, dump], max_completion_tokens=100)
    state = FakeStateStore()
    ti = FakeRun("agent_hostile").ti("agent")

    assert _run(op, ti, dag, state) == "done"

    assert SECRET not in json.dumps(state.values)
    assert SECRET not in json.dumps(client.bodies)
    assert SECRET not in json.dumps(ti.pushed, default=str)
    assert "***" in json.dumps(client.bodies[1])
