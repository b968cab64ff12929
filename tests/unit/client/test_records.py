"""RecordsClient over respx: the /v2 paths at the API root, windows, paging, the rate limit, 429s, secrets."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import httpx
import pytest

from airflow_provider_qwen.client.errors import (
    AuthenticationError,
    BadRequestError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
)
from airflow_provider_qwen.client.records import (
    LogRow,
    RateLimiter,
    RecordsClient,
    Transaction,
    Window,
    api_root,
)
from tests.support.client_helpers import KEY, Sleeps, status

BASE_URL = "http://127.0.0.1:9/v1"
ROOT = "http://127.0.0.1:9"
LOGS, LEDGER, USAGE = f"{ROOT}/v2/logs", f"{ROOT}/v2/billing/transactions", f"{ROOT}/v2/usage"
T0 = datetime(2026, 7, 1, tzinfo=timezone.utc)


class Clock:
    """A fake monotonic clock whose sleeps move it on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def row(n: int, crid: str | None = "call-1", credits: int = 100, **extra) -> dict:
    return {
        "created": "2026-07-02T03:04:05.000Z",
        "status": "succeeded" if credits else "failed",
        "origin": "api",
        "model": "alibaba/qwen3.7-max",
        "cost": {"usd": credits / 2_000_000, "credits": credits},
        "tokens": {"input": 10, "output": 20, "total": 30},
        "request_id": f"req-{n}",
        "inference_id": f"inf-{n}",
        "client_request_id": crid,
        **extra,
    }


def page(rows: list[dict], offset: int = 0, more: bool = False) -> httpx.Response:
    pagination = {"limit": 100, "offset": offset, "total": offset + len(rows), "has_more": more}
    return httpx.Response(200, json={"data": rows, "pagination": pagination})


def records(sleeps: Sleeps | None = None, limiter: RateLimiter | None = None, **kwargs) -> RecordsClient:
    policy = (sleeps if sleeps is not None else Sleeps()).policy(
        max_retries=5, initial_delay=2.0, max_backoff=60.0
    )
    return RecordsClient(KEY, base_url=BASE_URL, retry=policy, limiter=limiter or RateLimiter(), **kwargs)


@pytest.mark.parametrize(
    ("base_url", "root"),
    [
        ("https://api.aimlapi.com/v1", "https://api.aimlapi.com"),
        ("https://api.aimlapi.com/v1/", "https://api.aimlapi.com"),
        ("https://api.aimlapi.com", "https://api.aimlapi.com"),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000"),
        ("https://proxy.example/aimlapi/v1", "https://proxy.example/aimlapi"),
    ],
)
def test_the_v2_paths_live_at_the_api_root(base_url, root):
    assert api_root(base_url) == root


def test_logs_are_read_page_by_page_with_the_key_and_the_window(api):
    route = api.get(LOGS).mock(side_effect=[page([row(1), row(2)], more=True), page([row(3)], offset=2)])
    with records(page_size=2) as client:
        rows = client.logs(T0, T0 + timedelta(days=1))
    assert [r.inference_id for r in rows] == ["inf-1", "inf-2", "inf-3"]
    first, second = (call.request for call in route.calls)
    assert first.headers["authorization"] == f"Bearer {KEY}"
    assert dict(first.url.params) == {
        "start": "2026-07-01T00:00:00.000Z",
        "end": "2026-07-02T00:00:00.000Z",
        "limit": "2",
        "offset": "0",
    }
    assert second.url.params["offset"] == "2"


def test_a_window_over_92_days_is_split_and_a_row_on_a_boundary_is_listed_once(api):
    route = api.get(LOGS).mock(side_effect=[page([row(1)]), page([row(1), row(2)]), page([row(3)])])
    with records() as client:
        rows = client.logs(T0, T0 + timedelta(days=200))
    assert [r.inference_id for r in rows] == ["inf-1", "inf-2", "inf-3"]
    windows = [(c.request.url.params["start"], c.request.url.params["end"]) for c in route.calls]
    assert windows == [
        ("2026-07-01T00:00:00.000Z", "2026-10-01T00:00:00.000Z"),
        ("2026-10-01T00:00:00.000Z", "2027-01-01T00:00:00.000Z"),
        ("2027-01-01T00:00:00.000Z", "2027-01-17T00:00:00.000Z"),
    ]
    for start, end in windows:
        span = datetime.fromisoformat(end) - datetime.fromisoformat(start)
        assert span <= timedelta(days=92)


