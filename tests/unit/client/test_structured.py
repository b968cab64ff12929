"""Structured output: tools from models/schemas/functions, normalisation, validation, repair turns."""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from pydantic import BaseModel, Field

from airflow_provider_qwen.client.errors import InvalidRequestError, StructuredOutputError
from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.repair import RepairLoop, repair_calls_messages, repair_messages
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.structured import (
    check_tool_calls,
    normalize_schema,
    parse_arguments,
    structured_value,
    tool_spec,
    tool_specs,
)


class Address(BaseModel):
    """A postal address."""

    street: str
    title: str | None = Field(default=None, description="Mr, Ms ...")


class Line(BaseModel):
    sku: str
    qty: int = Field(ge=1)


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Invoice(BaseModel):
    """An invoice extracted from a document."""

    number: str
    issued: date
    billing: Address = Field(description="where the bill goes")
    lines: list[Line]
    pet: Annotated[Cat | Dog, Field(discriminator="kind")] | None = None


class Node(BaseModel):
    name: str
    children: list[Node] = []


def completion(*calls: tuple[str, str, str], content: str | None = None, finish: str = "tool_calls"):
    """A response with the given (id, name, arguments) tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = [
            {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
            for cid, name, args in calls
        ]
    return ChatCompletion.model_validate(
        {"id": "x", "choices": [{"index": 0, "message": message, "finish_reason": finish}]}
    )


GOOD_INVOICE = {
    "number": "A-1",
    "issued": "2024-05-01",
    "billing": {"street": "1 Main St"},
    "lines": [{"sku": "x", "qty": 2}],
}


def walk_keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for v in node.values() for k in walk_keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in walk_keys(v)}
    return set()


# -- tool definitions and normalisation -------------------------------------------------------


def test_model_tool_is_inlined_without_titles_and_keeps_descriptions():
    spec = tool_spec(Invoice)
    tool = spec.to_tool()
    params = tool["function"]["parameters"]
    assert tool["function"]["name"] == "Invoice"
    assert tool["function"]["description"] == "An invoice extracted from a document."
    assert not spec.needs_gateway_normalization
    keys = walk_keys(params)
    assert {"$ref", "$defs", "discriminator"}.isdisjoint(keys)
    # "title" survives only as a property name, never as a schema keyword
    assert "title" in params["properties"]["billing"]["properties"]
    assert all("title" not in sub for sub in params["properties"]["billing"]["properties"].values())
    assert params["properties"]["billing"]["description"] == "where the bill goes"
    assert params["properties"]["lines"]["items"]["properties"]["qty"]["minimum"] == 1
    assert "strict" not in tool["function"]
    # the inlined schema still accepts a valid invoice and refuses a wrong one
    jsonschema.validate(GOOD_INVOICE, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**GOOD_INVOICE, "lines": [{"sku": "x", "qty": "many"}]}, params)


def test_recursive_model_keeps_defs_and_asks_gateway_to_normalise():
    spec = tool_spec(Node)
    params = spec.parameters
    assert spec.needs_gateway_normalization
    assert params["type"] == "object"
    assert "$defs" in params
    assert "$ref" not in params
    assert "title" not in walk_keys(params)
    jsonschema.validate({"name": "a", "children": [{"name": "b"}]}, params)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "a", "children": [{"nom": "b"}]}, params)


def test_normalize_schema_inlines_refs_with_sibling_keywords():
    schema = {
        "$defs": {"P": {"title": "P", "type": "object", "description": "generic"}},
        "type": "object",
        "properties": {"p": {"$ref": "#/$defs/P", "description": "specific"}},
    }
    normalised, recursive = normalize_schema(schema)
    assert normalised == {
        "type": "object",
        "properties": {"p": {"type": "object", "description": "specific"}},
    }
    assert recursive is False


@pytest.mark.parametrize(
    "source",
    [
        {"title": "get_weather", "type": "object", "properties": {"city": {"type": "string"}}},
        {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        },
    ],
    ids=["schema", "function-definition", "tool"],
)
def test_schema_dict_forms(source):
    tool = tool_spec(source).to_tool()
    assert tool == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }


def weather(city: str, unit: Literal["C", "F"] = "C", days: Annotated[int, Field(ge=1, le=7)] = 1) -> str:
    """Forecast for a city.

    :param city: the city name, e.g. Paris
    :param unit: temperature unit
    """
    raise AssertionError("tools are described, never called")


def test_function_tool_from_signature_and_docstring():
    spec = tool_spec(weather)
    function = spec.to_tool()["function"]
    assert function["name"] == "weather"
    assert function["description"] == "Forecast for a city."
    props = function["parameters"]["properties"]
    assert function["parameters"]["required"] == ["city"]
    assert props["city"] == {"type": "string", "description": "the city name, e.g. Paris"}
    assert props["unit"]["enum"] == ["C", "F"]
    assert props["unit"]["default"] == "C"
    assert props["days"]["maximum"] == 7
    assert spec.check_arguments('{"city": "Oslo"}') == {"city": "Oslo", "unit": "C", "days": 1}
    with pytest.raises(StructuredOutputError) as info:
        spec.check_arguments('{"city": "Oslo", "days": 9}')
    assert info.value.errors == ["days: Input should be less than or equal to 7 (got 9)"]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (lambda x: x, "needs a type hint"),
        (42, "cannot be a tool"),
        ({"title": "bad name!", "type": "object"}, "tool name 'bad name!' is not allowed"),
        ({"title": "t", "type": "object", "properties": {"a": {"type": "nope"}}}, "not a valid JSON schema"),
        ({"title": "t", "type": "array"}, "must be a JSON object schema"),
    ],
)
def test_bad_tool_sources_are_refused_clearly(source, message):
    with pytest.raises(InvalidRequestError, match=message):
        tool_spec(source)


def test_tool_names_must_be_unique():
    with pytest.raises(InvalidRequestError, match="two tools are named 'weather'"):
        tool_specs([weather, {"name": "weather", "parameters": {"type": "object"}}])


def test_tools_pass_request_validation_and_published_schema():
    specs = tool_specs([Invoice, Node, weather])
    request = build_request(
        "hi",
        tools=[s.to_tool() for s in specs.values()],
        tool_choice=specs["Invoice"].forced_choice(),
        parallel_tool_calls=False,
    )
    body = request.to_body()
    assert [t["function"]["name"] for t in body["tools"]] == ["Invoice", "Node", "weather"]
    try:
        from tests.schema_check import assert_valid_request  # the client engineer's helper
    except ImportError:
        pytest.skip("tests/schema_check.py not available yet")
    assert_valid_request(body)


# -- parsing and validating calls -------------------------------------------------------------


def test_structured_value_is_json_safe_model_dump():
    spec = tool_spec(Invoice)
    value = structured_value(completion(("c1", "Invoice", json.dumps(GOOD_INVOICE))), spec)
    assert value["issued"] == "2024-05-01"  # a date, dumped in JSON mode
    assert value["billing"] == {"street": "1 Main St", "title": None}
    json.dumps(value)


def test_schema_invalid_arguments_list_every_violation():
    spec = tool_spec(Invoice)
    bad = {**GOOD_INVOICE, "issued": "yesterday", "lines": [{"sku": "x", "qty": 0}]}
    with pytest.raises(StructuredOutputError) as info:
        structured_value(completion(("c1", "Invoice", json.dumps(bad))), spec)
    errors = info.value.errors
    assert len(errors) == 2
    assert errors[0].startswith("issued: Input should be a valid date")
    assert errors[1] == "lines.0.qty: Input should be greater than or equal to 1 (got 0)"


def test_json_schema_validation_with_jsonschema():
    schema = {
        "title": "person",
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    spec = tool_spec(schema)
    assert spec.check_arguments('{"name": "Ada", "age": 36}') == {"name": "Ada", "age": 36}
    with pytest.raises(StructuredOutputError) as info:
        spec.check_arguments('{"name": 1, "age": -1, "x": true}')
    assert info.value.errors == [
        "(root): Additional properties are not allowed ('x' was unexpected)",
        "age: -1 is less than the minimum of 0",
        "name: 1 is not of type 'string'",
    ]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [("", {}), ("  ", {}), ('{"a": 1}', {"a": 1}), ('"{\\"a\\": 1}"', {"a": 1})],
)
def test_parse_arguments_tolerates_empty_and_double_encoded(arguments, expected):
    assert parse_arguments(arguments) == expected


def test_invalid_json_is_a_violation_with_position():
    with pytest.raises(StructuredOutputError) as info:
        parse_arguments('{"a": 1,')
    assert info.value.errors[0].startswith("arguments are not valid JSON: Expecting property name")


def test_no_call_and_truncation_are_explained():
    spec = tool_spec(Invoice)
    with pytest.raises(StructuredOutputError) as info:
        structured_value(completion(content="I think it is A-1", finish="stop"), spec)
    assert info.value.errors == ["no call of Invoice: it answered 'I think it is A-1'"]
    with pytest.raises(StructuredOutputError) as info:
        structured_value(completion(("c1", "Invoice", '{"number": "A'), finish="length"), spec)
    assert "finish_reason='length'" in info.value.errors[-1]


def test_check_tool_calls_per_tool_and_unknown_names():
    specs = tool_specs([weather, Line])
    calls = check_tool_calls(
        completion(
            ("a", "weather", '{"city": "Rome"}'),
            ("b", "Line", '{"sku": "s"}'),
            ("c", "launch", "{}"),
        ),
        specs,
    )
    assert [c.result() for c in calls if c.ok] == [
        {"name": "weather", "arguments": {"city": "Rome", "unit": "C", "days": 1}, "id": "a"}
    ]
    assert calls[1].errors == ["qty: Field required"]
    assert calls[2].errors == ["there is no tool named 'launch'; the tools are ['Line', 'weather']"]


# -- repair turns -----------------------------------------------------------------------------


def test_repair_turn_echoes_call_and_answers_its_id():
    spec = tool_spec(Invoice)
    answer = completion(("call_9", "Invoice", '{"number": 5}'))
    answer.choices[0].message.reasoning_content = "secret thoughts"
    with pytest.raises(StructuredOutputError) as info:
        structured_value(answer, spec)
    turn = repair_messages(answer, info.value.errors, tool_name="Invoice")
    assistant, tool = turn
    assert assistant == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "Invoice", "arguments": '{"number": 5}'},
            }
        ],
    }
    assert tool["role"] == "tool"
    assert tool["tool_call_id"] == "call_9"
    assert "number: Input should be a valid string (got 5)" in tool["content"]
    assert "Call Invoice again" in tool["content"]
    assert "secret thoughts" not in json.dumps(turn)
    # the turn is a valid request continuation, tool still forced
    build_request(
        [{"role": "user", "content": "extract"}, *turn],
        tools=[spec.to_tool()],
        tool_choice=spec.forced_choice(),
    )


def test_repair_turn_without_a_call_asks_for_one():
    turn = repair_messages(completion(content="no"), ["no call of Invoice"], tool_name="Invoice")
    assert turn[0] == {"role": "assistant", "content": "no"}
    assert turn[1]["role"] == "user"
    assert "Call Invoice now." in turn[1]["content"]


def test_repair_calls_answers_every_call():
    specs = tool_specs([weather])
    answer = completion(("a", "weather", '{"city": "Rome"}'), ("", "weather", "{}"))
    checked = check_tool_calls(answer, specs)
    turn = repair_calls_messages(answer, checked)
    assert [m["role"] for m in turn] == ["assistant", "tool", "tool"]
    assert turn[1] == {"role": "tool", "tool_call_id": "a", "content": "Accepted."}
    assert turn[2]["tool_call_id"] == "call_1"  # a missing id gets a stand-in the echo shares
    assert turn[0]["tool_calls"][1]["id"] == "call_1"
    assert "city: Field required" in turn[2]["content"]


def test_repair_loop_repairs_then_accepts():
    spec = tool_spec(Invoice)
    seen: list[tuple[list[str], int]] = []
    loop = RepairLoop(
        spec, [{"role": "user", "content": "go"}], max_repairs=2, on_repair=lambda e, t: seen.append((e, t))
    )
    assert loop.accept(completion(("c1", "Invoice", "{not json"))) is False
    assert len(loop.messages) == 3  # the user turn, the echoed call, the tool answer with the errors
    assert loop.messages[-1]["role"] == "tool"
    assert seen[0][1] == 0
    assert loop.accept(completion(("c2", "Invoice", json.dumps(GOOD_INVOICE)))) is True
    assert loop.value["issued"] == "2024-05-01"


def test_repair_loop_gives_up_after_max_repairs():
    loop = RepairLoop(tool_spec(Invoice), [{"role": "user", "content": "go"}], max_repairs=1)
    assert loop.accept(completion(("c1", "Invoice", "{}"))) is False
    with pytest.raises(StructuredOutputError, match="still invalid after 1 repair") as raised:
        loop.accept(completion(("c2", "Invoice", "{}")))
    assert raised.value.errors
