"""AdaptiveLimiter, request by request: what each 429 is taken for and what it changes.

A fake clock moves only when the limiter sleeps (waits are recorded, not spent). Whole batches
against a scripted server are in test_limits_batch.py.
"""

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


async def answered(gate: AdaptiveLimiter, time: FakeTime, count: int, latency: float = 0.1) -> None:
    """``count`` requests in flight together, then all answered after ``latency``."""
    tickets = [await gate.acquire() for _ in range(count)]
    time.now += latency
    for ticket in tickets:
        gate.succeeded(ticket, 50, 10)


def test_in_flight_never_passes_the_limit():
    async def main():
        gate = AdaptiveLimiter(3)
        seen = []

        async def request():
            ticket = await gate.acquire()
            seen.append(gate.in_flight)
            await asyncio.sleep(0.001)
            gate.succeeded(ticket)

        await asyncio.gather(*(request() for _ in range(20)))
        return gate, seen

    gate, seen = asyncio.run(main())
    assert max(seen) == 3
    assert gate.peak_in_flight == 3
    assert gate.in_flight == 0


def test_a_burst_above_a_cap_is_held_at_the_cap_not_halved():
    async def main():
        gate, time = limiter(24)
        tickets = [await gate.acquire() for _ in range(24)]  # all sent at once
        waits = [gate.rate_limited_by_server(ticket) for ticket in tickets[16:]]  # 8 refused at once
        time.now += 0.1
        for ticket in tickets[:16]:
            gate.succeeded(ticket)
        for _ in range(5):  # five rounds at the cap
            await answered(gate, time, 16)
        return gate, waits

    gate, waits = asyncio.run(main())
    assert waits == [0.0] * 8  # a concurrency 429 waits for a slot, not for a backoff
    assert gate.limit == 16  # AIMD: 12, then back by one per round
    assert gate.lowest_limit == 16
    assert gate.counts["concurrency"] == 8
    assert gate.report()["concurrency_cap"] == 16


def test_a_random_429_amid_successes_changes_nothing_and_is_retried_at_once():
    async def main():
        gate, time = limiter(8)
        await answered(gate, time, 8)
        tickets = [await gate.acquire() for _ in range(8)]
        wait = gate.rate_limited_by_server(tickets[3])  # one of eight, at a level that just passed
        time.now += 0.1
        for ticket in tickets[:3] + tickets[4:]:
            gate.succeeded(ticket)
        return gate, wait

    gate, wait = asyncio.run(main())
    assert wait == 0.0
    assert (gate.limit, gate.lowest_limit) == (8, 8)
    assert gate.counts["random"] == 1
    assert gate.report()["concurrency_cap"] is None


def test_a_429_when_nothing_has_answered_asks_for_a_backoff():
    async def main():
        gate, _ = limiter(4)
        return gate, gate.rate_limited_by_server(await gate.acquire())

    gate, wait = asyncio.run(main())
    assert wait is None  # the sender backs off as the OpenAI client does
    assert gate.counts["unknown"] == 1
    assert gate.limit == 4


def test_a_retry_after_delays_only_its_own_request():
    async def main():
        gate, time = limiter(4)
        await answered(gate, time, 4)
        wait = gate.rate_limited_by_server(await gate.acquire(), 2.5)
        paused = gate.paused_for
        await gate.acquire()  # another request starts at once
        return wait, paused, time

    wait, paused, time = asyncio.run(main())
    assert wait == 2.5  # the refused request waits its 2.5 s ...
    assert paused == 0.0  # ... and nobody else does
    assert time.sleeps == []


def test_many_429s_with_retry_after_at_once_hold_every_start():
    async def main():
        gate, time = limiter(16)
        await answered(gate, time, 16)
        tickets = [await gate.acquire() for _ in range(12)]
        waits = [gate.rate_limited_by_server(ticket, 3.0) for ticket in tickets]  # all refused
        started = time.now
        await gate.acquire()  # judged a storm after a short hold; then held until the 3 s passed
        return gate, waits, time.now - started

    gate, waits, held = asyncio.run(main())
    assert waits == [3.0] * 12
    assert gate.account_pauses == 1
    assert held == pytest.approx(3.0)
    assert gate.counts["rate"] == 12
    assert gate.report()["requests_per_minute"] is not None  # and the window's count is the limit


@pytest.mark.parametrize("retry_after", [0, -1, 500])
def test_a_missing_or_unreasonable_retry_after_is_no_wait(retry_after):
    async def main():
        gate, time = limiter(4)
        await answered(gate, time, 4)
        wait = gate.rate_limited_by_server(await gate.acquire(), retry_after)
        await gate.acquire()
        return wait, gate, time

    wait, gate, time = asyncio.run(main())
    assert wait == 0.0  # random: sent again at once (a delay over 120 s is the sender's to refuse)
    assert gate.paused_for == 0.0
    assert time.sleeps == []


def test_requests_per_minute_spaces_starts_evenly():
    async def main():
        gate, time = limiter(10, requests_per_minute=120)
        for _ in range(4):
            gate.succeeded(await gate.acquire())
        return time

    time = asyncio.run(main())
    assert time.sleeps == [0.5, 0.5, 0.5]  # the first goes at once, then one every 60/120 s


def test_failures_other_than_429_leave_the_limit_alone():
    async def main():
        gate, _ = limiter(4)
        gate.failed(await gate.acquire())
        return gate

    gate = asyncio.run(main())
    assert (gate.limit, gate.in_flight, gate.rate_limited) == (4, 0, 0)


def test_the_report_is_json_safe_and_complete():
    import json

    async def main():
        gate, time = limiter(4, rate_window_s=2.0)
        await answered(gate, time, 4)
        return gate.report()

    report = asyncio.run(main())
    assert json.loads(json.dumps(report)) == report
    assert report["rate_window_s"] == 2.0
    assert set(report) >= {"concurrency_cap", "requests_per_minute", "tokens_per_minute", "random_429s"}


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_concurrency=0"):
        AdaptiveLimiter(0)
    with pytest.raises(ValueError, match="requests_per_minute=0"):
        AdaptiveLimiter(1, requests_per_minute=0)
    with pytest.raises(ValueError, match="window=0"):
        AdaptiveLimiter(1, rate_window_s=0)