def test_windows_are_widened_to_whole_milliseconds_and_stay_legal():
    start = datetime(2026, 7, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
    window = Window.of(start, start + timedelta(days=92))
    assert window.start.microsecond == 123000
    assert window.end.microsecond == 124000
    parts = window.split()
    assert len(parts) == 2
    assert all(p.end - p.start <= timedelta(days=92) for p in parts)
    assert Window.of(datetime(2026, 7, 1), datetime(2026, 7, 2)).start.tzinfo is timezone.utc  # naive = UTC
    with pytest.raises(InvalidRequestError, match="before it starts"):
        Window.of(T0, T0 - timedelta(seconds=1))


def test_a_period_is_sent_as_is_when_it_fits_and_split_when_it_does_not(api):
    route = api.get(LOGS).mock(return_value=page([]))
    with records(now=lambda: T0) as client:
        client.logs(period="7d")
        client.logs(period="100d")
        with pytest.raises(InvalidRequestError, match="period"):
            client.logs(period="7w")
        with pytest.raises(InvalidRequestError, match="not both"):
            client.logs(T0, period="7d")
        with pytest.raises(InvalidRequestError, match="window"):
            client.logs()
    params = [dict(c.request.url.params) for c in route.calls]
    assert params[0]["period"] == "7d"
    assert "start" not in params[0]
    assert [p["end"] for p in params[1:]] == ["2026-06-23T00:00:00.000Z", "2026-07-01T00:00:00.000Z"]


def test_filters_are_repeated_parameters_never_comma_joined(api):
    route = api.get(LOGS).mock(return_value=page([]))
    with records() as client:
        client.logs(T0, T0, model=["alibaba/qwen3.7-max", "qwen-turbo"], status=["succeeded", "failed"])
        with pytest.raises(InvalidRequestError, match="one model per value"):
            client.logs(T0, T0, model=["a,b"])
        with pytest.raises(InvalidRequestError, match="status"):
            client.logs(T0, T0, status=["ok"])
        with pytest.raises(InvalidRequestError, match="at most 50"):
            client.logs(T0, T0, model=[f"m{i}" for i in range(51)])
    params = route.calls[0].request.url.params
    assert params.get_list("model") == ["alibaba/qwen3.7-max", "qwen-turbo"]
    assert params.get_list("status") == ["succeeded", "failed"]
    assert len(route.calls) == 1


def test_rows_tolerate_unknown_keys_and_missing_credits():
    parsed = LogRow.model_validate({**row(1), "cost": {"usd": 0.00124}, "latency_ms": 5, "new": {"x": 1}})
    assert parsed.cost.exact_credits == 2480
    assert parsed.cost.exact_usd == Decimal("0.00124")
    bare = LogRow.model_validate({"inference_id": "inf-9"})
    assert (bare.client_request_id, bare.cost.exact_credits) == (None, 0)


def test_the_ledger_follows_the_cursor_verbatim(api):
    entry = {
        "created_at": "2026-08-17T10:00:00.000Z",
        "direction": "CHARGE",
        "type": "MODEL_USAGE",
        "amount": {"usd": 0.00005, "credits": 100},
        "model": "alibaba/qwen3.7-max",
        "reference_id": "inf-1",
    }
    route = api.get(LEDGER).mock(
        side_effect=[
            httpx.Response(
                200, json={"data": [entry], "pagination": {"next_cursor": "eyJ2Ijox=", "has_more": True}}
            ),
            httpx.Response(200, json={"data": [], "pagination": {"next_cursor": None, "has_more": False}}),
        ]
    )
    with records() as client:
        entries = client.transactions(T0, None, direction="CHARGE", type="MODEL_USAGE")
    assert entries == [Transaction.model_validate(entry)]
    assert entries[0].is_model_charge
    assert entries[0].amount.exact_credits == 100
    first, second = (dict(c.request.url.params) for c in route.calls)
    assert first == {
        "limit": "100",
        "from": "2026-07-01T00:00:00.000Z",
        "direction": "CHARGE",
        "type": "MODEL_USAGE",
    }
    assert second["cursor"] == "eyJ2Ijox="


def test_a_ledger_that_repeats_its_cursor_is_refused(api):
    again = {"data": [], "pagination": {"next_cursor": "c1", "has_more": True}}
    api.get(LEDGER).mock(return_value=httpx.Response(200, json=again))
    with records() as client, pytest.raises(InvalidResponseError, match="repeated a cursor"):
        client.transactions(T0)


def test_usage_adds_up_the_split_windows(api):
    def total(spend: float, requests: int) -> httpx.Response:
        body = {
            "api_key_prefix": None,
            "start": "2026-07-01T00:00:00.000Z",
            "end": "2026-08-01T00:00:00.000Z",
            "spend": spend,
            "currency": "USD",
        }
        return httpx.Response(200, json={**body, "requests": requests, "extra": 1})

    api.get(USAGE).mock(side_effect=[total(1.25, 3), total(0.5, 1)])
    with records() as client:
        usage = client.usage(T0, T0 + timedelta(days=100))
    assert (usage.spend, usage.requests, usage.currency) == (Decimal("1.75"), 4, "USD")


def test_a_429_without_retry_after_is_retried_with_a_growing_backoff(api):
    sleeps = Sleeps()
    route = api.get(LOGS).mock(side_effect=[status(429), status(429), status(429), page([row(1)])])
    with records(sleeps) as client:
        assert len(client.logs(T0, T0)) == 1
    assert sleeps == [2.0, 4.0, 8.0]
    assert len(route.calls) == 4


def test_a_429_that_lasts_gives_up_with_a_rate_limit_error(api):
    sleeps = Sleeps()
    api.get(LOGS).mock(return_value=status(429))
    with records(sleeps) as client, pytest.raises(RateLimitError):
        client.logs(T0, T0)
    assert sleeps == [2.0, 4.0, 8.0, 16.0, 32.0]


def test_a_400_is_not_retried(api):
    route = api.get(LOGS).mock(
        return_value=status(400, {"message": "window over 92 days", "statusCode": 400})
    )
    with records() as client, pytest.raises(BadRequestError, match="92 days"):
        client.logs(T0, T0)
    assert len(route.calls) == 1


def test_the_rate_limiter_allows_200_calls_in_any_60_seconds():
    clock = Clock()
    limiter = RateLimiter(clock=clock, sleep=clock.sleep)
    for _ in range(200):
        clock.now += 0.01
        assert limiter.acquire() == 0.0
    assert limiter.acquire() == pytest.approx(60.0 - 1.99)  # the first call leaves the window
    assert clock.now == pytest.approx(60.01)


def test_every_try_waits_for_the_rate_limit(api):
    clock = Clock()
    limiter = RateLimiter(calls=2, period=60.0, clock=clock, sleep=clock.sleep)
    api.get(LOGS).mock(side_effect=[status(429), page([row(1)], more=True), page([row(2)], offset=1)])
    with records(limiter=limiter) as client:
        assert len(client.logs(T0, T0)) == 2
    assert clock.slept == [60.0]  # the third call waited for the first to leave the window


def test_clients_of_one_key_and_host_share_a_limiter():
    one, two = RecordsClient(KEY, base_url=BASE_URL), RecordsClient(KEY, base_url=f"{ROOT}/v1/")
    other = RecordsClient("sk-other", base_url=BASE_URL)
    assert one.limiter is two.limiter
    assert one.limiter is not other.limiter
    assert KEY not in repr(one)
    assert "SECRET" not in repr(one.limiter.__dict__)


def test_the_key_never_appears_in_an_error(api):
    api.get(LOGS).mock(return_value=status(401, {"message": f"bad key {KEY}", "statusCode": 401}))
    api.get(USAGE).mock(return_value=httpx.Response(200, text=f"<html>{KEY}</html>"))
    with records() as client:
        with pytest.raises(AuthenticationError) as refused:
            client.logs(T0, T0)
        with pytest.raises(InvalidResponseError) as garbled:
            client.usage(T0, T0)
    for error in (refused.value, garbled.value):
        assert KEY not in str(error)
        assert KEY not in repr(error.args)


def test_a_page_whose_rows_do_not_read_is_an_invalid_response(api):
    api.get(LOGS).mock(return_value=httpx.Response(200, json={"data": [{"cost": "free"}], "pagination": {}}))
    with records() as client, pytest.raises(InvalidResponseError, match="LogRow"):
        client.logs(T0, T0)
