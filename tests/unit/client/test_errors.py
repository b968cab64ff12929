"""The error tree: both error body shapes, HTML pages, status mapping, and never the key."""

from __future__ import annotations

import json

import pytest

from airflow_provider_qwen.client.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GenerationTimeoutError,
    InsufficientCreditsError,
    InvalidRequestError,
    NotFoundError,
    QwenError,
    RateLimitError,
    ServerError,
    error_for_status,
    error_message_from_body,
    parse_error_body,
)
from airflow_provider_qwen.client.retry import RetryPolicy

KEY = "sk-aiml-0123456789abcdef"
AIML_BODY = {
    "message": "Invalid model: alibaba/qwen9",
    "path": "/v1/chat/completions",
    "requestId": "req-1",
    "statusCode": 404,
    "timestamp": "2026-05-01T00:00:00Z",
}
OPENAI_BODY = {
    "error": {
        "message": "Rate limit reached",
        "type": "rate_limit_error",
        "code": "rate_limited",
        "param": None,
    }
}
HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (403, InsufficientCreditsError, False),
        (404, NotFoundError, False),
        (408, ConflictError, True),
        (409, ConflictError, True),
        (422, BadRequestError, False),
        (429, RateLimitError, True),
        (500, ServerError, True),
        (502, ServerError, True),
        (503, ServerError, True),
        (504, GenerationTimeoutError, True),
        (418, APIStatusError, False),
    ],
)
def test_each_status_maps_to_its_class(status: int, cls: type[APIStatusError], retryable: bool):
    error = error_for_status(status, b"{}")
    assert type(error) is cls
    assert error.status_code == status
    assert (RetryPolicy().next_delay(0, status_code=status) is not None) is retryable  # the live rule
    assert isinstance(error, QwenError)


def test_the_aiml_body_shape_gives_its_message_and_the_ids():
    error = error_for_status(
        404, json.dumps(AIML_BODY).encode(), inference_id="inf-9", client_request_id="qwen-abc"
    )
    assert error.message == "Invalid model: alibaba/qwen9"
    assert error.body == AIML_BODY
    assert (error.inference_id, error.client_request_id) == ("inf-9", "qwen-abc")
    assert (
        str(error)
        == "Invalid model: alibaba/qwen9 (status=404, inference_id=inf-9, client_request_id=qwen-abc)"
    )
    assert repr(error).startswith("NotFoundError('Invalid model")


def test_a_validation_message_list_is_joined():
    body = {**AIML_BODY, "statusCode": 400, "message": ["temperature must be <= 2", "top_p must be >= 0.01"]}
    error = error_for_status(400, json.dumps(body).encode())
    assert error.message == "temperature must be <= 2; top_p must be >= 0.01"


def test_the_openai_body_shape_gives_message_type_and_code():
    error = error_for_status(429, json.dumps(OPENAI_BODY).encode(), retry_after=1.5)
    assert isinstance(error, RateLimitError)
    assert error.message == "Rate limit reached [type=rate_limit_error, code=rate_limited]"
    assert error.retry_after == 1.5


def test_an_error_string_body_is_used():
    assert error_message_from_body({"error": "upstream failed"}, 502) == "upstream failed"


def test_an_html_page_gives_a_clean_error_not_a_json_error():
    error = error_for_status(502, HTML_502, reason="Bad Gateway", inference_id="inf-1")
    assert isinstance(error, ServerError)
    assert error.message.startswith("HTTP 502 Bad Gateway (non-JSON body: ")
    assert "502 Bad Gateway 502 Bad Gateway nginx" in error.message
    assert "<" not in error.message
    assert error.body == HTML_502.decode()


def test_empty_and_undecodable_bodies_are_safe():
    assert error_for_status(503, b"", reason="Service Unavailable").message == "HTTP 503 Service Unavailable"
    assert parse_error_body(b"\xff\xfe{") == "\ufffd\ufffd{"
    assert error_for_status(500, b"\xff\xfe").message.startswith("HTTP 500")
    assert error_for_status(400, b"[1, 2]").message == "HTTP 400"


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"message": f"Invalid API key {KEY}", "statusCode": 401}).encode(),
        json.dumps({"error": {"message": f"bad key Bearer {KEY}", "type": "auth"}}).encode(),
        f"<html><body>key {KEY} refused</body></html>".encode(),
    ],
    ids=["aiml", "openai", "html"],
)
def test_the_key_is_redacted_from_message_body_str_and_repr(content: bytes):
    error = error_for_status(401, content, redact=KEY)
    assert "***" in error.message
    for text in (error.message, str(error), repr(error), json.dumps(error.body, default=str)):
        assert KEY not in text


def test_invalid_request_error_is_a_value_error():
    assert issubclass(InvalidRequestError, ValueError)
    assert str(InvalidRequestError("temperature=3 is out of range")) == "temperature=3 is out of range"
