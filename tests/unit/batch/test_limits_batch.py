"""Whole batches through RateLimitedSender against a scripted server, in virtual time.

The event loop's clock only moves when every task waits, so a batch of 600 requests at 100 ms
each runs in milliseconds and always the same way: each test asserts what the limiter learned and
did (the cap it held, the rate it paced at, which 429s it took for random, who waited for a
Retry-After), and the batch's virtual duration against the ideal where that is the point.
"""

from __future__ import annotations

import asyncio
import random
import selectors
from collections import deque
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_qwen.batch.sender import RateLimitedSender
from airflow_provider_qwen.client.errors import RateLimitError

TRANSIT = 0.001  # each way: a 429 comes back after 2 ms


@pytest.fixture(autouse=True)
def counted_tokens(mocker: Any) -> Any:
    """Requests here are (prompt tokens, completion tokens), or None for (40, 10): "counting" a
    prompt reads it, and the calls say whether the sender counted any."""
    return mocker.patch(
        "airflow_provider_qwen.client.tokens.request_tokens",
        side_effect=lambda request: request[0] if isinstance(request, tuple) else 40,
    )


class _Selector(selectors.DefaultSelector):
    """Never blocks: a wait for the next timer moves the loop's virtual clock to it instead."""

    loop: VirtualLoop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            raise RuntimeError("virtual time: every task waits and no timer is set (a deadlock)")
        self.loop.now += timeout
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _Selector()
        super().__init__(selector=selector)
        selector.loop = self
        self.now = 0.0

    def time(self) -> float:
        return self.now


def virtual(coroutine: Any) -> Any:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


class Server:
    """A chat-completions service: latency, a cap in flight, requests and tokens per window, and
    random 429s, each 429 optionally with a Retry-After. Logs (time, status) of every request."""

    def __init__(
        self,
        *,
        latency: float = 0.1,
        cap: int | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        window: float = 60.0,
        random_429: float = 0.0,
        cap_retry_after: float | None = None,
        rate_retry_after: float | str | None = None,
        seed: int = 1,
    ) -> None:
        self.latency, self.cap, self.rpm, self.tpm, self.window = latency, cap, rpm, tpm, window
        self.random_429, self.random = random_429, random.Random(seed)
        self.jitter = random.Random(seed + 1)  # latencies vary by 10%: no lock-step rounds
        self.cap_retry_after, self.rate_retry_after = cap_retry_after, rate_retry_after
        self.generating = 0
        self.peak = 0
        self.sent = 0
        self.admitted: deque[tuple[float, int]] = deque()  # (time, tokens)
        self.log: list[tuple[float, int]] = []

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def refuse(self, retry_after: float | None) -> RateLimitError:
        self.log.append((self.now(), 429))
        return RateLimitError("Too many requests", status_code=429, retry_after=retry_after)

    async def send(self, request: Any) -> Any:
        self.sent += 1
        await asyncio.sleep(TRANSIT + self.sent * 1e-9)  # requests arrive in the order sent
        now = self.now()
        prompt, completion = request if isinstance(request, tuple) else (40, 10)
        tokens = prompt + completion
        while self.admitted and self.admitted[0][0] <= now - self.window:
            self.admitted.popleft()
        try:
            if self.random_429 and self.random.random() < self.random_429:
                raise self.refuse(None)
            if self.cap is not None and self.generating >= self.cap:
                raise self.refuse(self.cap_retry_after)
            held = sum(t for _, t in self.admitted)
            if (self.rpm is not None and len(self.admitted) >= self.rpm) or (
                self.tpm is not None and held + tokens > self.tpm
            ):
                wait = self.rate_retry_after
                if wait == "auto":
                    wait = self.admitted[0][0] + self.window - now + 1e-6
                raise self.refuse(wait)  # type: ignore[arg-type]
        except RateLimitError:
            await asyncio.sleep(TRANSIT)
            raise
        self.admitted.append((now, tokens))
        self.generating += 1
        self.peak = max(self.peak, self.generating)
        try:
            await asyncio.sleep(self.latency * self.jitter.uniform(0.9, 1.1))
        finally:
            self.generating -= 1
        self.log.append((self.now(), 200))
        await asyncio.sleep(TRANSIT)
        return SimpleNamespace(usage=SimpleNamespace(total_tokens=tokens, completion_tokens=completion))

    def refused_between(self, start: float, end: float) -> int:
        return sum(1 for when, status in self.log if status == 429 and start <= when < end)


