"""QwenAgentOperator against hostile tools, models and people: secrets in tool results, odd approval
events, wrong approval timeouts."""

from __future__ import annotations

import datetime
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


@pytest.mark.parametrize(
    ("event", "approved", "reason"),
    [
        ({}, False, None),
        ({"chosen_options": ["Approve", "Reject"]}, False, None),  # both: not an approval
        ({"chosen_options": "Approve"}, False, None),  # not a list
        ({"chosen_options": ["approve"]}, False, None),  # unknown option
        ({"chosen_options": [None]}, False, None),
        ({"chosen_options": None, "params_input": None}, False, None),
        ({"chosen_options": ["Approve"], "params_input": ["x"]}, True, None),
        ({"chosen_options": ["Approve"], "params_input": "reason"}, True, None),
        ({"chosen_options": ["Reject"], "params_input": {"reason": {"a": 1}}}, False, None),
        ({"chosen_options": ["Reject"], "params_input": {"reason": "  too much  "}}, False, "too much"),
        (
            {"chosen_options": ["Approve"], "timedout": True},
            False,
            "no decision came within approval_timeout",
        ),
    ],
)
def test_an_approval_event_of_any_shape_is_a_decision(event, approved, reason):
    from airflow_provider_qwen.operators.agent import approval_decision

    decision = approval_decision(event)
    assert (decision.approved, decision.reason) == (approved, reason)


@pytest.mark.parametrize("timeout", [datetime.timedelta(0), datetime.timedelta(seconds=-5)])
def test_an_approval_timeout_that_is_not_positive_fails_at_parse_time(timeout):
    with pytest.raises(ValueError, match="approval_timeout"):
        QwenAgentOperator(task_id="a", prompt="go", approval_timeout=timeout)


@pytest.mark.parametrize("timeout", [60, "1h", 1.5])
def test_an_approval_timeout_that_is_not_a_timedelta_fails_at_parse_time(timeout):
    with pytest.raises(TypeError, match="approval_timeout"):
        QwenAgentOperator(task_id="a", prompt="go", approval_timeout=timeout)


def test_the_approval_page_shows_hidden_characters_escaped_and_no_template_rendered():
    from airflow_provider_qwen.agent import PendingCall
    from airflow_provider_qwen.operators.agent import approval_body

    arguments = json.dumps({"path": "invoice\u202efdp.exe", "note": "{{ 7*7 }}\u200b\x85"})
    body = approval_body([PendingCall("c1", "delete_file", arguments, 1, "Delete a file.")])

    for hidden in ("\u202e", "\u200b", "\x85"):
        assert hidden not in body
    assert "invoice\\u202efdp.exe" in body
    assert "{{ 7*7 }}" in body
    assert "49" not in body
    fenced = body.split("```json\n", 1)[1].split("\n```", 1)[0]
    assert json.loads(fenced) == json.loads(arguments)  # still the exact arguments
