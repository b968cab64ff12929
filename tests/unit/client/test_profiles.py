"""Model profiles: every model of the line resolves with its window and fields; requests follow them."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.profiles import (
    FLAGSHIP_FIELDS,
    GENERIC,
    KNOWN_FIELDS,
    LISTED,
    PROFILES,
    ModelProfile,
    profile_for,
)
from airflow_provider_qwen.client.request import PROFILE_RANGES, RANGES, ChatRequest, build_request

# The team's shared folder sits beside the repository; a user's clone has none.
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "aimlapi"
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
JSON_SCHEMA = {
    "type": "json_schema",
    "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
}
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason="the published schemas live in the team's shared/ folder"
)


def refusal(**params: Any) -> str:
    with pytest.raises(InvalidRequestError) as caught:
        build_request(HI, **params)
    return str(caught.value)


def published_fields(model: str) -> dict[str, Any]:
    document = json.loads((SHARED / "models" / f"{model.removeprefix('alibaba/')}.json").read_text())
    body = document["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    return body["content"]["application/json"]["schema"]["properties"]


@pytest.mark.parametrize(("model", "window"), WINDOWS.items())
def test_each_model_of_the_line_resolves_by_id_and_alias_with_its_window(model: str, window: int):
    profile = profile_for(model)
    alias = model.removeprefix("alibaba/")
    assert profile is not GENERIC
    assert profile is profile_for(alias)
    assert model in profile.model_ids
    assert alias in profile.aliases
    assert profile.context_window == window


def test_the_profiles_cover_exactly_the_published_models_once():
    ids = [model for profile in PROFILES for model in profile.model_ids]
    assert sorted(ids) == sorted(WINDOWS)
    assert len({profile.family for profile in PROFILES}) == len(PROFILES)


def test_only_the_vendor_prefix_is_an_alias():
    assert profile_for("openrouter/qwen3.7-max") is GENERIC
    assert profile_for("alibaba/qwen3.7-max-preview") is GENERIC
    assert profile_for("") is GENERIC


def test_structured_output_follows_the_schema_and_defaults_hold():
    for profile in PROFILES:
        expected = "response_format" if "response_format" in profile.fields else "tool_call"
        assert profile.structured_output == expected, profile.family
        assert profile.index0_tool_calls is True, profile.family
    assert profile_for("alibaba/qwen3.8-max").structured_output == "tool_call"
    assert profile_for("alibaba/qwen3.6-flash").structured_output == "response_format"


def test_a_profile_is_frozen_and_refuses_a_structured_mode_it_cannot_serve():
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile_for("alibaba/qwen3.7-max").context_window = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="needs response_format"):
        ModelProfile("x", ("v/x",), frozenset({"tools"}), 1, "response_format")


def test_the_request_declares_every_field_of_every_profile():
    declared = set(ChatRequest.model_fields) - {"model", "messages", "extra_body"}
    assert declared == KNOWN_FIELDS


@pytest.mark.parametrize("model", ["alibaba/qwen3.7-max", "qwen3.8-max"])
def test_max_models_refuse_response_format_naming_field_value_and_the_way_to_structure(model: str):
    for params in (
        {"response_format": JSON_SCHEMA},
        {"extra_body": {"response_format": {"type": "json_object"}}},
    ):
        message = refusal(model=model, **params)
        assert "response_format={'type': " in message
        assert f"is not accepted by {model} (it has no JSON mode: use a forced tool call" in message
        assert f"it accepts: {', '.join(sorted(profile_for(model).fields))};" in message
        assert "response_format is a field of alibaba/qwen3.7-plus" in message


def test_a_bad_value_of_a_field_the_model_lacks_is_refused_as_not_accepted():
    message = refusal(model="alibaba/qwen3.7-max", response_format={"type": "nonsense"})
    assert "not accepted by alibaba/qwen3.7-max" in message
    assert "tag" not in message


def test_plus_models_accept_a_json_schema_response_format_and_thinking():
    request = build_request(
        HI,
        model="alibaba/qwen3.7-plus",
        response_format=JSON_SCHEMA,
        enable_thinking=True,
        thinking_budget=512,
    )
    body = request.to_body()
    assert body["response_format"] == JSON_SCHEMA
    assert body["enable_thinking"] is True
    assert body["thinking_budget"] == 512
    assert json.loads(ChatRequest.model_validate(body).model_dump_json(exclude_none=True)) == body


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        pytest.param(
            {"response_format": {"type": "json_schema", "json_schema": {"name": "my answer"}}},
            ["response_format.json_schema.name='my answer'", "a schema name is 1-64 characters"],
            id="schema-name",
        ),
        pytest.param(
            {"response_format": {"type": "json_schema"}},
            ["response_format.json_schema", "missing"],
            id="no-json-schema",
        ),
        pytest.param(
            {"response_format": {"type": "xml"}},
            ["response_format=", "'xml'", "'text', 'json_object', 'json_schema'"],
            id="format-type",
        ),
        pytest.param(
            {"response_format": {"type": "json_object", "schema": {}}},
            ["unknown field 'response_format.schema'"],
            id="format-extra",
        ),
        pytest.param(
            {"enable_thinking": "maybe"}, ["enable_thinking='maybe'", "boolean"], id="thinking-type"
        ),
        pytest.param(
            {"thinking_budget": 100},
            ["thinking_budget=100", "requires enable_thinking=True"],
            id="budget-alone",
        ),
        pytest.param(
            {"thinking_budget": 0, "enable_thinking": True}, ["thinking_budget=0", "1 or more"], id="budget"
        ),
        pytest.param({"frequency_penalty": 2.5}, ["frequency_penalty=2.5", "-2 to 2"], id="penalty"),
        pytest.param({"seed": 0}, ["seed=0", "1 or more"], id="seed"),
        pytest.param(
            {"search_options": {"search_strategy": "deep"}},
            ["search_options.search_strategy='deep'", "'turbo', 'max' or 'agent'"],
            id="search",
        ),
        pytest.param({"prediction": {"content": 5}}, ["prediction.content=5"], id="prediction"),
        pytest.param(
            {"logprobs": True},
            ["logprobs=True is not accepted by alibaba/qwen3.7-plus", "logprobs is a field of"],
            id="lacked",
        ),
        pytest.param(
            {"reasoning_effort": "low"}, ["not accepted", "it takes enable_thinking instead"], id="reasoning"
        ),
        pytest.param(
            {"extra_body": {"response_format": JSON_SCHEMA}},
            ["extra_body key 'response_format'", "pass it directly"],
            id="extra-own",
        ),
        pytest.param(
            {"extra_body": {"logit_bias": {"1": 1}}},
            ["extra_body logit_bias={'1': 1} is not accepted by alibaba/qwen3.7-plus"],
            id="extra-lacked",
        ),
    ],
)
def test_plus_fields_are_validated_by_their_schema(params: dict[str, Any], expected: list[str]):
    message = refusal(model="alibaba/qwen3.7-plus", **params)
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    ("model", "allowed", "lacked"),
    [
        (
            "alibaba/qwen3.6-plus",
            {"response_format": JSON_SCHEMA, "seed": 7, "logprobs": True},
            "enable_thinking",
        ),
        (
            "alibaba/qwen3.6-flash",
            {"response_format": {"type": "json_object"}, "enable_search": True},
            "reasoning",
        ),
        (
            "alibaba/qwen3.5-flash",
            {"top_k": 40, "min_p": 0.05, "top_a": 0.5, "echo": False},
            "max_completion_tokens",
        ),
        ("alibaba/qwen3.8-27b", {"response_format": JSON_SCHEMA, "provider": "alibaba"}, "tools"),
        (
            "alibaba/qwen3.6-27b",
            {"prediction": {"type": "content", "content": "x"}},
            "normalize_tool_schemas",
        ),
        ("alibaba/qwen3.8-max", {"enable_search": True, "search_options": {"forced_search": True}}, "seed"),
    ],
)
def test_each_model_takes_its_own_fields_and_refuses_the_ones_it_lacks(
    model: str, allowed: dict[str, Any], lacked: str
):
    body = build_request(HI, model=model, **allowed).to_body()
    assert {name: body[name] for name in allowed} == allowed
    value: Any = [{"type": "function", "function": {"name": "f"}}] if lacked == "tools" else 1
    assert f"{lacked}={value!r} is not accepted by {model}" in refusal(model=model, **{lacked: value})


def test_the_bounds_of_the_profile_fields_hold_at_their_edges():
    model = {"min_p": "alibaba/qwen3.5-flash", "top_a": "alibaba/qwen3.5-flash"}
    for name, (low, high) in PROFILE_RANGES.items():
        chosen = model.get(name, "alibaba/qwen3.7-plus")
        extra: dict[str, Any] = {"enable_thinking": True} if name == "thinking_budget" else {}
        step = 0.0001 if isinstance(low, float) else 1
        assert build_request(HI, model=chosen, **{name: low}, **extra).to_body()[name] == low
        with pytest.raises(InvalidRequestError, match=f"{name}="):
            build_request(HI, model=chosen, **{name: low - step}, **extra)
        if high is not None:
            build_request(HI, model=chosen, **{name: high}, **extra)
            with pytest.raises(InvalidRequestError, match=f"{name}="):
                build_request(HI, model=chosen, **{name: high + step}, **extra)


def test_an_unknown_model_keeps_the_flagship_field_set_and_any_extra_body():
    assert profile_for("vendor/other") is GENERIC
    assert GENERIC.context_window is None
    assert GENERIC.fields == FLAGSHIP_FIELDS == profile_for("alibaba/qwen3.7-max").fields
    assert GENERIC.structured_output == "tool_call"
    body = build_request(
        HI,
        model="vendor/other",
        logprobs=True,
        reasoning_effort="low",
        extra_body={"enable_thinking": True, "response_format": {"type": "json_object"}, "anything": 1},
    ).to_body()
    assert body["logprobs"] is True
    assert body["enable_thinking"] is True
    assert body["response_format"] == {"type": "json_object"}
    assert body["anything"] == 1
    message = refusal(model="vendor/other", response_format={"type": "json_object"})
    assert "not checked for vendor/other" in message
    assert "extra_body={'response_format': ...}" in message
    assert "pass it directly" in refusal(model="vendor/other", extra_body={"top_p": 0.5})


def test_a_known_model_passes_a_field_outside_every_schema_in_extra_body():
    body = build_request(HI, model="alibaba/qwen3.7-max", extra_body={"vendor_flag": True}).to_body()
    assert body["vendor_flag"] is True


def test_an_unknown_parameter_on_a_profiled_model_lists_what_it_accepts():
    message = refusal(model="alibaba/qwen3.7-plus", temprature=1)
    assert "unknown parameter 'temprature'" in message
    assert "alibaba/qwen3.7-plus accepts: enable_search, enable_thinking, extra_body" in message


@needs_shared
def test_profile_fields_match_the_published_schemas():
    assert {path.stem for path in (SHARED / "models").glob("*.json")} == {m.split("/")[1] for m in WINDOWS}
    for profile in PROFILES:
        for model in profile.model_ids:
            properties = published_fields(model)
            assert properties["model"]["enum"] == [model]
            assert set(properties) - {"model", "messages"} == profile.fields, model


@needs_shared
def test_profile_windows_match_the_published_model_list():
    table = (SHARED / "qwen-models.md").read_text()
    rows = re.findall(r"^\|\s*([^|\s]+)\s*\|\s*([\d,]+)\s*\|", table, flags=re.M)
    windows = {model: int(window.replace(",", "")) for model, window in rows}
    for profile in (*PROFILES, *LISTED):
        for model in profile.model_ids:
            assert windows[model] == profile.context_window, model
    chat = {m for m in windows if not re.search(r"image|wan|omni|vl-|captioner|embedding", m)}
    assert chat <= {m for p in (*PROFILES, *LISTED) for m in p.model_ids}  # every chat model has a window


@needs_shared
def test_field_bounds_match_the_published_schemas():
    for profile in PROFILES:
        properties = published_fields(profile.model_ids[0])
        for name, (low, high) in {**RANGES, **PROFILE_RANGES}.items():
            if "." in name or name not in properties:
                continue
            spec = properties[name]
            if name == "logit_bias":
                spec = spec["additionalProperties"]
            assert (spec.get("minimum"), spec.get("maximum")) == (low, high), (profile.family, name)


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
