"""Retries: the policy's rules one by one, then the client following them over respx (no real sleeps)."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from email.utils import format_datetime

import httpx
import pytest

from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    GenerationTimeoutError,
    InsufficientCreditsError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamError,
)
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.retry import (
    RetryPolicy,
    is_retryable_status,
    server_delay,
    should_retry_header,
)
from tests.support.client_helpers import (
    BASE_URL,
    CHAT_URL,
    KEY,
    Recorder,
    Sleeps,
    chunk,
    cut_sse,
    ok,
    status,
)

NOW = 1_800_000_000.0


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


def client(sleeps: Sleeps, max_retries: int = 2, **kwargs) -> QwenClient:
    return QwenClient(KEY, base_url=BASE_URL, max_retries=max_retries, retry=sleeps.policy(), **kwargs)


# -- the policy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses(code):
    assert is_retryable_status(code)


@pytest.mark.parametrize("code", [400, 401, 403, 404, 422, 402, 413])
def test_statuses_never_retried(code):
    assert not is_retryable_status(code)


def test_backoff_doubles_from_half_a_second_up_to_eight():
    policy = RetryPolicy(jitter=lambda: 1.0)
    assert [policy.backoff(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]


def test_backoff_jitter_stays_between_75_and_100_percent():
    policy = RetryPolicy()
    waits = [policy.backoff(1) for _ in range(500)]
    assert all(0.75 <= w <= 1.0 for w in waits)
    assert max(waits) - min(waits) > 0.1  # it is random, not a constant


def test_server_delay_forms():
    assert server_delay({"retry-after-ms": "250"}) == 0.25
    assert server_delay({"retry-after": "3"}) == 3.0
    assert server_delay({"retry-after": "1.5"}) == 1.5
    assert server_delay({"retry-after-ms": "100", "retry-after": "9"}) == 0.1  # ms wins
    assert server_delay({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0  # bad ms falls back
    date = format_datetime(datetime.fromtimestamp(NOW + 30, tz=timezone.utc), usegmt=True)
    assert server_delay({"retry-after": date}, now=lambda: NOW) == pytest.approx(30)
    assert server_delay({"retry-after": "not a date"}) is None
    assert server_delay({}) is None
    assert server_delay(None) is None


def test_x_should_retry_header_values():
    assert should_retry_header({"x-should-retry": "true"}) is True
    assert should_retry_header({"x-should-retry": "False"}) is False
    assert should_retry_header({"x-should-retry": "maybe"}) is None
    assert should_retry_header({}) is None


def test_next_delay_rules():
    policy = RetryPolicy(max_retries=3, jitter=lambda: 1.0, now=lambda: NOW)
    assert policy.next_delay(0) == 0.5  # no answer at all: retried with backoff
    assert policy.next_delay(2, status_code=503) == 2.0
    assert policy.next_delay(3, status_code=503) is None  # retries used up
    assert policy.next_delay(0, status_code=400) is None
    assert policy.next_delay(0, status_code=400, headers={"x-should-retry": "true"}) == 0.5
    assert policy.next_delay(0, status_code=503, headers={"x-should-retry": "false"}) is None
    assert policy.next_delay(0, status_code=429, headers={"retry-after": "7"}) == 7.0
    assert policy.next_delay(0, status_code=429, headers={"retry-after-ms": "40"}) == 0.04
    assert policy.next_delay(0, status_code=429, headers={"retry-after": "120"}) == 120.0
    assert policy.next_delay(0, status_code=429, headers={"retry-after": "121"}) is None  # too long: stop
    assert policy.next_delay(0, status_code=429, headers={"retry-after": "0"}) == 0.5  # not positive: backoff
    past = format_datetime(datetime.fromtimestamp(NOW - 60, tz=timezone.utc), usegmt=True)
    assert policy.next_delay(1, status_code=503, headers={"retry-after": past}) == 1.0


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_max_retries_must_be_a_non_negative_int(bad):
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=bad)


# -- the client following it --------------------------------------------------------------------

RETRIED = [
    (408, ConflictError),
    (409, ConflictError),
    (429, RateLimitError),
    (500, ServerError),
    (502, ServerError),
    (503, ServerError),
    (504, GenerationTimeoutError),
]
NOT_RETRIED = [
    (400, BadRequestError),
    (401, AuthenticationError),
    (403, InsufficientCreditsError),
    (404, NotFoundError),
    (422, BadRequestError),
]


@pytest.mark.parametrize(("code", "error"), RETRIED)
def test_retried_status_then_success(api, sleeps, code, error):
    calls = Recorder(status(code), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    result = client(sleeps).chat("hi")
    assert result.content == "Hello!"
    assert len(calls.requests) == 2
    assert sleeps == [0.5]


@pytest.mark.parametrize(("code", "error"), RETRIED)
def test_retried_status_gives_up_after_max_retries(api, sleeps, code, error):
    calls = Recorder(status(code, x_inference_id="inf-err"))
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(error) as caught:
        client(sleeps).chat("hi")
    assert len(calls.requests) == 3  # the first try and 2 retries
    assert sleeps == [0.5, 1.0]
    assert caught.value.status_code == code
    assert caught.value.inference_id == "inf-err"


@pytest.mark.parametrize(("code", "error"), NOT_RETRIED)
def test_statuses_not_retried(api, sleeps, code, error):
    calls = Recorder(status(code), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(error):
        client(sleeps).chat("hi")
    assert len(calls.requests) == 1
    assert sleeps == []


@pytest.mark.parametrize("max_retries", [0, 1, 4])
def test_max_retries_from_the_constructor(api, sleeps, max_retries):
    calls = Recorder(status(503))
    api.post(CHAT_URL).mock(side_effect=calls)
    qwen = client(sleeps, max_retries=max_retries)
    assert qwen.max_retries == max_retries
    with pytest.raises(ServerError):
        qwen.chat("hi")
    assert len(calls.requests) == max_retries + 1


def test_same_client_request_id_on_every_try_and_a_new_one_per_call(api, sleeps):
    calls = Recorder(status(502), status(429), ok(), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    qwen = client(sleeps)
    qwen.chat("hi")
    qwen.chat("again")
    first, second, third, fourth = calls.request_ids
    assert first == second == third
    assert fourth != first
    assert first.startswith("qwen-")
    assert len(first) == 37


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry_after": "3"}, [3.0]),
        ({"retry_after_ms": "1500"}, [1.5]),
        ({"retry_after_ms": "20", "retry_after": "9"}, [0.02]),
    ],
)
def test_retry_after_in_seconds_and_ms(api, sleeps, headers, expected):
    calls = Recorder(status(429, **headers), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    client(sleeps).chat("hi")
    assert sleeps == expected


def test_retry_after_as_http_date(api):
    waits = Sleeps()
    date = format_datetime(datetime.fromtimestamp(NOW + 12, tz=timezone.utc), usegmt=True)
    calls = Recorder(status(503, retry_after=date), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    qwen = QwenClient(KEY, base_url=BASE_URL, retry=waits.policy(now=lambda: NOW))
    qwen.chat("hi")
    assert waits == [pytest.approx(12)]


def test_too_long_retry_after_stops_at_once(api, sleeps):
    calls = Recorder(status(429, {"message": "slow down"}, retry_after="600"), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(RateLimitError) as caught:
        client(sleeps).chat("hi")
    assert len(calls.requests) == 1
    assert sleeps == []
    assert caught.value.retry_after == 600.0
    assert "slow down" in str(caught.value)


def test_x_should_retry_true_retries_a_400(api, sleeps):
    calls = Recorder(status(400, x_should_retry="true"), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    assert client(sleeps).chat("hi").content == "Hello!"
    assert len(calls.requests) == 2


def test_x_should_retry_false_stops_a_503(api, sleeps):
    calls = Recorder(status(503, x_should_retry="false"), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(ServerError):
        client(sleeps).chat("hi")
    assert len(calls.requests) == 1


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (httpx.ConnectError, APIConnectionError),
        (httpx.RemoteProtocolError, APIConnectionError),
        (httpx.ReadTimeout, APITimeoutError),
        (httpx.ConnectTimeout, APITimeoutError),
    ],
)
def test_connection_errors_and_timeouts_are_retried(api, sleeps, failure, error):
    calls = Recorder(failure, ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    assert client(sleeps).chat("hi").content == "Hello!"
    assert len(calls.requests) == 2
    calls = Recorder(failure)
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(error) as caught:
        client(sleeps).chat("hi")
    assert len(calls.requests) == 3
    assert caught.value.client_request_id == calls.request_ids[0]
    assert isinstance(caught.value.__cause__, failure)


def test_retries_are_logged_without_the_key(api, sleeps, caplog):
    calls = Recorder(status(503, {"message": f"upstream saw {KEY}"}), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    with caplog.at_level(logging.INFO, logger="airflow_provider_qwen.client"):
        client(sleeps).chat("hi")
    assert "retry 1 of 2 in 0.50 s" in caplog.text
    assert calls.request_ids[0] in caplog.text
    assert KEY not in caplog.text


def test_error_status_of_a_stream_request_is_retried_before_the_first_byte(api, sleeps):
    calls = Recorder(status(503), status(502), cut_sse(chunk({"content": "par"})))
    api.post(CHAT_URL).mock(side_effect=calls)
    stream = client(sleeps).stream("hi")
    with pytest.raises(StreamError) as caught:
        list(stream)
    assert len(calls.requests) == 3  # two errors retried; the cut after data is not
    assert sleeps == [0.5, 1.0]
    assert caught.value.partial.content == "par"
    assert len(set(calls.request_ids)) == 1


def test_a_cut_stream_is_never_retried(api, sleeps):
    calls = Recorder(cut_sse(chunk({"content": "Hel"}), chunk({"content": "lo"})), ok())
    api.post(CHAT_URL).mock(side_effect=calls)
    with pytest.raises(StreamError) as caught:
        client(sleeps).send(build_request("hi", stream=True, stream_options={"include_usage": True}))
    assert len(calls.requests) == 1
    assert sleeps == []
    assert caught.value.partial.content == "Hello"
