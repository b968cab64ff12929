"""Refused before paying: a tool or output schema whose ``$ref`` does not resolve. Today such a schema
is sent (and, when the connection drops, sent again on every retry); now it fails at construction."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.structured import tool_spec
from airflow_provider_qwen.operators import QwenToolCallOperator

DANGLING = {
    "title": "Order",
    "type": "object",
    "properties": {"item": {"$ref": "#/$defs/Item"}, "note": {"type": "string"}},
    "$defs": {"Itme": {"type": "object", "properties": {"sku": {"type": "string"}}}},
}


def tool(parameters: dict[str, Any], name: str = "f") -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


@pytest.mark.parametrize(
    ("schema", "expected"),
    [
        pytest.param(
            DANGLING, ["'#/$defs/Item'", "properties.item", "points at nothing", "['Itme']"], id="defs"
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"$ref": "#/definitions/A"}}},
            ["'#/definitions/A'", "properties.a", "none)"],
            id="definitions",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"prefixItems": [{"$ref": "other.json#/x"}]}}},
            ["'other.json#/x'", "properties.a.prefixItems.0", "no file or URL is ever fetched"],
            id="file",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}},
            ["https://example.com/s.json", "no file or URL"],
            id="url",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"anyOf": [{"$ref": "#missing"}, {"type": "null"}]}}},
            ["'#missing'", "properties.a.anyOf.0", "anchor"],
            id="anchor",
        ),
        pytest.param(
            {"type": "object", "properties": {"a": {"$ref": "#/type"}}},
            ["'#/type'", "not a schema"],
            id="not-a-schema",
        ),
    ],
)
def test_an_unresolvable_ref_is_refused_when_the_tool_is_built(schema: dict[str, Any], expected: list[str]):
    with pytest.raises(InvalidRequestError) as caught:
        tool_spec(schema, name="order")
    message = str(caught.value)
    assert message.startswith("tool 'order': $ref ")
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({**DANGLING, "$defs": {"Item": {"type": "string"}}}, id="local-defs"),
        pytest.param(
            {"type": "object", "properties": {"a": {"type": "string"}, "b": {"$ref": "#/properties/a"}}},
            id="pointer",
        ),
        pytest.param({"type": "object", "properties": {"next": {"$ref": "#"}}}, id="recursive-root"),
        pytest.param(
            {
                "$id": "https://example.com/order",
                "type": "object",
                "properties": {"a": {"$ref": "https://example.com/order#/$defs/A"}},
                "$defs": {"A": {"type": "integer"}},
            },
            id="absolute-own-id",
        ),
        pytest.param(
            {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "object",
                "properties": {"a": {"$ref": "#/definitions/A"}},
                "definitions": {"A": {"type": "integer"}},
            },
            id="draft-07",
        ),
    ],
)
def test_refs_that_resolve_are_accepted(schema: dict[str, Any]):
    tool_spec(schema, name="ok")


def test_the_operator_refuses_a_dangling_ref_when_the_dag_is_parsed():
    with pytest.raises(InvalidRequestError, match=r"tool 'Order': \$ref '#/\$defs/Item'"):
        QwenToolCallOperator(task_id="t", prompt="hi", output_schema=DANGLING)
    with pytest.raises(InvalidRequestError, match=r"\$ref '#/\$defs/Item'"):
        QwenToolCallOperator(task_id="t", prompt="hi", tools=[DANGLING], tool_choice="auto")
    with pytest.raises(InvalidRequestError, match=r"\$ref '#/\$defs/Item'"):  # templated parameters too
        QwenToolCallOperator(task_id="t", prompt="hi", output_schema=DANGLING, temperature="{{ params.t }}")


def test_the_request_validator_refuses_raw_tools_and_response_formats():
    with pytest.raises(InvalidRequestError, match=r"tool 'order' parameters: \$ref '#/\$defs/Item'"):
        build_request("hi", tools=[tool(DANGLING, "order")])
    fmt = {"type": "json_schema", "json_schema": {"name": "order", "schema": DANGLING}}
    with pytest.raises(InvalidRequestError, match=r"response_format schema 'order': \$ref"):
        build_request("hi", model="alibaba/qwen3.6-flash", response_format=fmt)


def test_a_dangling_ref_is_not_sent_even_once_through_the_hook(mocker: Any):
    import respx
    from airflow.sdk import Connection

    from airflow_provider_qwen.hooks.qwen import QwenHook

    base = "http://127.0.0.1:8125/v1"
    conn = Connection(conn_id="qwen_refs", conn_type="qwen", host=base, password="sk-refs-1")
    mocker.patch.object(QwenHook, "get_connection", return_value=conn)
    with respx.mock(using="httpx", assert_all_mocked=True, assert_all_called=False) as router:
        route = router.post(f"{base}/chat/completions").mock(side_effect=httpx.RemoteProtocolError("drop"))
        with pytest.raises(InvalidRequestError, match=r"\$ref '#/\$defs/Item'"):
            QwenHook(qwen_conn_id="qwen_refs").chat("hi", tools=[tool(DANGLING)], tool_choice="auto")
    assert route.call_count == 0  # today: 3 calls, the first try and two retries of the dropped connection
