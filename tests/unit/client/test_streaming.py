"""Streaming: SSE -> chunks -> the same ChatCompletion a whole answer gives; cuts and error chunks."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.client.assembly import StreamAssembler
from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.errors import (
    AuthenticationError,
    InvalidRequestError,
    InvalidResponseError,
    StreamError,
)
from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
from airflow_provider_qwen.client.request import build_request
from tests.support.client_helpers import (
    BASE_URL,
    CHAT_URL,
    KEY,
    MODEL,
    CutStream,
    Recorder,
    Sleeps,
    chunk,
    completion,
    cut_sse,
    ok,
    sse,
    sse_body,
    status,
)

USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 8,
    "total_tokens": 20,
    "completion_tokens_details": {"reasoning_tokens": 3},
}
META = {"usage": {"credits_used": 150, "usd_spent": 0.000075}}
USAGE_CHUNK = {"id": "chatcmpl-s", "choices": [], "usage": USAGE, "meta": META}


@pytest.fixture
def qwen() -> QwenClient:
    with QwenClient(KEY, base_url=BASE_URL, retry=Sleeps().policy()) as client:
        yield client


def streamed(api, *replies) -> Recorder:
    calls = Recorder(*replies)
    api.post(CHAT_URL).mock(side_effect=calls)
    return calls


def assemble(*chunks: dict) -> ChatCompletion:
    assembler = StreamAssembler()
    for data in chunks:
        assembler.add(ChatCompletionChunk.model_validate(data))
    return assembler.completion()


def call(call_id: str | None, name: str | None, arguments: str | None, index: int = 0) -> dict:
    fragment: dict = {"index": index, "function": {}}
    if call_id:
        fragment["id"] = call_id
        fragment["type"] = "function"
    if name:
        fragment["function"]["name"] = name
    if arguments is not None:
        fragment["function"]["arguments"] = arguments
    return fragment


# -- assembly -------------------------------------------------------------------------------------


def test_reasoning_then_content(api, qwen):
    calls = streamed(
        api,
        sse(
            chunk({"role": "assistant", "reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}, finish="stop"),
            USAGE_CHUNK,
        ),
    )
    stream = qwen.stream("Say hello")
    chunks = list(stream)
    result = stream.completion
    assert len(chunks) == 5
    assert result.reasoning_content == "Thinking."
    assert result.content == "Hello"
    assert result.finish_reason == "stop"
    assert result.usage.reasoning_tokens == 3
    assert result.cost.credits_used == 150
    assert result.cost.usd_spent == Decimal("0.000075")
    assert result.cost.estimated is False
    assert result.inference_id == "inf-s"
    assert result.model == MODEL
    body = calls.bodies[0]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert calls.requests[0].headers["accept"] == "text/event-stream"


def test_tool_call_fragments_are_merged_by_index():
    result = assemble(
        chunk({"role": "assistant", "tool_calls": [call("c1", "get_weather", "")]}),
        chunk({"tool_calls": [call(None, None, '{"city": ')]}),
        chunk({"tool_calls": [call("c2", "get_time", '{"tz"', index=1)]}),
        chunk({"tool_calls": [call(None, None, '"Paris"}')]}),
        chunk({"tool_calls": [call(None, None, ': "UTC"}', index=1)]}, finish="tool_calls"),
    )
    assert [(c.id, c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("c1", "get_weather", '{"city": "Paris"}'),
        ("c2", "get_time", '{"tz": "UTC"}'),
    ]
    assert all(c.type == "function" for c in result.tool_calls)
    assert result.content is None
    assert result.finish_reason == "tool_calls"


def test_index_zero_quirk_new_id_starts_a_new_call():
    result = assemble(
        chunk({"tool_calls": [call("c1", "lookup", '{"q": ')]}),
        chunk({"tool_calls": [call(None, None, '"a"}')]}),
        chunk({"tool_calls": [call("c2", "lookup", '{"q": "b"}')]}),
        chunk({"tool_calls": [call("c3", "lookup", "{")]}),
        chunk({"tool_calls": [call(None, None, '"q": "c"}')]}, finish="tool_calls"),
    )
    assert [(c.id, c.function.arguments) for c in result.tool_calls] == [
        ("c1", '{"q": "a"}'),
        ("c2", '{"q": "b"}'),
        ("c3", '{"q": "c"}'),
    ]


def test_index_zero_quirk_other_name_without_id_starts_a_new_call():
    result = assemble(
        chunk({"tool_calls": [call(None, "first", '{"a": 1}')]}),
        chunk({"tool_calls": [call(None, "second", '{"b": 2}')]}, finish="tool_calls"),
    )
    assert [(c.function.name, c.function.arguments) for c in result.tool_calls] == [
        ("first", '{"a": 1}'),
        ("second", '{"b": 2}'),
    ]


def test_repeated_id_and_name_on_every_fragment_stay_one_call():
    result = assemble(
        chunk({"tool_calls": [call("c1", "f", '{"x"')]}),
        chunk({"tool_calls": [call("c1", "f", ": 1}")]}, finish="tool_calls"),
    )
    assert [(c.id, c.function.arguments) for c in result.tool_calls] == [("c1", '{"x": 1}')]


def test_usage_on_the_finish_chunk_and_meta_on_the_final_one():
    result = assemble(
        chunk({"content": "ok"}, finish="stop", usage=USAGE),
        {"id": "", "choices": [], "meta": META},
    )
    assert result.usage.total_tokens == 20
    assert result.meta.usage.credits_used == 150
    assert result.id == "chatcmpl-s"  # later empty ids do not overwrite


def test_lenient_chunks_unknown_keys_missing_delta_unknown_finish_reason():
    result = assemble(
        {
            "id": "x1",
            "created": 5,
            "model": "qwen3.7-max",
            "system_fingerprint": "fp",
            "choices": [{"index": 0}],
        },
        {"id": "", "choices": [{"index": 0, "delta": {"content": "hi", "audio": None}, "provider": "p"}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "end_turn"}]},
    )
    assert result.content == "hi"
    assert result.finish_reason == "end_turn"
    assert result.model_extra["system_fingerprint"] == "fp"
    assert (result.id, result.created, result.served_model) == ("x1", 5, "qwen3.7-max")


def test_logprobs_are_concatenated():
    result = assemble(
        chunk({"content": "a"}, logprobs=None)
        | {"choices": [{"index": 0, "delta": {"content": "a"}, "logprobs": {"content": [{"token": "a"}]}}]},
        {"choices": [{"index": 0, "delta": {"content": "b"}, "logprobs": {"content": [{"token": "b"}]}}]},
        chunk({}, finish="stop"),
    )
    assert result.choices[0].logprobs == {"content": [{"token": "a"}, {"token": "b"}]}


def test_a_stream_assembles_to_the_same_completion_as_a_whole_answer(api, qwen):
    message = {
        "role": "assistant",
        "content": "Done.",
        "reasoning_content": "Plan.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}],
    }
    whole = completion(
        choices=[{"index": 0, "message": message, "finish_reason": "tool_calls", "logprobs": None}],
        usage=USAGE,
        meta=META,
        id="chatcmpl-s",
        created=7,
    )
    streamed(
        api,
        ok(whole, inference_id="inf-s"),
        sse(
            chunk({"role": "assistant", "reasoning_content": "Plan."}, created=7),
            chunk({"content": "Done."}),
            chunk({"tool_calls": [call("c1", "f", '{"a"')]}),
            chunk({"tool_calls": [call(None, None, ": 1}")]}, finish="tool_calls"),
            USAGE_CHUNK,
        ),
    )
    plain = qwen.chat("go")
    stream = qwen.stream("go")
    result = stream.get_final_completion()
    keys = ("id", "created", "model", "choices", "usage", "meta")
    assert {k: result.to_wire()[k] for k in keys} == {k: plain.to_wire()[k] for k in keys}
    assert (result.cost, result.inference_id, result.model) == (plain.cost, plain.inference_id, plain.model)


# -- the SSE wire ---------------------------------------------------------------------------------


def test_eof_without_done_after_a_finish_reason_is_the_end(api, qwen):
    streamed(api, sse(chunk({"content": "ok"}, finish="stop"), USAGE_CHUNK, done=False))
    assert qwen.stream("hi").get_final_completion().content == "ok"


def test_comment_lines_and_keep_alives_are_ignored(api, qwen):
    streamed(
        api,
        sse(
            ": OPENROUTER PROCESSING\n\n",
            chunk({"content": "a"}),
            ":keep-alive\n\n",
            "data: \n\n",
            chunk({"content": "b"}, finish="stop"),
        ),
    )
    stream = qwen.stream("hi")
    assert [c.choices[0].delta.content for c in stream] == ["a", "b"]
    assert stream.completion.content == "ab"


def test_crlf_line_endings_and_events_after_done(api, qwen):
    body = (
        sse_body(chunk({"content": "x"}, finish="stop")).replace(b"\n", b"\r\n") + b"data: {bad json}\r\n\r\n"
    )
    api.post(CHAT_URL).mock(
        return_value=httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    )
    assert qwen.stream("hi").get_final_completion().content == "x"  # nothing after [DONE] counts


def test_an_error_chunk_raises_with_the_partial_answer(api, qwen):
    streamed(
        api,
        sse(
            chunk({"content": "Hal"}),
            {"error": {"message": "upstream overloaded", "type": "server_error", "code": 503}},
        ),
    )
    stream = qwen.stream("hi")
    first = next(stream)
    with pytest.raises(StreamError) as caught:
        next(stream)
    error = caught.value
    assert "upstream overloaded" in str(error)
    assert error.inference_id == "inf-s"
    assert error.partial.content == "Hal"
    assert error.partial.usage is None
    assert error.partial.inference_id == "inf-s"
    assert first.choices[0].delta.content == "Hal"
    assert stream.response.is_closed


def test_an_sse_error_event_raises(api, qwen):
    streamed(api, sse(chunk({"content": "a"}), "event: error\ndata: rate limited upstream\n\n"))
    with pytest.raises(StreamError, match="rate limited upstream"):
        qwen.stream("hi").get_final_completion()


def test_a_cut_stream_raises_with_partial_and_no_retry(api, qwen):
    calls = streamed(api, cut_sse(chunk({"reasoning_content": "hm"}), chunk({"content": "Hel"})), ok())
    stream = qwen.stream("hi")
    with pytest.raises(StreamError) as caught:
        list(stream)
    error = caught.value
    assert isinstance(error.__cause__, httpx.RemoteProtocolError)
    assert "was cut after 2 chunks" in str(error)
    assert error.partial.content == "Hel"
    assert error.partial.reasoning_content == "hm"
    assert error.partial.usage is None
    assert error.partial.cost.estimated is True
    assert error.inference_id == "inf-cut"
    assert error.client_request_id == calls.request_ids[0]
    assert len(calls.requests) == 1
    assert stream.response.is_closed
    with pytest.raises(RuntimeError, match="not finished"):
        _ = stream.completion


def test_a_cut_after_the_usage_chunk_keeps_usage_and_cost_on_partial(api, qwen):
    streamed(api, cut_sse(chunk({"content": "ok"}), USAGE_CHUNK))
    with pytest.raises(StreamError) as caught:
        qwen.stream("hi").get_final_completion()
    partial = caught.value.partial
    assert partial.usage.total_tokens == 20
    assert partial.cost.credits_used == 150


def test_a_clean_eof_with_no_finish_reason_and_no_done_is_a_cut(api, qwen):
    streamed(api, sse(chunk({"content": "Hel"}), done=False))
    with pytest.raises(StreamError, match="without \\[DONE\\] or a finish_reason") as caught:
        qwen.stream("hi").get_final_completion()
    assert caught.value.partial.content == "Hel"


def test_a_timeout_mid_stream(api, qwen):
    class Stalls(CutStream):
        def __iter__(self):
            yield self.data
            raise httpx.ReadTimeout("timed out")

    streamed(
        api,
        httpx.Response(
            200, stream=Stalls(b'data: {"choices": []}\n\n'), headers={"content-type": "text/event-stream"}
        ),
    )
    with pytest.raises(StreamError, match="timed out"):
        qwen.stream("hi").get_final_completion()


def test_an_unparsable_event_raises(api, qwen):
    streamed(api, sse(chunk({"content": "a"}), "data: {not json\n\n"))
    with pytest.raises(StreamError, match=r"not a chat\.completion\.chunk") as caught:
        qwen.stream("hi").get_final_completion()
    assert caught.value.partial.content == "a"


def test_a_json_answer_to_a_stream_request_is_one_chunk(api, qwen):
    body = completion("whole", usage=USAGE, meta=META)
    streamed(api, ok(body, inference_id="inf-j"))
    stream = qwen.stream("hi")
    chunks = list(stream)
    assert len(chunks) == 1
    assert chunks[0].choices[0].delta.content == "whole"
    assert stream.completion.content == "whole"
    assert stream.completion.cost.credits_used == 150
    assert stream.completion.inference_id == "inf-j"


def test_a_stream_answer_of_another_content_type_is_refused(api, qwen):
    streamed(api, httpx.Response(200, text="hello", headers={"content-type": "text/plain"}))
    with pytest.raises(InvalidResponseError, match="text/plain"):
        qwen.stream("hi").get_final_completion()


def test_an_error_status_before_the_stream_maps_like_any_error(api, qwen):
    calls = streamed(api, status(401, {"message": "Unauthorized"}))
    with pytest.raises(AuthenticationError):
        list(qwen.stream("hi"))
    assert len(calls.requests) == 1


# -- the ChatStream object ------------------------------------------------------------------------


def test_nothing_is_sent_until_the_stream_is_used(api, qwen):
    calls = streamed(api, sse(chunk({"content": "a"}, finish="stop")))
    stream = qwen.stream("hi")
    assert calls.requests == []
    with stream:
        assert len(calls.requests) == 1
    assert stream.response.is_closed


def test_leaving_the_context_early_closes_the_response(api, qwen):
    streamed(api, sse(chunk({"content": "a"}), chunk({"content": "b"}, finish="stop")))
    with qwen.stream("hi") as stream:
        first = next(stream)
    assert first.choices[0].delta.content == "a"
    assert stream.response.is_closed
    assert list(stream) == []  # closed: no more chunks
    with pytest.raises(RuntimeError):
        _ = stream.completion


def test_send_with_stream_true_returns_the_assembled_completion(api, qwen):
    streamed(api, sse(chunk({"content": "hi"}, finish="stop"), {"choices": [], "usage": USAGE}))
    request = build_request("hi", stream=True, stream_options={"include_usage": True})
    result = qwen.send(request)
    assert result.content == "hi"
    assert result.cost.estimated is True  # no meta: estimated from usage
    assert result.cost.usd_spent > 0


def test_stream_of_a_prepared_request(api, qwen):
    calls = streamed(api, sse(chunk({"content": "x"}, finish="stop")))
    qwen.stream(build_request("hi", temperature=0.1)).get_final_completion()
    assert calls.bodies[0]["stream"] is True
    assert calls.bodies[0]["stream_options"] == {"include_usage": True}
    assert calls.bodies[0]["temperature"] == 0.1
    with pytest.raises(InvalidRequestError, match="build_request"):
        qwen.stream(build_request("hi"), temperature=0.5)
    with pytest.raises(InvalidRequestError, match="stream=False"):
        qwen.stream("hi", stream=False)


def test_stream_options_can_be_turned_off(api, qwen):
    calls = streamed(api, sse(chunk({"content": "x"}, finish="stop")))
    qwen.stream("hi", stream_options={"include_usage": False}).get_final_completion()
    assert calls.bodies[0]["stream_options"] == {"include_usage": False}


def test_stream_errors_never_show_the_key(api, qwen):
    streamed(api, sse(chunk({"content": "a"}), {"error": {"message": f"bad key {KEY}"}}))
    with pytest.raises(StreamError) as caught:
        qwen.stream("hi").get_final_completion()
    assert "bad key" in str(caught.value)
    assert KEY not in json.dumps(caught.value.partial.to_wire())
    assert KEY not in repr(caught.value)
