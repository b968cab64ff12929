"""What the decorators check when the DAG is parsed: the operator's static parameters (mapped or
not), what the function returns being the prompt or items, and the TaskFlow conventions."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG, task
from pydantic import BaseModel

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.decorators.base import PARSE_CHECK_PROMPT

START = pendulum.datetime(2025, 1, 1, tz="UTC")


class Ticket(BaseModel):
    title: str


def make_dag(dag_id: str = "parse_test") -> DAG:
    return DAG(dag_id, schedule=None, start_date=START)


def test_a_decorated_task_needs_no_prompt_at_parse_time_and_keeps_none():
    with make_dag() as dag:

        @task.qwen(system_prompt="Be brief.", max_completion_tokens=100)
        def ask() -> str:
            return "hi"

        ask()
    op = dag.get_task("ask")
    assert op.prompt is None  # the stand-in of the parse-time check is gone
    assert op.custom_operator_name == "@task.qwen"
    assert op.multiple_outputs is False
    assert "op_kwargs" in op.template_fields
    assert "prompt" in op.template_fields
    assert PARSE_CHECK_PROMPT not in repr(vars(op))


@pytest.mark.parametrize(
    ("decorator", "kwargs", "error"),
    [
        ("qwen", {"temperature": "hot"}, "temperature"),
        ("qwen", {"max_cost_usd": "a lot"}, "max_cost_usd"),
        ("qwen", {"model": "alibaba/qwen3.7-max", "top_logprobs": 3}, "top_logprobs=3 requires logprobs"),
        ("qwen", {"stream": "yes"}, "stream='yes' must be a boolean"),
        ("qwen_tool_call", {}, "give exactly one of output_model, output_schema or tools"),
        ("qwen_tool_call", {"output_model": Ticket, "max_repairs": -1}, "max_repairs=-1"),
        ("qwen_batch", {"prompt": "{{ item }}", "max_concurrency": 0}, "max_concurrency=0"),
        ("qwen_batch", {"prompt": "{% if %}"}, "not a valid Jinja template"),
        ("qwen_agent", {"tools": [42]}, "42"),
    ],
)
def test_static_parameters_are_checked_at_parse_time(decorator, kwargs, error):
    def body():
        with make_dag():

            @getattr(task, decorator)(**kwargs)
            def f() -> str:
                return "x"

            f()

    with pytest.raises((InvalidRequestError, TypeError, ValueError)) as caught:
        body()
    assert error in str(caught.value)


@pytest.mark.parametrize(
    ("decorator", "kwargs", "error"),
    [
        ("qwen", {"prompt": "fixed"}, "@task.qwen 'f': prompt= is what the function returns"),
        ("qwen_tool_call", {"prompt": "x", "output_model": Ticket}, "@task.qwen_tool_call 'f': prompt="),
        ("qwen_agent", {"prompt": "x"}, "@task.qwen_agent 'f': prompt= is what the function returns"),
        ("qwen_batch", {"prompt": "{{ item }}", "items": ["a"]}, "items= is what the function returns"),
        ("qwen_batch", {}, "@task.qwen_batch 'f': needs prompt=, the template rendered for each item"),
    ],
)
def test_what_the_function_returns_cannot_also_be_given(decorator, kwargs, error):
    def f() -> str:
        return "x"

    with make_dag(), pytest.raises(InvalidRequestError) as caught:
        getattr(task, decorator)(**kwargs)(f)()
    assert error in str(caught.value)


def test_templated_parameters_wait_for_the_run():
    with make_dag() as dag:

        @task.qwen(temperature="{{ params.t }}", model="{{ params.model }}", max_cost_usd="{{ params.usd }}")
        def ask() -> str:
            return "x"

        ask()
    assert dag.get_task("ask").generation_params == {"temperature": "{{ params.t }}"}


def test_expand_checks_the_static_parameters_when_the_dag_is_parsed():
    with make_dag() as dag:

        @task.qwen(max_cost_usd="a lot")
        def ask(topic: str) -> str:
            return topic

        with pytest.raises(InvalidRequestError, match="max_cost_usd"):
            ask.expand(topic=["a", "b"])
        with pytest.raises(InvalidRequestError, match="max_cost_usd"):
            ask.expand_kwargs([{"topic": "a"}])
        with pytest.raises(InvalidRequestError, match="prompt= is what the function returns"):
            ask.override(prompt="x", max_cost_usd=1).expand(topic=["a"])
    assert dag.task_ids == []  # the scratch operators of the checks are not in the DAG


def test_expand_and_partial_map_over_the_function_arguments():
    with make_dag() as dag:

        @task
        def topics() -> list[str]:
            return ["a", "b"]

        @task.qwen(max_completion_tokens=200, max_cost_usd=0.05)
        def ask(topic: str, style: str) -> str:
            return f"{topic} {style}"

        ask.partial(style="short").expand(topic=topics())
        ask.override(task_id="literal").partial(style="long").expand(topic=["x", "y", "z"])
    mapped = dag.get_task("ask")
    assert mapped.partial_kwargs["max_cost_usd"] == 0.05
    assert mapped.partial_kwargs["op_kwargs"] == {"style": "short"}
    assert mapped.operator_class.__name__ == "QwenChatDecoratedOperator"
    assert mapped.operator_name == "@task.qwen"
    assert set(dag.task_ids) == {"topics", "ask", "literal"}


def test_expand_checks_the_parameters_when_a_partial_argument_is_an_upstream_output():
    with make_dag() as dag:

        @task
        def style() -> str:
            return "short"

        @task.qwen(max_cost_usd="a lot")
        def ask(topic: str, style: str) -> str:
            return topic

        chosen = style()
        with pytest.raises(InvalidRequestError, match="max_cost_usd"):
            ask.partial(style=chosen).expand(topic=["a"])
        ask.override(max_cost_usd=1).partial(style=chosen).expand(topic=["a"])
    assert dag.get_task("ask").upstream_task_ids == {"style"}


def test_expand_with_an_upstream_output_as_a_parameter_skips_the_parse_time_check():
    with make_dag() as dag:

        @task
        def choose() -> str:
            return "alibaba/qwen3.7-max"

        @task.qwen(max_completion_tokens=200)
        def ask(topic: str) -> str:
            return topic

        ask.override(model=choose()).expand(topic=["a"])
    assert set(dag.task_ids) == {"choose", "ask"}
    assert dag.get_task("ask").upstream_task_ids == {"choose"}


def test_expand_in_a_task_group_keeps_the_group():
    from airflow.sdk import TaskGroup

    with make_dag() as dag, TaskGroup("group"):

        @task.qwen(max_completion_tokens=200)
        def ask(topic: str) -> str:
            return topic

        ask.expand(topic=["a"])
    assert dag.task_ids == ["group.ask"]


def test_multiple_outputs_is_false_whatever_the_annotation_and_can_be_set():
    with make_dag() as dag:

        @task.qwen_tool_call(output_model=Ticket)
        def extract() -> dict:
            return "x"  # type: ignore[return-value]

        @task.qwen_tool_call(output_model=Ticket, multiple_outputs=True)
        def unrolled() -> str:
            return "x"

        extract()
        unrolled()
    assert dag.get_task("extract").multiple_outputs is False
    assert dag.get_task("unrolled").multiple_outputs is True


def test_one_decorator_applied_twice_gives_two_tasks():
    deco = task.qwen(max_completion_tokens=100)
    with make_dag() as dag:

        @deco
        def first() -> str:
            return "1"

        @deco
        def second() -> str:
            return "2"

        first()
        second()
    assert sorted(dag.task_ids) == ["first", "second"]


def test_bare_decorator_and_positional_misuse():
    with make_dag() as dag:

        @task.qwen
        def bare() -> str:
            return "x"

        bare()
    assert dag.task_ids == ["bare"]
    with pytest.raises(TypeError, match=r"@task\.qwen takes no positional argument but the function"):
        task.qwen("alibaba/qwen3.7-max")


def test_a_method_is_refused_like_any_taskflow_function():
    with pytest.raises(TypeError, match="does not support methods"):

        class Holder:
            @task.qwen
            def ask(self) -> str:
                return "x"


def test_the_docstring_becomes_the_task_doc():
    with make_dag() as dag:

        @task.qwen
        def ask() -> str:
            """Ask about tides."""
            return "x"

        ask()
    assert dag.get_task("ask").doc_md == "Ask about tides."