def batch(
    server: Server,
    items: int,
    *,
    max_concurrency: int = 64,
    window: float = 60.0,
    requests: list[Any] | None = None,
    during: Any = None,
    **kwargs: Any,
) -> tuple[float, RateLimitedSender, list[tuple[float, int]], list[float]]:
    """Run ``items`` requests with ``max_concurrency`` workers (``during``: a coroutine function
    run beside them, to change the server mid-batch); returns (virtual seconds, sender, the limit
    after every answer as (time, limit), the sender's backoff sleeps)."""
    backoffs: list[float] = []

    async def main() -> tuple[float, RateLimitedSender, list[tuple[float, int]]]:
        sender = Sender(server.send, max_concurrency=max_concurrency, **kwargs)
        assert sender.limiter.rate_window_s == window
        if during is not None:
            asyncio.get_running_loop().create_task(during())
        limits: list[tuple[float, int]] = []
        queue = iter(range(items))
        loop = asyncio.get_running_loop()

        async def worker() -> None:
            for index in queue:
                await sender.send(requests[index] if requests else None)
                limits.append((loop.time(), sender.limiter.limit))

        started = loop.time()
        await asyncio.gather(*(worker() for _ in range(max_concurrency)))
        return loop.time() - started, sender, limits

    class Sender(RateLimitedSender):
        @staticmethod
        async def sleep(seconds: float) -> None:
            backoffs.append(seconds)
            await asyncio.sleep(seconds)

    Sender.rate_window_s = window
    seconds, sender, limits = virtual(main())
    return seconds, sender, limits, backoffs


def ideal(items: int, cap: int, latency: float = 0.1) -> float:
    return items / cap * (latency + 2 * TRANSIT)


# -- a concurrency cap ----------------------------------------------------------------------------


def test_a_found_cap_is_held_not_halved_after_a_storm_of_concurrency_429s():
    server = Server(cap=16)
    seconds, sender, limits, backoffs = batch(server, 600)
    report = sender.learned()
    assert report["limits"]["concurrency_cap"] == 16
    assert report["concurrency"]["final"] == 16
    assert report["concurrency"]["lowest"] == 16  # AIMD: 32, then 16, 8 ... and a crawl back
    assert all(limit == 16 for _, limit in limits)  # from the first answer to the last
    # the first round, then a few probes above the cap, ever further apart
    assert report["rate_limited"] == report["limits"]["concurrency_429s"] <= 48 + 8
    assert server.peak == 16
    assert backoffs == []  # a concurrency 429 waits for a slot, not a backoff
    assert seconds <= 1.03 * ideal(600, 16)
    assert report["requests"] == 600


def test_a_cap_that_falls_and_rises_mid_batch_keeps_the_server_busy():
    """Another task on the key takes half the places for six seconds. The batch meets 429s at
    levels that passed before: no halving spiral, and once the places are back it fills them."""
    server = Server(cap=16)

    async def change() -> None:
        await asyncio.sleep(2.0)
        server.cap = 8
        await asyncio.sleep(6.0)
        server.cap = 16

    seconds, sender, limits, _ = batch(server, 3000, during=change)
    per_second = 16 / (0.1 + 2 * TRANSIT)
    best = 2.0 + 6.0 + (3000 - 2 * per_second - 6 * per_second / 2) / per_second  # 22 s
    assert seconds <= 1.25 * best
    assert limits[-1][1] == 16
    assert sender.learned()["concurrency"]["lowest"] >= 8


def test_a_cap_with_retry_after_delays_only_the_refused_requests():
    server = Server(cap=16, cap_retry_after=1.0)
    seconds, sender, _, backoffs = batch(server, 600)
    report = sender.learned()
    assert report["limits"]["concurrency_cap"] == 16
    assert report["limits"]["account_pauses"] == 0  # the batch never stopped for a Retry-After
    assert report["limits"]["retry_after_waits"] == report["rate_limited"] == 48
    assert backoffs == [1.0] * 48  # each refused request waited its own second
    # the others kept the cap busy meanwhile: one second of waits is not a second lost
    assert server.refused_between(0.01, seconds) == 0
    assert seconds <= 1.03 * ideal(600, 16)


# -- random 429s ----------------------------------------------------------------------------------


def test_random_429s_leave_concurrency_at_the_max_and_cost_almost_nothing():
    free, *_ = batch(Server(), 1000, max_concurrency=32)
    server = Server(random_429=0.1)
    seconds, sender, limits, backoffs = batch(server, 1000, max_concurrency=32)
    report = sender.learned()
    # The first round (32 at once, 3 refused) looks like a cap; its first probe passes, and the
    # cap is dropped. AIMD collapsed the limit to 1-6 here.
    assert all(limit == 32 for when, limit in limits if when > 0.5)
    assert report["concurrency"]["final"] == 32
    assert report["limits"]["concurrency_cap"] is None
    refused = report["rate_limited"]
    assert 70 <= refused <= 150  # 10% of about 1,110 tries
    assert report["limits"]["random_429s"] >= 0.9 * refused
    assert report["limits"]["rate_storms"] == 0
    assert len(backoffs) <= 3  # a random 429 is retried at once, not after 0.5 s
    assert seconds <= 1.25 * free


