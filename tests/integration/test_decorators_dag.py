"""The Qwen TaskFlow decorators under ``dag.test()`` against the emulator over real sockets.

Each decorator end to end (what the emulator received, the result and ``qwen_cost`` in XCom), the
function's return sent verbatim (never rendered), mapping with one ``qwen_cost`` per map index,
a deferred call resumed with the returned prompt, and the example DAG.
"""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pendulum
from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_provider_qwen.testing.schema import assert_valid_request
from tests.integration.conftest import load_dag

START = pendulum.datetime(2025, 1, 1, tz="UTC")
HOSTILE = ["{{ 7*7 }}", "{{ 100 * 3 }}", "{% raw %}", "{% if x %}y{% endif %}", "notes.j2", "a.prompt"]


class Ticket(BaseModel):
    """A support ticket's fields."""

    title: str
    priority: int


def _bodies(emulator):
    return [r.body for r in emulator.requests if r.path.endswith("/chat/completions")]


def _last_user_texts(emulator):
    return [body["messages"][-1]["content"] for body in _bodies(emulator)]


def _check_costs(result, emulator, task_ids):
    """Every qwen_cost of ``task_ids`` (mapped or not), adding up to what the emulator billed."""
    costs = [v for (t, k, _), v in result.xcoms.items() if t in task_ids and k == "qwen_cost"]
    credits, usd = emulator.total_charged()
    assert sum(c["credits_used"] for c in costs) == credits
    assert sum(Decimal(c["usd_spent"]) for c in costs) == usd
    assert all(c["estimated"] is False and c["requests"] >= 1 for c in costs)
    return costs


def _rendered_fields(dag_id, task_id):
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(RenderedTaskInstanceFields).filter_by(dag_id=dag_id, task_id=task_id).one()
        return row.rendered_fields


def test_qwen_sends_each_returned_prompt_verbatim_and_returns_the_text(run_dag, qwen_emulator):
    with DAG("qwen_deco_verbatim", schedule=None, start_date=START, params={"topic": "tides"}) as dag:

        @task.qwen(system_prompt="Answer about {{ params.topic }}.", max_completion_tokens=500)
        def ask(index: int) -> str:
            return HOSTILE[index]

        for index in range(len(HOSTILE)):
            ask.override(task_id=f"ask_{index}")(index)

        @task.qwen(max_completion_tokens=500)
        def converse() -> list:
            return [
                {"role": "user", "content": "Today is {{ ds }}, {% raw %}"},
                {"role": "assistant", "content": "{{ 7*7 }}"},
                {"role": "user", "content": [{"type": "text", "text": "nested {{ 100 * 3 }}"}]},
            ]

        converse()

        @task.qwen(max_completion_tokens=500)
        def from_argument(topic: str) -> str:
            return f"Tell me about {topic}"

        from_argument("{{ params.topic }}")  # an argument is templated like any task argument

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    bodies = _bodies(qwen_emulator)
    for body in bodies:
        assert_valid_request(body)
    asked = {b["messages"][-1]["content"] for b in bodies if b["messages"][0]["role"] == "system"}
    assert asked == set(HOSTILE)  # "{{ 7*7 }}" arrived as "{{ 7*7 }}", "notes.j2" is no file lookup
    system = {b["messages"][0]["content"] for b in bodies if b["messages"][0]["role"] == "system"}
    assert system == {"Answer about tides."}  # the decorator's own keywords are templated as usual
    (conversation,) = [b["messages"] for b in bodies if len(b["messages"]) == 3]
    assert conversation == [
        {"role": "user", "content": "Today is {{ ds }}, {% raw %}"},
        {"role": "assistant", "content": "{{ 7*7 }}"},
        {"role": "user", "content": [{"type": "text", "text": "nested {{ 100 * 3 }}"}]},
    ]
    assert "Tell me about tides" in _last_user_texts(qwen_emulator)
    assert _rendered_fields(dag.dag_id, "ask_0")["prompt"] == HOSTILE[0]  # the UI shows what was sent
    for index in range(len(HOSTILE)):
        text = result.xcom(f"ask_{index}")
        assert isinstance(text, str)
        assert text
    tasks = {f"ask_{i}" for i in range(len(HOSTILE))} | {"converse", "from_argument"}
    assert len(_check_costs(result, qwen_emulator, tasks)) == len(tasks)


