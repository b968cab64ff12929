"""The rate-limit learning against a hostile server and a hostile user, in virtual time.

Each test is a way found to fool the limiter (a limit learned from nothing, a batch stalled or
spinning, a bad argument reaching the first request, a report that says what did not happen); it
fails without the fix it names. Whole batches run through ``RateLimitedSender`` against the
scripted ``Server`` of test_limits_batch.py on its virtual clock, so they take milliseconds.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_qwen.batch.limits_sizes import SizeWatch
from airflow_provider_qwen.batch.limits_window import StartWindow
from airflow_provider_qwen.batch.sender import RateLimitedSender
from airflow_provider_qwen.client.errors import RateLimitError
from tests.unit.batch.test_limits_batch import Server, batch, ideal, virtual


@pytest.fixture(autouse=True)
def counted_tokens(mocker: Any) -> Any:
    """Requests are (prompt tokens, completion tokens), or None for (40, 10)."""
    return mocker.patch(
        "airflow_provider_qwen.client.tokens.request_tokens",
        side_effect=lambda request: request[0] if isinstance(request, tuple) else 40,
    )


# -- random 429s taken for a token limit ----------------------------------------------------------


def test_a_growing_first_window_is_no_token_limit():
    """In the first window the window only grows: a later 429 always saw more tokens than any
    answered request did. With one size that is no sign of size mattering."""
    watch = SizeWatch()
    watch.sizing = True
    watch.admitted(1050, 1000)
    assert [watch.refused(1050 + 50 * n, 1000 + 50 * n) for n in range(1, 6)] == [None] * 5
    # a large one refused with the window no fuller than a small one passed: that is evidence
    assert [watch.refused(1600, 990) for _ in range(3)] == [None, None, 1050]


def test_heavy_random_429s_with_one_size_requests_learn_no_token_limit():
    """30% random 429s, no limit at all: the same requests are refused again and again, so
    sizes are watched; they were then taken for a token limit at what the growing window held,
    and the batch ran 18 times slower than the ideal."""
    seconds, sender, _, _ = batch(Server(random_429=0.3), 600, max_concurrency=32)
    limits = sender.learned()["limits"]
    assert limits["tokens_per_minute"] is None
    assert limits["requests_per_minute"] is None
    assert seconds <= 6 * ideal(600, 32)


# -- limits no limiter can keep -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("requests_per_minute", float("nan")),  # passed ``<= 0``: starts were never paced
        ("requests_per_minute", float("inf")),
        ("requests_per_minute", 0),
        ("requests_per_minute", -5),
        ("requests_per_minute", "60"),  # a TypeError from ``<=`` before
        ("requests_per_minute", True),
        ("max_concurrency", 0),
        ("max_concurrency", 2.5),
        ("max_concurrency", "16"),
        ("max_rate_limit_retries", -1),  # range(0): no try at all, an AssertionError("unreachable")
        ("max_rate_limit_retries", 1.5),
        ("max_rate_limit_retries", None),
    ],
)
def test_a_limit_no_limiter_can_keep_is_a_clear_error_before_any_request(field, value):
    sent: list[Any] = []

    async def send_once(request: Any) -> Any:
        sent.append(request)

    arguments: dict[str, Any] = {"max_concurrency": 4, field: value}
    with pytest.raises(ValueError, match=rf"^{field}={value!r} must be "):
        RateLimitedSender(send_once, **arguments)
    assert sent == []


@pytest.mark.parametrize("window", [0.0, -1.0, float("nan"), float("inf")])
def test_a_rate_window_that_is_no_length_is_refused(window):
    with pytest.raises(ValueError, match="rate window"):
        StartWindow(window)


# -- the first requests refused -------------------------------------------------------------------


class FirstRefused(Server):
    """Refuses its first ``refused`` requests (a gateway warming up, or the account's minute spent
    by the task before), then answers as ``Server``."""

    def __init__(self, refused: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refused = refused

    async def send(self, request: Any) -> Any:
        if self.sent >= self.refused:
            return await super().send(request)
        self.sent += 1
        await asyncio.sleep(0.002)
        raise self.refuse(None)


def test_the_first_requests_refused_leave_no_cap_once_more_are_held_at_once(mocker):
    """The first 20 of a burst of 32 refused, the other 12 held at once: the 429s (at levels 2 to
    20) made a cap of 1, "confirmed" by their weight, and the batch crawled back by probes and
    ended at 19 of 32, 2.7 times the ideal. The 12 held at once, all sent after the cap's 429s,
    show that cap was of an account that is no more."""
    mocker.patch("airflow_provider_qwen.client.retry.random.uniform", return_value=1.0)  # no jitter
    server = FirstRefused(20)
    seconds, sender, limits, _ = batch(server, 600, max_concurrency=32)
    report = sender.learned()
    assert report["limits"]["concurrency_cap"] is None
    assert report["concurrency"]["final"] == 32
    assert all(limit == 32 for when, limit in limits if when > 0.5)
    assert seconds <= 1.15 * ideal(600, 32)


def test_the_first_requests_refused_under_a_cap_find_that_cap(mocker):
    mocker.patch("airflow_provider_qwen.client.retry.random.uniform", return_value=1.0)  # no jitter
    seconds, sender, _, _ = batch(FirstRefused(20, cap=16), 600, max_concurrency=32)
    assert sender.learned()["limits"]["concurrency_cap"] == 16
    assert seconds <= 1.35 * ideal(600, 16)


# -- 429s forever ---------------------------------------------------------------------------------


def test_429s_forever_end_each_item_with_a_clear_error_and_an_honest_report():
    """Every request refused, forever: each item ends after max_rate_limit_retries with an error
    that says so (it said only "Too many requests"), the batch does not spin, and the report's
    lowest concurrency is no higher than the final one (it said 16 while the limit was 1)."""
    server = Server(random_429=1.0)

    async def main() -> tuple[RateLimitedSender, list[BaseException], float]:
        sender = RateLimitedSender(server.send, max_concurrency=16, max_rate_limit_retries=3)
        errors: list[BaseException] = []
        items = iter(range(40))

        async def worker() -> None:
            for _ in items:
                try:
                    await sender.send(None)
                except RateLimitError as exc:
                    errors.append(exc)

        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(16)))
        return sender, errors, loop.time() - started

    sender, errors, seconds = virtual(main())
    assert len(errors) == 40
    assert server.sent == 40 * 4  # four tries each, no more
    assert str(errors[0]).startswith(
        "Too many requests; refused on all 4 tries (max_rate_limit_retries=3) (status=429)"
    )
    report = sender.learned()
    assert report["requests"] == 0
    assert report["rate_limited"] == 160
    assert report["concurrency"]["lowest"] <= report["concurrency"]["final"]
    json.dumps(report, allow_nan=False)
    assert seconds >= 1.0  # the 429s were spaced (no busy loop at the speed of a 429)