def test_random_429s_under_a_cap_keep_the_cap():
    free, *_ = batch(Server(cap=16), 600)
    seconds, sender, limits, _ = batch(Server(cap=16, random_429=0.1, seed=3), 600)
    report = sender.learned()
    assert report["limits"]["concurrency_cap"] == 16
    assert all(limit == 16 for when, limit in limits if when > 0.5)  # the first round aside
    assert report["limits"]["random_429s"] >= 40
    assert report["limits"]["rate_storms"] == 0
    assert seconds <= 1.1 * free


# -- a requests-per-minute limit ------------------------------------------------------------------


def test_a_requests_per_window_limit_is_learned_and_starts_are_paced_under_it():
    server = Server(cap=16, rpm=200, window=2.0)
    seconds, sender, _, backoffs = batch(server, 600, window=2.0)
    limits = sender.learned()["limits"]
    assert limits["requests_per_minute"] == pytest.approx(200 * 30, rel=0.03)  # 200 per 2 s
    assert limits["rate_confirmed"] is True
    assert limits["rate_storms"] == 1  # one storm taught it; the gate kept the others away
    assert limits["concurrency_cap"] == 16
    # from the second window on, only probes into the full window (ever further apart) meet 429s
    later = [status for when, status in server.log if when > 2.5]
    assert later.count(429) <= 0.05 * len(later)
    assert backoffs == []
    assert seconds <= 1.05 * (600 / 100)  # the limit's own pace: 100 a second


def test_a_rate_storm_with_retry_after_holds_every_start_until_it_passed():
    server = Server(cap=16, rpm=200, window=2.0, rate_retry_after="auto")
    seconds, sender, _, _ = batch(server, 600, window=2.0)
    limits = sender.learned()["limits"]
    assert limits["account_pauses"] >= 1
    assert limits["requests_per_minute"] == pytest.approx(6000, rel=0.03)
    assert seconds <= 1.05 * (600 / 100)


def test_a_lone_random_429_after_a_storm_of_the_window_is_not_a_new_limit():
    server = Server(rpm=100, window=1.0, random_429=0.05)
    _, sender, _, _ = batch(server, 400, max_concurrency=16, window=1.0)
    limits = sender.learned()["limits"]
    assert limits["requests_per_minute"] == pytest.approx(6000, rel=0.05)
    assert limits["random_429s"] >= 5


# -- a tokens-per-minute limit --------------------------------------------------------------------


def test_a_token_limit_with_requests_of_different_sizes_counts_tokens_only_once_found(mocker):
    sizes = random.Random(5)
    requests = [(sizes.choice([20, 200, 600]), 10) for _ in range(300)]
    counted: list[Any] = []

    def request_tokens(request: Any) -> int:
        counted.append(request)
        return request[0]

    mocker.patch("airflow_provider_qwen.client.tokens.request_tokens", request_tokens)
    server = Server(cap=16, tpm=12_000, window=1.0)
    seconds, sender, _, _ = batch(server, 300, window=1.0, requests=requests, max_concurrency=16)
    limits = sender.learned()["limits"]
    assert limits["tokens_per_minute"] == pytest.approx(12_000 * 60, rel=0.1)
    assert counted  # once a token limit was in force, each request's prompt was counted ...
    assert len(counted) < 300  # ... but not before it was found
    tokens = sum(prompt + completion for prompt, completion in requests)
    assert seconds <= 1.2 * tokens / 12_000  # paced at the token limit's own rate


def test_one_size_requests_never_tokenise_a_prompt(mocker):
    counted = mocker.patch("airflow_provider_qwen.client.tokens.request_tokens", return_value=50)
    _, sender, _, _ = batch(Server(cap=16, tpm=5000, window=1.0), 300, window=1.0)
    limits = sender.learned()["limits"]
    assert limits["requests_per_minute"] is not None  # the token limit, seen as a request count
    assert limits["tokens_per_minute"] is None
    assert counted.call_count == 0


# -- nothing says why -----------------------------------------------------------------------------


def test_a_429_before_anything_passed_backs_off_as_the_openai_client():
    server = Server(random_429=1.0)

    async def main() -> list[float]:
        sleeps: list[float] = []

        class Sender(RateLimitedSender):
            @staticmethod
            async def sleep(seconds: float) -> None:
                sleeps.append(seconds)

        with pytest.raises(RateLimitError):
            await Sender(server.send, max_concurrency=4, max_rate_limit_retries=3).send(None)
        return sleeps

    sleeps = virtual(main())
    assert len(sleeps) == 3
    assert [0.375 <= sleeps[0] <= 0.5, 0.75 <= sleeps[1] <= 1.0, 1.5 <= sleeps[2] <= 2.0] == [True] * 3
