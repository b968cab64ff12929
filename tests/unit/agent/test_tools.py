"""Tools from typed functions: the schema sent, typed arguments back, bad definitions refused early."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import threading
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from airflow_provider_qwen.agent import Tool, ToolArgumentsError, ToolContext, as_tools, tool
from airflow_provider_qwen.client.errors import InvalidRequestError


class Window(BaseModel):
    """A span of days."""

    start: datetime.date
    days: int = Field(ge=1)


def sales(region: Literal["eu", "us"], day: datetime.date, window: Window, limit: int = 10) -> dict:
    """Sales of a region on a day.

    Totals only, no rows.

    :param region: the sales region
    :param day: the day, ISO format
        (a continued line)
    :param window: which days around it
    :return: totals
    """
    return {"region": region, "day": day, "window": window, "limit": limit}


CTX = ToolContext("run-1", "agent", None, 1, 1, "call-1")


def test_the_schema_comes_from_the_signature_and_the_docstring():
    made = tool(sales)
    assert made.name == "sales"
    assert made.description == "Sales of a region on a day."
    params = made.parameters
    assert params["required"] == ["region", "day", "window"]
    assert params["additionalProperties"] is False
    assert params["properties"]["region"] == {
        "enum": ["eu", "us"],
        "type": "string",
        "description": "the sales region",
    }
    assert params["properties"]["day"]["description"] == "the day, ISO format (a continued line)"
    assert params["properties"]["day"]["format"] == "date"
    window = params["properties"]["window"]
    assert window["properties"]["days"] == {"minimum": 1, "type": "integer"}  # $defs inlined
    assert "$defs" not in params
    assert "title" not in str(params)
    assert made.to_wire() == {
        "type": "function",
        "function": {"name": "sales", "parameters": params, "description": "Sales of a region on a day."},
    }


def test_arguments_arrive_as_typed_values():
    made = tool(sales)
    kwargs = made.parse('{"region": "eu", "day": "2026-03-01", "window": {"start": "2026-02-20", "days": 3}}')
    assert kwargs == {
        "region": "eu",
        "day": datetime.date(2026, 3, 1),
        "window": Window(start=datetime.date(2026, 2, 20), days=3),
        "limit": 10,
    }
    assert isinstance(kwargs["window"], Window)
    result = asyncio.run(made.invoke(kwargs, CTX))
    assert result["day"] == datetime.date(2026, 3, 1)


def test_invalid_arguments_list_every_violation_for_the_model():
    made = tool(sales)
    with pytest.raises(ToolArgumentsError) as caught:
        made.parse('{"region": "asia", "window": {"start": "2026-02-20", "days": 0}, "extra": 1}')
    text = caught.value.message
    assert "Invalid arguments for sales:" in text
    assert "region: Input should be 'eu' or 'us' (got 'asia')" in text
    assert "day: Field required" in text
    assert "window.days: Input should be greater than or equal to 1" in text
    assert "extra: Extra inputs are not permitted" in text
    assert len(caught.value.errors) == 4
    with pytest.raises(ToolArgumentsError, match="not valid JSON"):
        made.parse('{"region": ')
    with pytest.raises(ToolArgumentsError, match="must be a JSON object, got list"):
        made.parse("[1]")


def test_a_parameter_may_have_any_python_name():
    def odd(json: str, model_config: int, schema: bool = False) -> str:
        return f"{json}-{model_config}-{schema}"

    made = tool(odd)
    assert set(made.parameters["properties"]) == {"json", "model_config", "schema"}
    kwargs = made.parse('{"json": "a", "model_config": 2}')
    assert asyncio.run(made.invoke(kwargs, CTX)) == "a-2-False"


def test_the_context_parameter_is_left_out_of_the_schema_and_handed_in():
    seen = []

    def act(target: str, ctx: ToolContext) -> str:
        """Act.

        :param ctx: not shown to the model
        """
        seen.append(ctx)
        return target

    made = tool(act, requires_approval=True, timeout=5)
    assert list(made.parameters["properties"]) == ["target"]
    assert made.requires_approval is True
    assert made.timeout == 5.0
    assert asyncio.run(made.invoke(made.parse('{"target": "x"}'), CTX)) == "x"
    assert seen == [CTX]


def test_sync_tools_run_in_a_thread_of_their_own_and_async_tools_on_the_loop():
    def where() -> str:
        return threading.current_thread().name

    async def where_async() -> str:
        return threading.current_thread().name

    assert asyncio.run(tool(where).invoke({}, CTX)) == "qwen-tool-where"
    assert asyncio.run(tool(where_async).invoke({}, CTX)) == threading.current_thread().name


def test_the_decorator_forms():
    @tool
    def plain(x: int) -> int:
        return x

    @tool(name="renamed", description="Told.")
    def other(x: int) -> int:
        """Not this."""
        return x

    assert isinstance(plain, Tool)
    assert plain.name == "plain"
    assert plain.description is None
    assert (other.name, other.description) == ("renamed", "Told.")


def _no_hint(x):
    return x


def _star(*args: int) -> None: ...


def _stars(**kw: int) -> None: ...


def _positional(x: int, /) -> None: ...


class Opaque:
    pass


def _opaque(thing: Opaque) -> None: ...


def _documented(x: int) -> None:
    """Doc.

    :param y: a typo
    """


@pytest.mark.parametrize(
    ("func", "kwargs", "message"),
    [
        (_no_hint, {}, "parameter 'x' needs a type hint"),
        (_star, {}, r"\*args is not allowed"),
        (_stars, {}, r"\*\*kw is not allowed"),
        (_positional, {}, "positional-only"),
        (_opaque, {}, "unsupported parameter type"),
        (_documented, {}, ":param y: but there is no such parameter"),
        (sales, {"name": "bad name"}, "tool name 'bad name' is not allowed"),
        (sales, {"timeout": 0}, "timeout=0 must be more than 0"),
        (sales, {"timeout": "5"}, "must be a number of seconds"),
        (sales, {"requires_approval": "yes"}, "must be True or False"),
    ],
)
def test_bad_definitions_fail_when_the_tool_is_made(func, kwargs, message):
    with pytest.raises(InvalidRequestError, match=message):
        tool(func, **kwargs)


def test_as_tools_by_name_with_duplicates_invalid_names_and_too_many_refused():
    def a(x: int) -> int:
        return x

    tools = as_tools([a, tool(sales)])
    assert list(tools) == ["a", "sales"]
    with pytest.raises(InvalidRequestError, match="two tools are named 'a'"):
        as_tools([a, tool(a)])
    with pytest.raises(InvalidRequestError, match="128"):
        as_tools([dataclasses.replace(tool(a), name=f"t{i}") for i in range(129)])
    with pytest.raises(InvalidRequestError, match="is not a tool"):
        as_tools([Window])
    with pytest.raises(InvalidRequestError, match="give a list"):
        as_tools(a)  # type: ignore[arg-type]


def test_the_idempotency_key_holds_over_tries_and_differs_per_call():
    first = ToolContext("run-1", "agent", 2, 1, 3, "call-9")
    retry = ToolContext("run-1", "agent", 2, 4, 3, "call-9", airflow_context={"ti": "other"})
    assert first.idempotency_key == retry.idempotency_key
    assert len(first.idempotency_key) == 64
    others = [
        ToolContext("run-2", "agent", 2, 1, 3, "call-9"),
        ToolContext("run-1", "other", 2, 1, 3, "call-9"),
        ToolContext("run-1", "agent", 3, 1, 3, "call-9"),
        ToolContext("run-1", "agent", 2, 1, 4, "call-9"),
        ToolContext("run-1", "agent", 2, 1, 3, "call-8"),
        ToolContext("run-1", "agent", 2, 1, 3, "call-9", dag_id="another_dag"),
    ]
    assert len({c.idempotency_key for c in [first, *others]}) == 7
