"""AdaptiveLimiter: bounded concurrency, AIMD on 429, Retry-After pauses, requests-per-minute pacing."""

from __future__ import annotations

import asyncio

import pytest

from airflow_provider_qwen.batch.limiter import AdaptiveLimiter


class FakeTime:
    """A clock that moves only when the limiter sleeps: waits are recorded, not spent."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def limiter(max_concurrency: int = 8, **kwargs) -> tuple[AdaptiveLimiter, FakeTime]:
    time = FakeTime()
    return AdaptiveLimiter(max_concurrency, clock=time.clock, sleep=time.sleep, **kwargs), time


def test_in_flight_never_passes_the_limit():
    async def main():
        gate = AdaptiveLimiter(3)
        seen = []

        async def request():
            ticket = await gate.acquire()
            seen.append(gate.in_flight)
            await asyncio.sleep(0.001)
            await gate.succeeded(ticket)

        await asyncio.gather(*(request() for _ in range(20)))
        return gate, seen

    gate, seen = asyncio.run(main())
    assert max(seen) == 3
    assert gate.peak_in_flight == 3
    assert gate.in_flight == 0


def test_a_burst_of_429s_halves_the_limit_once_per_round_trip():
    async def main():
        gate, _ = limiter(16)
        tickets = [await gate.acquire() for _ in range(16)]
        for ticket in tickets:  # all sixteen were in flight together when the server said no
            await gate.rate_limited_by_server(ticket, None)
        first_cut = gate.limit
        ticket = await gate.acquire()  # started after the cut: its 429 cuts again
        await gate.rate_limited_by_server(ticket, None)
        return first_cut, gate

    first_cut, gate = asyncio.run(main())
    assert first_cut == 8
    assert gate.limit == 4
    assert gate.lowest_limit == 4
    assert gate.rate_limited == 17


def test_successes_raise_the_limit_by_one_per_round_back_to_the_maximum():
    async def main():
        gate, _ = limiter(8)
        await gate.rate_limited_by_server(await gate.acquire(), None)
        await gate.rate_limited_by_server(await gate.acquire(), None)
        low = gate.limit
        history = []
        for _ in range(60):
            await gate.succeeded(await gate.acquire())
            history.append(gate.limit)
        return low, history

    low, history = asyncio.run(main())
    assert low == 2
    assert history[0] == 2  # not yet: two successes needed at limit 2
    assert history[1] == 3
    assert history[1 + 3] == 4  # then three more at limit 3
    assert history[-1] == 8  # never above the maximum


def test_the_limit_never_drops_below_one():
    async def main():
        gate, _ = limiter(2)
        for _ in range(5):
            await gate.rate_limited_by_server(await gate.acquire(), None)
        return gate.limit

    assert asyncio.run(main()) == 1


def test_retry_after_pauses_every_new_request():
    async def main():
        gate, time = limiter(4)
        await gate.rate_limited_by_server(await gate.acquire(), 2.5)
        assert gate.paused_for == 2.5
        await gate.acquire()
        return time

    time = asyncio.run(main())
    assert time.sleeps == [2.5]
    assert time.now == 2.5


@pytest.mark.parametrize("retry_after", [0, -1, 500])
def test_a_missing_or_unreasonable_retry_after_is_not_a_pause(retry_after):
    async def main():
        gate, time = limiter(4)
        await gate.rate_limited_by_server(await gate.acquire(), retry_after)
        await gate.acquire()
        return time

    assert asyncio.run(main()).sleeps == []


def test_requests_per_minute_spaces_starts_evenly():
    async def main():
        gate, time = limiter(10, requests_per_minute=120)
        for _ in range(4):
            await gate.succeeded(await gate.acquire())
        return time

    time = asyncio.run(main())
    assert time.sleeps == [0.5, 0.5, 0.5]  # the first goes at once, then one every 60/120 s


def test_failures_other_than_429_leave_the_limit_alone():
    async def main():
        gate, _ = limiter(4)
        await gate.failed(await gate.acquire())
        return gate

    gate = asyncio.run(main())
    assert (gate.limit, gate.in_flight) == (4, 0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_concurrency=0"):
        AdaptiveLimiter(0)
    with pytest.raises(ValueError, match="requests_per_minute=0"):
        AdaptiveLimiter(1, requests_per_minute=0)
