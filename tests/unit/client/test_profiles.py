"""Model profiles: every model of the line resolves, with its window, fields and structured-output mode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.profiles import GENERIC, PROFILES, profile_for
from airflow_provider_qwen.client.request import build_request

SHARED = Path(__file__).resolve().parents[4] / "shared" / "aimlapi" / "models"
WINDOWS = {
    "alibaba/qwen3.8-max": 1_000_000,
    "alibaba/qwen3.7-max": 1_000_000,
    "alibaba/qwen3.7-plus": 1_000_000,
    "alibaba/qwen3.6-plus": 1_000_000,
    "alibaba/qwen3.6-flash": 1_000_000,
    "alibaba/qwen3.5-flash": 262_144,
    "alibaba/qwen3.8-27b": 262_144,
    "alibaba/qwen3.6-27b": 262_144,
}
HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("model", "window"), WINDOWS.items())
def test_each_model_of_the_line_resolves_by_id_and_alias_with_its_window(model: str, window: int):
    profile = profile_for(model)
    assert profile is not GENERIC
    assert profile is profile_for(model.split("/", 1)[1])
    assert profile.context_window == window


def test_max_models_refuse_response_format_and_name_the_way_to_structure():
    with pytest.raises(InvalidRequestError, match="no JSON mode: structured output comes from a forced tool"):
        build_request(
            HI, model="alibaba/qwen3.7-max", extra_body={"response_format": {"type": "json_object"}}
        )
    assert profile_for("alibaba/qwen3.8-max").structured_output == "tool_call"


def test_plus_models_accept_response_format_and_thinking_and_refuse_what_they_lack():
    body = build_request(
        HI,
        model="alibaba/qwen3.7-plus",
        extra_body={"response_format": {"type": "json_schema"}, "enable_thinking": False},
    ).to_body()
    assert body["enable_thinking"] is False
    assert profile_for("alibaba/qwen3.7-plus").structured_output == "response_format"
    with pytest.raises(InvalidRequestError, match=r"logprobs=True is not accepted by alibaba/qwen3\.7-plus"):
        build_request(HI, model="alibaba/qwen3.7-plus", logprobs=True)


def test_a_model_without_tools_says_how_it_structures_output():
    with pytest.raises(InvalidRequestError, match="it has no tool calling"):
        build_request(
            HI,
            model="alibaba/qwen3.8-27b",
            tools=[{"type": "function", "function": {"name": "f"}}],
        )


def test_an_unknown_model_keeps_the_flagship_field_set_and_any_extra_body():
    assert profile_for("vendor/other") is GENERIC
    assert GENERIC.context_window is None
    body = build_request(
        HI, model="vendor/other", logprobs=True, extra_body={"enable_thinking": True}
    ).to_body()
    assert body["logprobs"] is True


@pytest.mark.skipif(not SHARED.is_dir(), reason="the published schemas live in the team's shared/ folder")
def test_profile_fields_match_the_published_schemas():
    def request_schema(node: object) -> dict | None:
        if isinstance(node, dict):
            if {"model", "messages"} <= set(node.get("properties", {})):
                return node
            children = node.values()
        elif isinstance(node, list):
            children = node
        else:
            return None
        for child in children:
            found = request_schema(child)
            if found:
                return found
        return None

    for profile in PROFILES:
        for model in profile.model_ids:
            schema = request_schema(json.loads((SHARED / f"{model.split('/')[1]}.json").read_text()))
            assert schema is not None, model
            assert set(schema["properties"]) - {"model", "messages"} == profile.fields, model


def test_operators_do_not_add_a_gateway_field_the_model_lacks():
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenToolCallOperator

    class Node(BaseModel):
        name: str
        children: list[Node] = []

    Node.model_rebuild()
    op = QwenToolCallOperator(task_id="t", prompt="?", output_model=Node, model="alibaba/qwen3.6-27b")
    body = op.build_request(HI).to_body()
    assert "normalize_tool_schemas" not in body
    flagship = QwenToolCallOperator(task_id="f", prompt="?", output_model=Node, model="alibaba/qwen3.7-max")
    assert flagship.build_request(HI).to_body()["normalize_tool_schemas"] is True
