"""Is the emulator faithful? A client nobody here wrote (the official ``openai`` package) must parse every
answer; the published example responses and emulator answers of the same shape must parse through our
``ChatCompletion`` alike; every answer must match the response schemas of the published OpenAPI file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from airflow_provider_qwen.client.errors import BadRequestError, RateLimitError, ServerError, error_for_status
from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
from airflow_provider_qwen.client.pricing import CREDITS_PER_USD
from airflow_provider_qwen.testing.faults import Fault
from airflow_provider_qwen.testing.schema import chunk_errors, response_errors
from tests.support.client_helpers import bind

MODEL = "alibaba/qwen3.7-max"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
QUESTION = "Hi! What do you think about mankind? Answer in two sentences."
TICKET = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["category", "score"],
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "Ticket", "description": "File a ticket", "parameters": TICKET},
    },
    {"type": "function", "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}}},
]
CASES: dict[str, dict[str, Any]] = {
    "plain": {},
    "reasoning": {"reasoning_effort": "medium"},
    "reasoning-object": {"reasoning": {"max_tokens": 12}},
    "budget": {"max_completion_tokens": 3},
    "stop": {"stop": "mankind"},
    "logprobs": {"logprobs": True, "top_logprobs": 3},
    "forced-tool": {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "Ticket"}}},
    "parallel-tools": {"tools": TOOLS, "tool_choice": "required", "parallel_tool_calls": True},
    "auto-tool": {"tools": TOOLS, "reasoning_effort": "low"},
    "other-model": {"model": "alibaba/qwen-plus", "response_format": {"type": "json_object"}},
}


def openai_client(emulator: Any, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=emulator.base_url, api_key=emulator.api_key, max_retries=0, **kwargs)


def raw_chat(emulator: Any, params: dict[str, Any], fault: str | None = None) -> httpx.Response:
    headers = {"Authorization": "Bearer test-key"}
    if fault:
        headers["X-Emulator-Fault"] = fault
    body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], **params}
    return httpx.post(f"{emulator.base_url}/chat/completions", json=body, headers=headers, timeout=30)


def stream_chunks(response: httpx.Response) -> list[dict[str, Any]]:
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


# -- the official openai client ---------------------------------------------------------------------


def test_openai_client_parses_a_plain_answer_and_its_extras(qwen_emulator):
    client = openai_client(qwen_emulator)
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], reasoning_effort="low"
    )
    completion = raw.parse()

    assert raw.headers["x-inference-id"] == qwen_emulator.charges[0].inference_id
    assert completion.object == "chat.completion"
    assert completion.model == "qwen3.7-max"
    message = completion.choices[0].message
    assert message.role == "assistant"
    assert message.content.startswith("Hi!")
    assert message.reasoning_content  # kept as an extra field by the openai models
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.completion_tokens_details.reasoning_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    meta = completion.model_extra["meta"]["usage"]
    assert meta["credits_used"] == qwen_emulator.charges[0].credits
    assert int(raw.headers["x-aimlapi-credits-used"]) == meta["credits_used"]


def test_openai_client_streams_and_gets_usage(qwen_emulator):
    client = openai_client(qwen_emulator)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": QUESTION}],
        reasoning_effort="low",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasoning = "".join(
        getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices
    )
    whole = openai_client(qwen_emulator).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": QUESTION}], reasoning_effort="low"
    )
    assert content == whole.choices[0].message.content
    assert reasoning == whole.choices[0].message.reasoning_content
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert chunks[-1].model_extra["meta"] == whole.model_extra["meta"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_openai_client_tool_calls_whole_and_streamed(qwen_emulator):
    client = openai_client(qwen_emulator)
    forced = {"type": "function", "function": {"name": "Ticket"}}
    messages = [{"role": "user", "content": QUESTION}]
    completion = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice=forced
    )
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "Ticket"
    assert completion.choices[0].finish_reason == "tool_calls"

    arguments: dict[int, str] = {}
    names: dict[int, str] = {}
    for chunk in client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice=forced, stream=True
    ):
        for fragment in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments[fragment.index] = arguments.get(fragment.index, "") + (
                fragment.function.arguments or ""
            )
            if fragment.function.name:
                names[fragment.index] = fragment.function.name
    assert names == {0: "Ticket"}
    assert json.loads(arguments[0]) == json.loads(call.function.arguments)


def test_openai_client_maps_errors_and_honours_retry_after(qwen_emulator):
    client = openai_client(qwen_emulator)
    messages = [{"role": "user", "content": "hi"}]
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=0.1))
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model=MODEL, messages=messages)
    assert limited.value.body["statusCode"] == 429
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(
            base_url=qwen_emulator.base_url, api_key="wrong", max_retries=0
        ).chat.completions.create(model=MODEL, messages=messages)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=messages, temperature=7)
    qwen_emulator.add_faults(Fault.drop())
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model=MODEL, messages=messages)

    qwen_emulator.reset()
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=0.05), Fault.server_error(503))
    retrying = openai_client(qwen_emulator).with_options(max_retries=2)
    assert retrying.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content == "hi"
    assert [r.status for r in qwen_emulator.requests] == [429, 503, 200]
    assert len(qwen_emulator.charges) == 1


def test_openai_client_lists_models(qwen_emulator):
    ids = [model.id for model in openai_client(qwen_emulator).models.list()]
    assert MODEL in ids


# -- our own models: seed examples and emulator answers parse alike ---------------------------------


def populated(completion: ChatCompletion) -> dict[str, Any]:
    """Which convenience fields carry something, and the shape of what they carry."""
    usage = completion.usage
    return {
        "content": bool(completion.content),
        "reasoning_content": bool(completion.reasoning_content),
        "tool_calls": bool(completion.tool_calls),
        "refusal": completion.refusal is not None,
        "finish_reason": completion.finish_reason,
        "usage": usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens,
        "reasoning_tokens": bool(usage and usage.reasoning_tokens),
        "cost_reported": not completion.cost.estimated,
        "cost_exact": completion.cost.usd_spent * CREDITS_PER_USD == completion.cost.credits_used > 0,
        "model": completion.model,
    }


@pytest.mark.parametrize(
    ("fixture", "params"),
    [("qwen3.7-max-response.json", {"reasoning_effort": "high"}), ("schema-example-response.json", {})],
)
def test_seed_examples_and_emulator_answers_parse_alike(qwen_emulator, fixture, params):
    seed = json.loads((FIXTURES / fixture).read_text())
    response = raw_chat(qwen_emulator, params)
    ours = bind(
        ChatCompletion.model_validate(response.json()),
        requested_model=MODEL,
        inference_id=response.headers["x-inference-id"],
    )
    theirs = bind(ChatCompletion.model_validate(seed), requested_model=MODEL, inference_id="seed")

    assert populated(ours) == populated(theirs)
    assert response_errors(seed) == []
    assert response_errors(response.json()) == []
    assert ours.cost.credits_used == qwen_emulator.charges[0].credits
    assert ours.cost.usd_spent == qwen_emulator.charges[0].usd
    if fixture.startswith("qwen3.7-max"):  # the real service's own answer: same keys at every level
        wire, seed_wire = ours.to_wire(), theirs.to_wire()
        assert set(wire) == set(seed_wire)
        assert set(wire["choices"][0]["message"]) == set(seed_wire["choices"][0]["message"])
        assert set(wire["usage"]) == set(seed_wire["usage"])
        assert wire["model"] == seed_wire["model"] == "qwen3.7-max"


def test_emulator_usd_is_written_like_the_service(qwen_emulator):
    text = raw_chat(qwen_emulator, {"messages": [{"role": "user", "content": "Hi."}]}).text
    usd = json.loads(text)["meta"]["usage"]["usd_spent"]
    assert '"usd_spent":' + format(Decimal(str(usd)), "f") in text  # a plain number, no exponent
    assert "e-" not in text.split('"usd_spent":')[1][:15]


# -- every answer against the published schemas -----------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_answer_matches_the_response_schema(qwen_emulator, case):
    response = raw_chat(qwen_emulator, CASES[case])
    assert response.status_code == 200, response.text
    assert response_errors(response.json()) == []
    completion = ChatCompletion.model_validate(response.json())
    assert completion.choices
    assert completion.usage is not None
    openai.types.chat.ChatCompletion.model_validate(response.json())


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_stream_chunk_matches_the_stream_schema(qwen_emulator, case):
    params = {**CASES[case], "stream": True, "stream_options": {"include_usage": True}}
    chunks = stream_chunks(raw_chat(qwen_emulator, params))
    for chunk in chunks:
        assert chunk_errors(chunk) == [], chunk
        parsed = ChatCompletionChunk.model_validate(chunk)
        assert parsed.error is None
        openai.types.chat.ChatCompletionChunk.model_validate(chunk)
    assert (
        ChatCompletionChunk.model_validate(chunks[-1]).meta.usage.credits_used
        == qwen_emulator.charges[0].credits
    )


@pytest.mark.parametrize("fault", ["bad_json_args", "schema_invalid_args", "length"])
def test_shaped_faults_still_match_the_schema(qwen_emulator, fault):
    response = raw_chat(qwen_emulator, CASES["forced-tool"], fault=fault)
    assert response_errors(response.json()) == []
    for chunk in stream_chunks(
        raw_chat(qwen_emulator, {**CASES["forced-tool"], "stream": True}, fault=fault)
    ):
        assert chunk_errors(chunk) == []


def test_relaxed_stream_schema_still_catches_wrong_types():
    assert chunk_errors({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []})
    assert chunk_errors(
        {"id": 1, "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": []}
    )
    assert response_errors(
        {"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []}
    )


# -- error answers through our error tree --------------------------------------------------------


def test_error_answers_map_onto_our_error_tree(qwen_emulator):
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=2), Fault.html(502))
    for response, cls, fragment in [
        (raw_chat(qwen_emulator, {}), RateLimitError, "Too many requests"),
        (raw_chat(qwen_emulator, {}), ServerError, "502 Bad Gateway"),
        (
            raw_chat(qwen_emulator, {"temperature": 9}),
            BadRequestError,
            "temperature: 9 is greater than the maximum",
        ),
    ]:
        error = error_for_status(
            response.status_code, response.content, inference_id=response.headers["x-inference-id"]
        )
        assert type(error) is cls
        assert fragment in error.message
        assert error.inference_id == response.headers["x-inference-id"]
