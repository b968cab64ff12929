"""The batch's own client: 429s reach the limiter, other failures are still retried, enough connections."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import pytest
import respx

from airflow_provider_qwen.batch.retry_policy import LimiterRetryPolicy, connections_for
from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import BatchTI
from tests.support.client_helpers import BASE_URL, CHAT_URL, KEY, Recorder, ok, status
from tests.support.operator_fakes import run


@pytest.fixture
def connection(monkeypatch, tmp_path):
    """``qwen_default`` on a loopback address that respx answers; 3 client retries."""
    conn = {"conn_type": "qwen", "host": BASE_URL, "password": KEY, "extra": {"max_retries": 3}}
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path}")


def pool_connections(client) -> int:
    return client._http._transport.max_connections


def test_the_policy_hands_every_429_back_and_retries_the_rest():
    policy = LimiterRetryPolicy(max_retries=2, jitter=lambda: 1.0)
    assert policy.next_delay(0, status_code=429) is None
    assert policy.next_delay(0, status_code=429, headers={"retry-after": "1"}) is None
    assert policy.next_delay(0, status_code=429, headers={"x-should-retry": "true"}) is None
    assert policy.next_delay(0, status_code=503) == 0.5
    assert policy.next_delay(1, status_code=408) == 1.0
    assert policy.next_delay(0) == 0.5  # no answer at all: connection error or timeout
    assert policy.next_delay(0, status_code=500, headers={"retry-after": "2"}) == 2.0
    assert policy.next_delay(2, status_code=503) is None  # retries run out as before
    assert policy.next_delay(0, status_code=400) is None
    assert isinstance(replace(policy, max_retries=5), LimiterRetryPolicy)  # what the client does with it


@pytest.mark.parametrize(("max_concurrency", "expected"), [(1, 100), (50, 100), (150, 150), (1000, 1000)])
def test_connections_cover_every_request_in_flight(max_concurrency, expected):
    assert connections_for(max_concurrency) == expected


def test_the_operator_builds_its_client_from_the_connection(connection):
    op = QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}", max_concurrency=150)

    async def open_and_close():
        async with op.batch_client() as client:
            return client, pool_connections(client), client._http.is_closed

    client, connections, closed_inside = asyncio.run(open_and_close())
    assert not closed_inside  # the batch's own client ...
    assert client._http.is_closed  # ... closed after it
    assert isinstance(client.retry, LimiterRetryPolicy)
    assert client.max_retries == 3  # the connection's setting still governs 5xx and timeouts
    assert client.base_url == BASE_URL
    assert connections >= 150  # the default 100 would have capped a concurrency of 150
    assert KEY not in repr(client)


def test_on_the_wire_a_429_reaches_the_limiter_and_a_503_is_retried_by_the_client(connection):
    calls = Recorder(
        status(429, {"message": "Too many requests"}, retry_after_ms="5"),
        status(503, {"message": "upstream busy"}, retry_after_ms="1"),
        ok(),
    )
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.post(CHAT_URL).mock(side_effect=calls)
        result, ti = run(
            QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}", progress_interval=60),
            BatchTI(),
        )
    assert result == ["Hello!"]
    assert len(calls.requests) == 3
    report = ti.pushed["qwen_batch"]
    assert report["rate_limited"] == 1  # the 429 came to the limiter, not absorbed by the client
    assert report["requests"] == 1
    # the 429 was sent again as a new try of the batch, the 503 as a retry of the same call
    ids = calls.request_ids
    assert ids[1] == ids[2] != ids[0]


def test_on_the_wire_a_retry_after_of_minutes_is_neither_waited_for_nor_resent(connection):
    calls = Recorder(status(429, {"message": "quota spent"}, retry_after="300"))
    with respx.mock(using="httpx", assert_all_called=False) as router:
        router.post(CHAT_URL).mock(side_effect=calls)
        with pytest.raises(Exception, match="rate limit: the server asked to wait 300 s"):
            run(
                QwenBatchOperator(
                    task_id="batch", items=["a", "b", "c"], prompt="{{ item }}", max_concurrency=1
                ),
                BatchTI(),
            )
    assert len(calls.requests) == 1
