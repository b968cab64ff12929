"""Every request of a batch goes through ``RateLimitedSender.send``: a slot from the limiter, one
try (``send_once`` checks the budget and meters the cost), and the 429s absorbed here.

A 429 is retried after the limiter has heard of it, up to ``max_rate_limit_retries`` times, unless
the server asks for a wait over ``MAX_SERVER_DELAY`` (120 s): such a delay is not waited for
(docs/protocol.md, "Retries"), the runner stops starting items. What the limiter learned is
reported by ``learned()`` (the ``qwen_batch`` XCom) and ``describe()`` (the progress line).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.limiter import AdaptiveLimiter
from airflow_provider_qwen.client.errors import RateLimitError
from airflow_provider_qwen.client.retry import MAX_SERVER_DELAY

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest


def long_rate_limit(exc: BaseException | None) -> float | None:
    """The server's delay when ``exc`` is a 429 asking for more than ``MAX_SERVER_DELAY`` s, else None."""
    if isinstance(exc, RateLimitError) and exc.retry_after is not None and exc.retry_after > MAX_SERVER_DELAY:
        return exc.retry_after
    return None


class RateLimitedSender:
    """``send(request)``: through the limiter, with the rate-limit retries; counts what was sent."""

    sleep = staticmethod(asyncio.sleep)  # the backoff's wait; tests record it instead

    def __init__(
        self,
        send_once: Callable[[ChatRequest], Awaitable[ChatCompletion]],
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        max_rate_limit_retries: int = 8,
    ) -> None:
        from airflow_provider_qwen.client.retry import RetryPolicy

        self.send_once = send_once
        self.max_rate_limit_retries = max_rate_limit_retries
        self.limiter = AdaptiveLimiter(max_concurrency, requests_per_minute=requests_per_minute)
        self.backoff = RetryPolicy().backoff
        self.requests = 0  # answered requests

    async def send(self, request: ChatRequest) -> ChatCompletion:
        """One request: wait for a slot, send it, absorb rate limits."""
        for attempt in range(self.max_rate_limit_retries + 1):
            ticket = await self.limiter.acquire()
            try:
                completion = await self.send_once(request)
            except RateLimitError as exc:
                if long_rate_limit(exc) is not None:
                    await self.limiter.rate_limited_by_server(ticket, None)
                    raise  # no retry (docs/protocol.md, "Retries"); the batch stops starting items
                await self.limiter.rate_limited_by_server(ticket, exc.retry_after)
                if attempt >= self.max_rate_limit_retries:
                    raise
                if exc.retry_after is None or exc.retry_after <= 0:
                    await self.sleep(self.backoff(attempt))
                # else the limiter pauses every request, this one too, until the Retry-After passed
                continue
            except BaseException:
                await self.limiter.failed(ticket)
                raise
            self.requests += 1
            await self.limiter.succeeded(ticket)
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    def describe(self) -> str:
        """The limiter's state for the progress line."""
        return f"{self.limiter.in_flight} in flight, limit {self.limiter.limit}"

    def learned(self) -> dict[str, Any]:
        """What was sent and what the limiter met and settled at (JSON-safe, for ``qwen_batch``)."""
        return {
            "requests": self.requests,
            "rate_limited": self.limiter.rate_limited,
            "concurrency": {
                "max": self.limiter.max_concurrency,
                "final": self.limiter.limit,
                "lowest": self.limiter.lowest_limit,
                "peak_in_flight": self.limiter.peak_in_flight,
            },
        }
