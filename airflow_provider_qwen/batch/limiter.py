"""How many requests may be in flight, and when the next one may start.

``AdaptiveLimiter`` bounds concurrency at ``max_concurrency`` and adapts like TCP (AIMD): a 429
halves the limit (once per round trip, not once per rejected request), and every ``limit``
successes in a row raise it by one, back up to the maximum. A server's ``Retry-After`` of up to
``MAX_SERVER_DELAY`` pauses every new request until it has passed (a longer one is no pause: the
runner stops the batch instead); an optional requests-per-minute cap spaces starts evenly.
So a rate-limited account finishes its batch instead of failing it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from airflow_provider_qwen.client.retry import MAX_SERVER_DELAY  # a longer Retry-After is no pause


class AdaptiveLimiter:
    """Concurrency limit with additive increase / multiplicative decrease and server-requested pauses."""

    def __init__(
        self,
        max_concurrency: int,
        *,
        requests_per_minute: float | None = None,
        min_concurrency: int = 1,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency} must be >= 1")
        if requests_per_minute is not None and requests_per_minute <= 0:
            raise ValueError(f"requests_per_minute={requests_per_minute} must be > 0")
        self.max_concurrency = max_concurrency
        self.min_concurrency = max(1, min(min_concurrency, max_concurrency))
        self.limit = max_concurrency
        self.lowest_limit = max_concurrency
        self.in_flight = 0
        self.peak_in_flight = 0
        self.rate_limited = 0
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self._clock = clock
        self._sleep = sleep
        self._cond = asyncio.Condition()
        self._tickets = 0  # requests started so far; a ticket is a request's start number
        self._cut_before = 0  # a 429 of a request started before this ticket does not cut again
        self._successes = 0
        self._paused_until = 0.0
        self._next_start = 0.0

    @property
    def paused_for(self) -> float:
        """Seconds left of a server-requested pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    async def acquire(self) -> int:
        """Wait for a free slot, any Retry-After pause and the rate cap; returns the request's ticket."""
        async with self._cond:
            await self._cond.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            while (wait := self._paused_until - self._clock()) > 0:
                await self._sleep(wait)
            if self.interval:
                now = self._clock()
                start = max(now, self._next_start)
                self._next_start = start + self.interval
                if start > now:
                    await self._sleep(start - now)
        except BaseException:
            await self._release()
            raise
        ticket = self._tickets
        self._tickets += 1
        return ticket

    async def succeeded(self, ticket: int) -> None:
        """The request answered: free its slot; grow the limit by one after ``limit`` successes."""
        self._successes += 1
        grow = self.limit < self.max_concurrency and self._successes >= self.limit
        if grow:
            self.limit += 1
            self._successes = 0
        await self._release(wake=2 if grow else 1)

    async def rate_limited_by_server(self, ticket: int, retry_after: float | None) -> None:
        """The request got a 429: halve the limit (once per round trip) and honour Retry-After."""
        self.rate_limited += 1
        if ticket >= self._cut_before:
            self.limit = max(self.min_concurrency, self.limit // 2)
            self.lowest_limit = min(self.lowest_limit, self.limit)
            self._cut_before = self._tickets
            self._successes = 0
        if retry_after is not None and 0 < retry_after <= MAX_SERVER_DELAY:
            self._paused_until = max(self._paused_until, self._clock() + retry_after)
        await self._release()

    async def failed(self, ticket: int) -> None:
        """The request failed otherwise: free its slot, leave the limit alone."""
        await self._release()

    async def _release(self, wake: int = 1) -> None:
        async with self._cond:
            self.in_flight -= 1
            self._cond.notify(wake)
