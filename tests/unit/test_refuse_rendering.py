"""Refused before paying, in the operators: a template that left a message without text (None from a
missing XCom or param, an empty render), and switches and parameters of the wrong kind."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.operators import QwenChatOperator, QwenToolCallOperator
from airflow_provider_qwen.operators.base import QwenBaseOperator
from tests.support.operator_fakes import FakeTI, answer, run, with_client

PULL = "ti.xcom_pull(task_ids='fetch')"
SCHEMA = {"title": "Topic", "type": "object", "properties": {"topic": {"type": "string"}}}


def make_dag(tmp_path, **kwargs) -> DAG:
    dag = DAG("refuse_test", schedule=None, start_date=pendulum.datetime(2024, 1, 1), **kwargs)
    dag.fileloc = str(tmp_path / "refuse_test.py")
    return dag


def refused(op, ti=None, **context) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        run(op, ti, **context)
    return str(caught.value)


# -- a template that rendered to None ----------------------------------------------------------


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
def test_a_prompt_from_a_missing_xcom_is_refused_naming_the_expression(mocker, tmp_path, native):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path, render_template_as_native_obj=native):
        op = QwenChatOperator(task_id="t", system_prompt="Be brief.", prompt="{{ " + PULL + " }}")
    message = refused(op, FakeTI(pulled={}))
    assert "prompt has no value" in message
    assert "{{ " + PULL + " }} was None" in message
    assert client.requests == []  # today: "None" is sent (text) or a system-only request (native)


def test_none_inside_a_longer_prompt_is_refused_too(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="Summarise:\n{{ " + PULL + " }}")
    message = refused(op, FakeTI(pulled={}))
    assert "{{ " + PULL + " }} was None" in message
    assert "'Summarise:\\nNone'" in message
    assert client.requests == []


@pytest.mark.parametrize("native", [False, True], ids=["text", "native"])
def test_a_message_from_a_missing_param_names_its_position(mocker, tmp_path, native):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path, render_template_as_native_obj=native):
        op = QwenChatOperator(
            task_id="t",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "{{ params.doc }}"},
            ],
        )
    message = refused(op, params={"doc": None})
    assert "messages[1].content has no value" in message
    assert "{{ params.doc }} was None" in message
    assert client.requests == []


def test_a_prompt_file_rendering_none_names_the_expression(mocker, tmp_path):
    (tmp_path / "ask.prompt").write_text("Topic: {{ params.topic }}\n")
    client = with_client(mocker, QwenBaseOperator, answer(None, tool_calls=[("c", "Topic", "{}")]))
    with make_dag(tmp_path):
        op = QwenToolCallOperator(task_id="t", prompt="ask.prompt", output_schema=SCHEMA)
    assert "{{ params.topic }} was None" in refused(op, params={"topic": None})
    assert client.requests == []


def test_the_word_none_is_sent_when_it_is_text_or_asked_for(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("ok"), answer("ok"), answer("ok"))
    with make_dag(tmp_path):
        written = QwenChatOperator(task_id="a", prompt="Is None a value in {{ params.lang }}?")
        forced = QwenChatOperator(task_id="b", prompt="Value: {{ params.v | string }}")
        data = QwenChatOperator(task_id="c", prompt="{{ params.doc }}")
    run(written, params={"lang": "Python"})
    run(forced, params={"v": None})
    run(data, params={"doc": "None of the above."})  # a value that merely contains the word
    assert [body["messages"][-1]["content"] for body in client.bodies] == [
        "Is None a value in Python?",
        "Value: None",
        "None of the above.",
    ]


# -- empty prompts -----------------------------------------------------------------------------


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_an_empty_static_prompt_fails_when_the_dag_is_parsed(prompt):
    with pytest.raises(InvalidRequestError, match=r"prompt=.* has no text"):
        QwenChatOperator(task_id="t", system_prompt="Be brief.", prompt=prompt)


def test_a_prompt_rendering_empty_is_refused_naming_the_expression(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", system_prompt="Be brief.", prompt="{{ params.q }} ")
    message = refused(op, params={"q": ""})
    assert "prompt=' ' has no text" in message
    assert "{{ params.q }} was ''" in message
    assert client.requests == []


def test_an_empty_rendered_user_message_is_refused_by_the_validator(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", messages=[{"role": "user", "content": "{{ params.q }}"}])
    assert "messages[0].content=''" in refused(op, params={"q": ""})
    assert client.requests == []


# -- switches and parameters of the wrong kind -------------------------------------------------


@pytest.mark.parametrize("flag", ["stream", "include_reasoning", "fail_on_truncation"])
def test_chat_switches_must_be_booleans(flag):
    with pytest.raises(InvalidRequestError, match=f"{flag}='yes' must be a boolean"):
        QwenChatOperator(task_id="t", prompt="hi", **{flag: "yes"})


def test_tool_call_switches_must_be_booleans():
    with pytest.raises(InvalidRequestError, match="fail_on_truncation='yes'"):
        QwenToolCallOperator(task_id="t", prompt="hi", output_schema=SCHEMA, fail_on_truncation="yes")
    with pytest.raises(InvalidRequestError, match="parallel_tool_calls='yes'"):
        QwenToolCallOperator(task_id="t", prompt="hi", tools=[SCHEMA], parallel_tool_calls="yes")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param({"temperature": True}, "temperature=True", id="temperature"),
        pytest.param({"max_completion_tokens": True}, "max_completion_tokens=True", id="max-tokens"),
        pytest.param({"logprobs": "yes"}, "logprobs='yes'", id="logprobs"),
    ],
)
def test_static_parameters_of_the_wrong_kind_fail_at_parse_time(params, expected):
    with pytest.raises(InvalidRequestError, match=expected.replace("(", r"\(")):
        QwenChatOperator(task_id="t", prompt="hi", **params)


def test_a_templated_boolean_rendering_to_a_number_is_refused(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path, render_template_as_native_obj=True):
        op = QwenChatOperator(task_id="t", prompt="hi", temperature="{{ params.t }}")
    assert "temperature=True: a boolean is not a number" in refused(op, params={"t": True})
    assert client.requests == []


def test_rendered_numbers_and_booleans_read_back_from_text(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("ok"))
    with make_dag(tmp_path):
        op = QwenChatOperator(
            task_id="t",
            prompt="hi",
            temperature="{{ params.t }}",
            logprobs="{{ params.lp }}",
            top_logprobs="{{ params.n }}",
        )
    run(op, params={"t": 0.3, "lp": True, "n": 2})
    body = client.bodies[0]
    assert (body["temperature"], body["logprobs"], body["top_logprobs"]) == (0.3, True, 2)


def test_a_templated_boolean_that_renders_other_text_is_refused(mocker, tmp_path):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    with make_dag(tmp_path):
        op = QwenChatOperator(task_id="t", prompt="hi", logprobs="{{ params.lp }}")
    assert "logprobs='yes': must be a boolean" in refused(op, params={"lp": "yes"})
    assert client.requests == []