def test_qwen_tool_call_returns_the_validated_value(run_dag, qwen_emulator):
    with DAG("qwen_deco_tool_call", schedule=None, start_date=START) as dag:

        @task.qwen_tool_call(output_model=Ticket, max_completion_tokens=500)
        def extract(ticket: str) -> str:
            return f"Extract the ticket: {ticket}"

        @task
        def check(value: dict) -> str:
            return Ticket.model_validate(value).model_dump_json()

        check(extract("Login page {{ 7*7 }} is down"))

        @task.qwen_tool_call(output_model=Ticket, multiple_outputs=True, max_completion_tokens=500)
        def fields() -> list:
            return [{"role": "user", "content": "Extract the ticket {{ 7*7 }}"}]

        fields()

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    bodies = _bodies(qwen_emulator)
    for body in bodies:
        assert_valid_request(body)
        assert body["tool_choice"] == {"type": "function", "function": {"name": "Ticket"}}
    assert sorted(_last_user_texts(qwen_emulator)) == [
        "Extract the ticket {{ 7*7 }}",
        "Extract the ticket: Login page 49 is down",  # an argument is rendered, the return is not
    ]
    value = result.xcom("extract")
    assert Ticket.model_validate(value).model_dump(mode="json") == value  # the value's JSON
    assert json.loads(result.xcom("check")) == value
    unrolled = result.xcom("fields")
    assert {key: result.xcom("fields", key) for key in ("title", "priority")} == unrolled
    _check_costs(result, qwen_emulator, {"extract", "fields"})


def test_qwen_batch_runs_its_prompt_over_the_returned_items(run_dag, qwen_emulator):
    items = ["first {{ 7*7 }}", "second {% raw %}", "third.j2"]
    with DAG("qwen_deco_batch", schedule=None, start_date=START) as dag:

        @task.qwen_batch(prompt="Summarise: {{ item }} ({{ index }})", max_completion_tokens=500)
        def documents(count: int) -> list[str]:
            return items[:count]

        documents(3)

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    assert sorted(_last_user_texts(qwen_emulator)) == sorted(
        f"Summarise: {item} ({index})" for index, item in enumerate(items)
    )
    results = result.xcom("documents")
    assert len(results) == 3
    assert all(isinstance(r, str) and r for r in results)
    assert result.xcom("documents", "qwen_batch")["succeeded"] == 3
    (cost,) = _check_costs(result, qwen_emulator, {"documents"})
    assert cost["requests"] == 3


def get_weather(city: str) -> dict:
    """The weather in a city.

    :param city: the city's name
    """
    return {"city": city, "forecast": "sunny, 24 C"}


def test_qwen_agent_calls_its_python_tool(run_dag, qwen_emulator):
    with DAG("qwen_deco_agent", schedule=None, start_date=START) as dag:

        @task.qwen_agent(tools=[get_weather], max_turns=4, max_completion_tokens=500)
        def plan(city: str) -> str:
            return f"Use get_weather for {city}, then say what to wear. {{{{ 7*7 }}}}"

        plan("Paris")

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    first, second = _bodies(qwen_emulator)
    assert first["messages"][-1]["content"] == "Use get_weather for Paris, then say what to wear. {{ 7*7 }}"
    assert [t["function"]["name"] for t in first["tools"]] == ["get_weather"]
    assert second["messages"][-1]["role"] == "tool"
    answer = result.xcom("plan")
    assert "sunny, 24 C" in answer  # the tool's result reached the model
    assert result.xcom("plan", "qwen_agent")["tool_calls"] == 1
    (cost,) = _check_costs(result, qwen_emulator, {"plan"})
    assert cost["requests"] == 2


def test_expand_maps_the_function_with_one_qwen_cost_per_map_index(run_dag, qwen_emulator):
    with DAG("qwen_deco_expand", schedule=None, start_date=START) as dag:

        @task
        def topics() -> list[str]:
            return ["tides {{ 7*7 }}", "volcanoes", "comets"]

        @task.qwen(max_completion_tokens=400, max_cost_usd=0.05)  # operator parameters, partial-style
        def explain(topic: str, style: str) -> str:
            return f"Explain {topic} in a {style} way"

        explained = explain.partial(style="short").expand(topic=topics())

        @task
        def collect(texts: list) -> int:
            return len(list(texts))

        collect(explained)

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    assert sorted(_last_user_texts(qwen_emulator)) == sorted(
        f"Explain {t} in a short way" for t in ["tides {{ 7*7 }}", "volcanoes", "comets"]
    )  # an upstream's output mapped in is data too
    assert all(b["max_completion_tokens"] == 400 for b in _bodies(qwen_emulator))
    texts = result.mapped("explain")
    assert len(texts) == 3
    assert all(isinstance(t, str) and t for t in texts)
    costs = result.mapped("explain", "qwen_cost")
    assert len(costs) == 3
    assert all(c["requests"] == 1 for c in costs)
    _check_costs(result, qwen_emulator, {"explain"})
    assert result.xcom("collect") == 3


