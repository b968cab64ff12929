"""A decorated task's run with a scripted client: the function's return sent as written, after what
the decorator's own keywords give; refused before any request; carried over a pause."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import TaskAwaitingInput

from airflow_provider_qwen.decorators.base import RETURNED_KWARG, ReturnedValueError
from airflow_provider_qwen.operators.base import QwenBaseOperator
from tests.support.batch_fakes import BatchTI, with_async_client
from tests.support.operator_fakes import FakeTI, answer, run, with_client

START = pendulum.datetime(2025, 1, 1, tz="UTC")


@pytest.fixture(autouse=True)
def _storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'storage'}")


def make_dag(tmp_path, **kwargs) -> DAG:
    dag = DAG("exec_test", schedule=None, start_date=START, **kwargs)
    dag.fileloc = str(tmp_path / "exec_test.py")  # template files would be looked up next to it
    return dag


def sent(client) -> list[dict]:
    return client.bodies[-1]["messages"]


@pytest.mark.parametrize("text", ["{{ 7*7 }}", "{{ 100 * 3 }}", "{% raw %}", "summary.j2", "x.prompt"])
def test_the_returned_prompt_is_sent_as_written(mocker, tmp_path, text):
    (tmp_path / "summary.j2").write_text("a template file that must not be read")
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path) as dag:

        @task.qwen(max_completion_tokens=100)
        def ask() -> str:
            return text

        ask()
    result, ti = run(dag.get_task("ask"))
    assert result == "done"
    assert sent(client) == [{"role": "user", "content": text}]
    assert ti.pushed["qwen_cost"]["requests"] == 1


def test_system_prompt_and_messages_come_first_templated_then_the_returned_prompt(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("a"), answer("b"))
    with make_dag(tmp_path) as dag:
        history = [
            {"role": "user", "content": "I am {{ params.name }}"},
            {"role": "assistant", "content": "Hi"},
        ]

        @task.qwen(system_prompt="Speak {{ params.lang }}.", messages=history)
        def as_text() -> str:
            return "{{ params.name }}?"

        @task.qwen(system_prompt="Speak {{ params.lang }}.", messages=history)
        def as_messages() -> list:
            return [{"role": "user", "content": "{{ params.name }}!"}]

        as_text()
        as_messages()
    params = {"lang": "French", "name": "Ada"}
    run(dag.get_task("as_text"), params=params)
    run(dag.get_task("as_messages"), params=params)
    head = [
        {"role": "system", "content": "Speak French."},
        {"role": "user", "content": "I am Ada"},
        {"role": "assistant", "content": "Hi"},
    ]
    assert client.bodies[0]["messages"] == [*head, {"role": "user", "content": "{{ params.name }}?"}]
    assert client.bodies[1]["messages"] == [*head, {"role": "user", "content": "{{ params.name }}!"}]


def test_the_function_gets_its_rendered_arguments_and_the_context_values_it_names(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    seen = {}
    with make_dag(tmp_path) as dag:

        @task.qwen
        def ask(topic: str, run_id=None, params=None) -> str:
            seen.update(topic=topic, run_id=run_id, params=params)
            return f"About {topic}"

        ask("{{ params.topic }} {{ 7*7 }}")  # an argument is a template like any task argument
    run(dag.get_task("ask"), params={"topic": "tides"}, run_id="manual__7")
    assert seen == {"topic": "tides 49", "run_id": "manual__7", "params": {"topic": "tides"}}
    assert sent(client)[-1]["content"] == "About tides 49"


def test_an_async_function_is_awaited(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path) as dag:

        @task.qwen
        async def ask() -> str:
            return "from a coroutine {{ x }}"

        ask()
    run(dag.get_task("ask"))
    assert sent(client)[-1]["content"] == "from a coroutine {{ x }}"


@pytest.mark.parametrize(
    "value", [None, b"x", 3, {"role": "user", "content": "x"}, ["x"], [], "  ", [{"role": "system"}]]
)
def test_a_bad_return_fails_before_any_request_naming_the_task(mocker, tmp_path, value):
    client = with_client(mocker, QwenBaseOperator)
    with make_dag(tmp_path) as dag:

        @task.qwen
        def ask():
            return value

        ask()
    ti = FakeTI()
    with pytest.raises(ReturnedValueError, match=r"^@task\.qwen 'ask': "):
        run(dag.get_task("ask"), ti)
    assert client.requests == []
    assert ti.pushed == {}


def test_returned_messages_without_a_user_message_are_refused_before_sending(mocker, tmp_path):
    from airflow_provider_qwen.client.errors import InvalidRequestError

    client = with_client(mocker, QwenBaseOperator)
    with make_dag(tmp_path) as dag:

        @task.qwen
        def ask() -> list:
            return [{"role": "system", "content": "only a system message"}]

        ask()
    with pytest.raises(InvalidRequestError, match="no user or tool message"):
        run(dag.get_task("ask"))
    assert client.requests == []


def test_a_huge_prompt_is_sent_whole_and_never_logged(mocker, tmp_path, caplog):
    text = "word " * 400_000 + "{{ end }}"
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path) as dag:

        @task.qwen
        def ask() -> str:
            return text

        ask()
    run(dag.get_task("ask"))
    assert sent(client)[-1]["content"] == text
    assert "word word" not in caplog.text


def test_tool_call_returns_the_validated_value(mocker, tmp_path):
    from pydantic import BaseModel

    class Ticket(BaseModel):
        title: str
        priority: int

    client = with_client(
        mocker, QwenBaseOperator, answer(None, tool_calls=[("c1", "Ticket", {"title": "t", "priority": 2})])
    )
    with make_dag(tmp_path) as dag:

        @task.qwen_tool_call(output_model=Ticket)
        def extract(text: str) -> str:
            return f"Extract: {text}"

        extract("login {{ 1 + 1 }}")
    result, _ = run(dag.get_task("extract"))
    assert result == {"title": "t", "priority": 2}
    assert sent(client)[-1]["content"] == "Extract: login 2"


def test_batch_runs_its_prompt_over_the_returned_items_as_data(mocker, tmp_path):
    client = with_async_client(mocker)
    with make_dag(tmp_path) as dag:

        @task.qwen_batch(prompt="#{{ index }} {{ item }} ({{ run_id }})", progress_interval=60)
        def documents() -> tuple:
            return ("{{ 7*7 }}", "notes.j2")

        documents()
    result, ti = run(dag.get_task("documents"), BatchTI(), run_id="manual__3")
    assert client.prompts == ["#0 {{ 7*7 }} (manual__3)", "#1 notes.j2 (manual__3)"]
    assert len(result) == 2
    assert ti.pushed["qwen_batch"]["succeeded"] == 2


class _TI(FakeTI):
    id = "0190aaaa-0000-7000-8000-000000000000"
    dag_id, run_id, task_id, map_index = "exec_test", "manual__1", "ask", -1


def test_a_pause_carries_the_returned_prompt_and_the_resume_does_not_run_the_function(mocker, tmp_path):
    with_client(mocker, QwenBaseOperator, answer("draft"))
    mocker.patch("airflow.sdk.execution_time.hitl.upsert_hitl_detail")
    calls = []
    with make_dag(tmp_path) as dag:

        @task.qwen(require_approval=True)  # a parameter the decorator does not know: passed through
        def ask() -> str:
            calls.append(1)
            return "{{ 7*7 }} please"

        ask()
    with pytest.raises(TaskAwaitingInput) as parked:
        run(dag.get_task("ask"), _TI())
    assert parked.value.kwargs[RETURNED_KWARG] == "{{ 7*7 }} please"
    assert parked.value.kwargs["value"] == "draft"

    fresh = dag.get_task("ask")
    ti = _TI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1"}
    event = {"chosen_options": ["Approve"], "params_input": {}, "responded_by_user": {"name": "ana"}}
    kwargs = {**parked.value.kwargs, "event": event}
    assert fresh.resume_execution(parked.value.method_name, kwargs, context) == "draft"
    assert calls == [1]  # the function ran once, before the pause
    assert fresh.prompt == "{{ 7*7 }} please"


def test_a_resume_without_the_carried_value_runs_the_function_again(mocker, tmp_path):
    with_client(mocker, QwenBaseOperator)
    calls = []
    with make_dag(tmp_path) as dag:

        @task.qwen(require_approval=True)
        def ask() -> str:
            calls.append(1)
            return "again"

        ask()
    op = dag.get_task("ask")
    ti = _TI()
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "manual__1"}
    event = {"chosen_options": ["Approve"], "params_input": {}}
    assert op.resume_execution("execute_review", {"event": event, "value": "kept"}, context) == "kept"
    assert calls == [1]
    assert op.prompt == "again"


def test_a_batch_of_no_returned_items_sends_nothing(mocker, tmp_path):
    client = with_async_client(mocker)
    with make_dag(tmp_path) as dag:

        @task.qwen_batch(prompt="{{ item }}", progress_interval=60)
        def documents() -> list:
            return []

        documents()
    result, ti = run(dag.get_task("documents"), BatchTI())
    assert result == []
    assert client.prompts == []
    assert ti.pushed["qwen_cost"]["requests"] == 0


def test_a_run_budget_counts_decorated_tasks_mapped_or_not(tmp_path):
    from airflow_provider_qwen.operators.base import qwen_task_ids

    with make_dag(tmp_path) as dag:

        @task
        def plain() -> str:
            return "x"

        @task.qwen(dag_run_budget_usd=1)
        def ask(topic: str) -> str:
            return topic

        @task.qwen_batch(prompt="{{ item }}", dag_run_budget_usd=1)
        def documents() -> list:
            return ["a"]

        plain()
        ask("x")
        ask.override(task_id="mapped").expand(topic=["a", "b"])
        documents()
    assert sorted(qwen_task_ids(dag)) == ["ask", "documents", "mapped"]
