"""Prompt rendering the Airflow way: template files by name, params, and run-time text kept as data."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenChatOperator, QwenToolCallOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from tests.support.operator_fakes import FakeTI, answer, run, with_client

DOCUMENT = "Quarterly notes. The template {{ 7*7 }} and {% if x %}tags{% endif %} are plain text here."


def make_dag(tmp_path, **kwargs) -> DAG:
    dag = DAG("render_test", schedule=None, start_date=pendulum.datetime(2024, 1, 1), **kwargs)
    dag.fileloc = str(tmp_path / "render_test.py")  # template files next to the DAG are found
    return dag


def sent_messages(client) -> list[dict]:
    return client.bodies[-1]["messages"]


def test_prompt_file_next_to_the_dag_is_found_by_name(mocker, tmp_path):
    (tmp_path / "summary.prompt").write_text("Summarise the news about {{ params.topic }}.\n")
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="summary.prompt")
    run(op, params={"topic": "tides"})
    assert sent_messages(client) == [{"role": "user", "content": "Summarise the news about tides."}]


def test_prompt_file_on_template_searchpath_and_system_prompt_file(mocker, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "system.j2").write_text("You are terse.")
    (prompts / "ask.jinja2").write_text("Run {{ run_id }}")
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path, template_searchpath=[str(prompts)]):
        op = QwenChatOperator(task_id="t", prompt="ask.jinja2", system_prompt="system.j2")
    run(op, run_id="manual__2024")
    assert sent_messages(client) == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Run manual__2024"},
    ]


def test_missing_prompt_file_fails_before_any_request(mocker, tmp_path):
    from jinja2 import TemplateNotFound

    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="nowhere.prompt")
    with pytest.raises(TemplateNotFound):
        run(op)
    assert client.requests == []


def test_txt_name_in_an_inline_prompt_is_not_a_file_lookup(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="Please read notes.txt")
    run(op)
    assert sent_messages(client)[0]["content"] == "Please read notes.txt"


def test_param_driven_prompt_and_element_wise_messages(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path, params={"lang": "French", "name": "Ada"}):
        op = QwenChatOperator(
            task_id="t",
            messages=[
                {"role": "user", "content": "My name is {{ params.name }}."},
                {"role": "assistant", "content": "Hello {{ params.name }}!"},
            ],
            prompt="Answer in {{ params.lang | upper }}.",
        )
    run(op, params={"lang": "French", "name": "Ada"})
    assert sent_messages(client) == [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada!"},
        {"role": "user", "content": "Answer in FRENCH."},
    ]


def test_document_from_xcom_reaches_the_model_verbatim(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("done"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="Summarise:\n{{ ti.xcom_pull(task_ids='fetch') }}")
    run(op, FakeTI(pulled={"fetch": DOCUMENT}))
    assert sent_messages(client)[0]["content"] == "Summarise:\n" + DOCUMENT


def test_document_from_params_reaches_the_model_verbatim(mocker, tmp_path):
    client = with_client(
        mocker, QwenBaseOperator, answer(None, tool_calls=[("c", "Topic", '{"topic": "notes"}')])
    )
    with make_dag(tmp_path):
        op = QwenToolCallOperator(
            task_id="t",
            messages=[{"role": "user", "content": "{{ params.doc }}"}],
            output_schema={"title": "Topic", "type": "object", "properties": {"topic": {"type": "string"}}},
        )
    run(op, params={"doc": DOCUMENT})
    assert sent_messages(client) == [{"role": "user", "content": DOCUMENT}]


def test_model_output_is_not_rendered(mocker, tmp_path):
    with_client(mocker, QwenBaseOperator, answer("Use {{ 7*7 }} in Jinja."))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="?")
    result, _ = run(op)
    assert result == "Use {{ 7*7 }} in Jinja."
