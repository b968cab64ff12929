"""Every fault the emulator injects, queued per instance and per request by header, over real sockets;
and what is (not) charged for each."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import jsonschema
import pytest

from airflow_provider_qwen.testing.faults import Fault, parse_fault_header

MODEL = "alibaba/qwen3.7-max"
TEXT = "Summarise this. The export button is broken since Monday. Please fix it soon."
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "priority": {"type": "integer", "minimum": 1, "maximum": 3}},
    "required": ["title", "priority"],
    "additionalProperties": False,
}
TOOLS = {
    "tools": [{"type": "function", "function": {"name": "Ticket", "parameters": SCHEMA}}],
    "tool_choice": {"type": "function", "function": {"name": "Ticket"}},
}


def post(emulator: Any, body: dict[str, Any] | None = None, fault: str | None = None) -> httpx.Response:
    headers = {"Authorization": "Bearer test-key", "X-Client-Request-Id": "qwen-fault-test"}
    if fault:
        headers["X-Emulator-Fault"] = fault
    payload = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}], **(body or {})}
    return httpx.post(f"{emulator.base_url}/chat/completions", json=payload, headers=headers, timeout=30)


def stream_lines(emulator: Any, body: dict[str, Any] | None = None, fault: str | None = None) -> list[str]:
    """Lines of a streamed answer until it ends or the connection drops (then re-raised with lines)."""
    headers = {"Authorization": "Bearer test-key"}
    if fault:
        headers["X-Emulator-Fault"] = fault
    payload = {
        "model": MODEL,
        "messages": [{"role": "user", "content": TEXT}],
        "stream": True,
        **(body or {}),
    }
    lines: list[str] = []
    with httpx.stream(
        "POST", f"{emulator.base_url}/chat/completions", json=payload, headers=headers
    ) as response:
        assert response.status_code == 200
        try:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
        except httpx.RemoteProtocolError as exc:
            raise CutStream(lines) from exc
    return lines


class CutStream(Exception):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(f"cut after {len(lines)} events")
        self.lines = lines


# -- queued faults ------------------------------------------------------------------------------


def test_queued_faults_are_taken_in_order_then_answers_are_normal(qwen_emulator):
    qwen_emulator.add_faults(Fault.rate_limited(retry_after=0.5), Fault.server_error(503), Fault.html(502))

    limited, unavailable, html, ok = (post(qwen_emulator) for _ in range(4))

    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0.5"
    body = limited.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert body["statusCode"] == 429
    assert body["path"] == "/v1/chat/completions"
    assert unavailable.status_code == 503
    assert unavailable.json()["statusCode"] == 503
    assert html.status_code == 502
    assert html.headers["content-type"].startswith("text/html")
    assert "<h1>502 Bad Gateway</h1>" in html.text
    assert ok.status_code == 200
    assert [r.status for r in qwen_emulator.requests] == [429, 503, 502, 200]
    assert [r.fault for r in qwen_emulator.requests] == ["status", "status", "html", None]
    assert all(r.headers["x-inference-id"] for r in (limited, unavailable, html, ok))
    (charge,) = qwen_emulator.charges  # failed requests are never charged
    assert charge.inference_id == ok.headers["x-inference-id"]
    assert [r.client_request_id for r in qwen_emulator.requests] == ["qwen-fault-test"] * 4
    assert qwen_emulator.pending_faults == []


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 422, 500, 502, 503, 504])
def test_any_error_status(qwen_emulator, status):
    qwen_emulator.add_faults(Fault.error(status))
    response = post(qwen_emulator)
    assert response.status_code == status
    assert response.json()["statusCode"] == status
    assert qwen_emulator.charges == []


def test_retry_headers(qwen_emulator):
    qwen_emulator.add_faults(
        Fault.rate_limited(retry_after=None, retry_after_ms=250), Fault.error(500, should_retry=False)
    )
    first, second = post(qwen_emulator), post(qwen_emulator)
    assert first.headers["retry-after-ms"] == "250"
    assert "retry-after" not in first.headers
    assert second.headers["x-should-retry"] == "false"


def test_latency_fault_delays_then_answers(qwen_emulator):
    qwen_emulator.add_faults(Fault.latency(0.3))
    started = time.monotonic()
    response = post(qwen_emulator)
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert len(qwen_emulator.charges) == 1


def test_instance_latency_applies_to_every_chat_completion(qwen_emulator):
    qwen_emulator.latency = 0.15
    started = time.monotonic()
    post(qwen_emulator)
    post(qwen_emulator)
    assert time.monotonic() - started >= 0.3


def test_dropped_connection_gets_no_answer_and_no_charge(qwen_emulator):
    qwen_emulator.add_faults(Fault.drop())
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        post(qwen_emulator)
    assert qwen_emulator.charges == []
    (logged,) = qwen_emulator.requests
    assert (logged.fault, logged.status) == ("drop", None)
    assert post(qwen_emulator).status_code == 200  # the server is fine afterwards


def test_cut_stream_after_k_chunks_is_charged(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut(after_chunks=3))
    with pytest.raises(CutStream) as cut:
        stream_lines(qwen_emulator, {"stream_options": {"include_usage": True}})
    assert len(cut.value.lines) == 3
    assert all(line.startswith("data: {") for line in cut.value.lines)
    (charge,) = qwen_emulator.charges  # the service had finished generating: it bills
    assert charge.stream
    assert not charge.complete
    assert charge.credits > 0
    assert qwen_emulator.requests[0].status == 200


def test_cut_non_streamed_answer_is_an_incomplete_body(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut())
    with pytest.raises(httpx.RemoteProtocolError):
        post(qwen_emulator)
    (charge,) = qwen_emulator.charges
    assert not charge.complete
    assert not charge.stream


def test_stream_error_chunk_is_not_charged(qwen_emulator):
    qwen_emulator.add_faults(Fault.stream_error(after_chunks=2))
    lines = stream_lines(qwen_emulator)
    assert len(lines) == 3
    assert "error" in json.loads(lines[-1].removeprefix("data: "))
    assert "[DONE]" not in lines[-1]
    assert qwen_emulator.charges == []


def test_chunk_delay_paces_a_stream(qwen_emulator):
    qwen_emulator.add_faults(Fault.latency(0, chunk_delay=0.05))
    started = time.monotonic()
    lines = stream_lines(qwen_emulator)
    assert time.monotonic() - started >= 0.05 * (len(lines) - 2)
    assert lines[-1] == "data: [DONE]"


def test_bad_json_arguments(qwen_emulator):
    qwen_emulator.add_faults(Fault.bad_json_args())
    (call,) = post(qwen_emulator, TOOLS).json()["choices"][0]["message"]["tool_calls"]
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["function"]["arguments"])
    assert len(qwen_emulator.charges) == 1  # a bad answer is still a paid answer


def test_schema_invalid_arguments(qwen_emulator):
    qwen_emulator.add_faults(Fault.schema_invalid_args())
    (call,) = post(qwen_emulator, TOOLS).json()["choices"][0]["message"]["tool_calls"]
    arguments = json.loads(call["function"]["arguments"])
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(arguments)


def test_streamed_bad_arguments_too(qwen_emulator):
    lines = stream_lines(qwen_emulator, TOOLS, fault="bad_json_args")
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    pieces = [
        tc["function"].get("arguments", "")
        for c in chunks
        if c["choices"]
        for tc in c["choices"][0]["delta"].get("tool_calls", [])
    ]
    with pytest.raises(json.JSONDecodeError):
        json.loads("".join(pieces))


def test_length_fault_cuts_text_and_tool_arguments(qwen_emulator):
    qwen_emulator.add_faults(Fault.length())
    text = post(qwen_emulator).json()
    assert text["choices"][0]["finish_reason"] == "length"
    whole = post(qwen_emulator).json()["choices"][0]["message"]["content"]
    assert text["choices"][0]["message"]["content"] == whole[: len(whole) // 2]
    qwen_emulator.add_faults(Fault.length())
    call = post(qwen_emulator, TOOLS).json()
    assert call["choices"][0]["finish_reason"] == "length"
    with pytest.raises(json.JSONDecodeError):
        json.loads(call["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])


# -- per-request faults (header) ------------------------------------------------------------------


def test_header_fault_applies_to_that_request_only_and_leaves_the_queue(qwen_emulator):
    qwen_emulator.add_faults(Fault.server_error(500))
    response = post(qwen_emulator, fault="status;status=503;retry_after=0.1")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "0.1"
    assert len(qwen_emulator.pending_faults) == 1
    assert post(qwen_emulator).status_code == 500  # the queued one
    assert post(qwen_emulator).status_code == 200


def test_header_combines_faults(qwen_emulator):
    started = time.monotonic()
    response = post(qwen_emulator, TOOLS, fault="latency;delay=0.2, schema_invalid_args")
    assert time.monotonic() - started >= 0.2
    arguments = json.loads(response.json()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(arguments)
    assert qwen_emulator.requests[0].fault == "latency,schema_invalid_args"


@pytest.mark.parametrize(
    ("header", "status"), [("html;status=503", 503), ("status;status=429;retry_after=2", 429), ("drop", None)]
)
def test_header_failure_faults(qwen_emulator, header, status):
    if status is None:
        with pytest.raises(httpx.RemoteProtocolError):
            post(qwen_emulator, fault=header)
    else:
        assert post(qwen_emulator, fault=header).status_code == status
    assert qwen_emulator.charges == []


def test_header_cut_stream(qwen_emulator):
    with pytest.raises(CutStream) as cut:
        stream_lines(qwen_emulator, fault="cut_stream;after_chunks=1")
    assert len(cut.value.lines) == 1


@pytest.mark.parametrize("header", ["explode", "status;status=abc", "status;color=red", "status;status=200"])
def test_bad_fault_header_is_a_400_naming_it(qwen_emulator, header):
    response = post(qwen_emulator, fault=header)
    assert response.status_code == 400
    assert any("fault" in message.lower() or "status" in message for message in response.json()["message"])


# -- what takes a fault -------------------------------------------------------------------------------


def test_invalid_requests_and_other_paths_do_not_take_chat_faults(qwen_emulator):
    qwen_emulator.add_faults(Fault.server_error(502))
    assert post(qwen_emulator, {"temperature": 5}).status_code == 400
    assert httpx.get(f"{qwen_emulator.base_url}/models").status_code == 200
    billing = httpx.get(f"{qwen_emulator.url}/v2/billing", headers={"Authorization": "Bearer test-key"})
    assert billing.status_code == 200
    assert post(qwen_emulator).status_code == 502


def test_any_scope_faults_hit_billing_and_models(qwen_emulator):
    qwen_emulator.add_faults(Fault("status", status=503, scope="any"), Fault("drop", scope="any"))
    billing = httpx.get(f"{qwen_emulator.url}/v2/billing", headers={"Authorization": "Bearer test-key"})
    assert billing.status_code == 503
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(f"{qwen_emulator.base_url}/models")


# -- concurrency limit ----------------------------------------------------------------------------


def test_max_concurrency_answers_429_above_n_in_flight(qwen_emulator):
    qwen_emulator.max_concurrency = 3
    qwen_emulator.latency = 0.5

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": TEXT}]}
            url = f"{qwen_emulator.base_url}/chat/completions"
            return await asyncio.gather(
                *(client.post(url, json=body, headers={"Authorization": "Bearer test-key"}) for _ in range(8))
            )

    responses = asyncio.run(run())
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [429] * 5
    limited = next(r for r in responses if r.status_code == 429)
    assert "retry-after" not in limited.headers  # the service documents no Retry-After
    assert "retry-after-ms" not in limited.headers
    assert "concurrent" not in limited.json()["message"]  # nor which limit it was
    assert len(qwen_emulator.charges) == 3
    assert qwen_emulator.peak_in_flight == 3
    qwen_emulator.latency = 0
    assert post(qwen_emulator).status_code == 200  # below the limit again


# -- the Fault type -------------------------------------------------------------------------------


def test_fault_header_round_trip_and_validation():
    for fault in (
        Fault.rate_limited(0.25),
        Fault.cut(4),
        Fault.latency(0.5, chunk_delay=0.01),
        Fault.error(500, should_retry=True),
        Fault.html(503),
        Fault.drop(),
    ):
        (parsed,) = parse_fault_header(fault.header_value())
        assert parsed == Fault(**{**fault.__dict__, "scope": "any"})
    assert Fault.html().status == 502
    assert Fault("status").status == 500
    with pytest.raises(ValueError, match="fault kind 'boom' is unknown; allowed: latency"):
        Fault("boom")
    with pytest.raises(ValueError, match="between 400 and 599"):
        Fault.error(302)
    with pytest.raises(ValueError, match="after_chunks=-1"):
        Fault.cut(-1)


def test_add_faults_refuses_other_objects(qwen_emulator):
    with pytest.raises(TypeError, match="Fault objects"):
        qwen_emulator.add_faults("drop")


def test_stream_error_on_a_whole_answer_is_a_500(qwen_emulator):
    qwen_emulator.add_faults(Fault.stream_error())
    assert post(qwen_emulator).status_code == 500
    assert qwen_emulator.charges == []


def test_header_faults_on_models_and_billing(qwen_emulator):
    headers = {"Authorization": "Bearer test-key", "X-Emulator-Fault": "status;status=502"}
    assert httpx.get(f"{qwen_emulator.url}/v2/billing", headers=headers).status_code == 502
    assert (
        httpx.get(f"{qwen_emulator.base_url}/models", headers={"X-Emulator-Fault": "html"}).status_code == 502
    )
    assert (
        httpx.get(f"{qwen_emulator.base_url}/models", headers={"X-Emulator-Fault": "nope"}).status_code == 400
    )
    assert [r.fault for r in qwen_emulator.requests] == ["status", "html", None]