def test_expand_over_zero_items_sends_nothing(run_dag, qwen_emulator):
    with DAG("qwen_deco_expand_empty", schedule=None, start_date=START) as dag:

        @task
        def nothing() -> list[str]:
            return []

        @task.qwen(max_completion_tokens=400)
        def explain(topic: str) -> str:
            return f"Explain {topic}"

        explain.expand(topic=nothing())

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    assert result.task_states[("explain", -1)] == "skipped"
    assert _bodies(qwen_emulator) == []
    assert result.mapped("explain", "qwen_cost") == []


def test_a_deferred_call_resumes_with_the_returned_prompt(run_dag, qwen_emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__RESUME_GUARD_SECONDS", "0")  # dag.test() runs the trigger inline
    with DAG("qwen_deco_deferred", schedule=None, start_date=START) as dag:

        @task.qwen(deferrable=True, max_completion_tokens=500)  # a parameter the decorator never names
        def ask() -> str:
            return "Deferred {{ 7*7 }} and notes.j2"

        ask()

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    assert _last_user_texts(qwen_emulator) == ["Deferred {{ 7*7 }} and notes.j2"]
    assert isinstance(result.xcom("ask"), str)
    (cost,) = _check_costs(result, qwen_emulator, {"ask"})
    assert cost["requests"] == 1


def test_a_function_returning_a_bad_value_fails_before_any_request(run_dag, qwen_emulator):
    with DAG("qwen_deco_refused", schedule=None, start_date=START) as dag:

        @task.qwen(max_completion_tokens=400, retries=0)
        def nothing_returned() -> None:
            pass

        @task.qwen_batch(prompt="{{ item }}", retries=0)
        def not_items() -> int:
            return 3

        nothing_returned()
        not_items()

    result = run_dag(dag)

    assert result.state == "failed"
    assert result.task_states[("nothing_returned", -1)] == "failed"
    assert result.task_states[("not_items", -1)] == "failed"
    assert qwen_emulator.requests == []


def test_the_api_key_is_in_no_log_and_no_xcom(run_dag, qwen_emulator, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    key = qwen_emulator.api_key
    with DAG("qwen_deco_secrets", schedule=None, start_date=START) as dag:

        @task.qwen(max_completion_tokens=400)
        def ask() -> str:
            return "hello"

        @task.qwen(max_completion_tokens=400, retries=0)
        def bad() -> bytes:
            return b"bytes are refused"

        ask()
        bad()

    result = run_dag(dag)

    assert result.task_states[("ask", -1)] == "success"
    assert result.task_states[("bad", -1)] == "failed"
    out, err = capfd.readouterr()
    log = "\n".join([out, err, caplog.text])
    assert "bytes (17 bytes)" in log  # the refusal is in the log, by type and size
    assert "bytes are refused" not in log  # never the value
    assert key not in log
    assert key not in json.dumps(list(result.xcoms.values()), default=str)


def test_the_taskflow_example_dag(run_dag, qwen_emulator):
    result = run_dag(load_dag("taskflow_summaries.py"))

    assert result.state == "success", result.task_states
    bodies = _bodies(qwen_emulator)
    assert len(bodies) == 4  # three summaries, one digest
    for body in bodies:
        assert_valid_request(body)
    sent = "\n".join(json.dumps(b["messages"]) for b in bodies)
    assert "{{ user.name }} and {% raw %}" in sent  # the article's text arrived as written
    digest = result.xcom("digest")
    assert set(digest) == {"headline", "highlights"}
    assert result.xcom("publish") == digest
    assert len(result.mapped("summarise", "qwen_cost")) == 3
    _check_costs(result, qwen_emulator, {"summarise", "digest"})
