"""Every request of a batch goes through ``RateLimitedSender.send``: a start from the limiter, one
try (``send_once`` checks the budget and meters the cost), and the 429s absorbed here.

A 429 is retried after the limiter has heard of it, up to ``max_rate_limit_retries`` times. The
limiter says how long that request waits first: its own ``Retry-After``; nothing (the limiter's
slot and rate gate already hold it back, or the 429 was random); or "back off", when nothing says
why it was refused, with the OpenAI client's backoff. A server asking for more than
``MAX_SERVER_DELAY`` (120 s) is not waited for (docs/protocol.md, "Retries"): the runner stops
starting items. What the limiter learned is reported by ``learned()`` (the ``qwen_batch`` XCom)
and ``describe()`` (the progress line).

Tokens are counted for the limiter only once it has found a token limit with requests of
different sizes (``AdaptiveLimiter.counts_tokens``): then a request's prompt is counted once
(``request_tokens``) and its expected completion added; otherwise no prompt is tokenised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.limiter import DEFAULT_RATE_WINDOW_S, RANDOM, AdaptiveLimiter
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
    # The length of the service's rate window (its limits are per minute). Only a benchmark that
    # shortens the emulator's minute to seconds changes it, on both sides alike.
    rate_window_s = DEFAULT_RATE_WINDOW_S

    def __init__(
        self,
        send_once: Callable[[ChatRequest], Awaitable[ChatCompletion]],
        *,
        max_concurrency: int,
        requests_per_minute: float | None = None,
        max_rate_limit_retries: int = 8,
    ) -> None:
        from airflow_provider_qwen.client.retry import RetryPolicy

        retries = max_rate_limit_retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"max_rate_limit_retries={retries!r} must be an integer >= 0")
        self.send_once = send_once
        self.max_rate_limit_retries = max_rate_limit_retries
        self.limiter = AdaptiveLimiter(
            max_concurrency, requests_per_minute=requests_per_minute, rate_window_s=self.rate_window_s
        )
        self.backoff = RetryPolicy().backoff
        self.requests = 0  # answered requests

    async def send(self, request: ChatRequest) -> ChatCompletion:
        """One request: wait for a start, send it, absorb rate limits."""
        estimate: int | None = None
        randoms = 0  # this request's latest 429s in a row taken for random
        for attempt in range(self.max_rate_limit_retries + 1):
            if self.limiter.counts_tokens and estimate is None:
                estimate = self._estimate(request)
            ticket = await self.limiter.acquire(estimate or 0)
            try:
                completion = await self.send_once(request)
            except RateLimitError as exc:
                if long_rate_limit(exc) is not None:
                    self.limiter.rate_limited_by_server(ticket, None)
                    raise  # no retry (docs/protocol.md, "Retries"); the batch stops starting items
                wait = self.limiter.rate_limited_by_server(ticket, exc.retry_after, random_before=randoms)
                randoms = randoms + 1 if self.limiter.last_kind == RANDOM else 0
                if attempt >= self.max_rate_limit_retries:  # say so in the item's error
                    tries = f"refused on all {attempt + 1} tries (max_rate_limit_retries={attempt})"
                    exc.message = f"{exc.message}; {tries}"
                    raise
                if wait is None:
                    await self.sleep(self.backoff(attempt))
                elif wait > 0:
                    await self.sleep(wait)
                continue
            except BaseException:
                self.limiter.failed(ticket)
                raise
            self.requests += 1
            usage = completion.usage
            if usage is None:
                self.limiter.succeeded(ticket)
            else:
                self.limiter.succeeded(ticket, usage.total_tokens, usage.completion_tokens)
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    def _estimate(self, request: ChatRequest) -> int:
        """Prompt tokens (counted) plus the completion tokens an answer has used on average."""
        from airflow_provider_qwen.client.tokens import request_tokens

        return request_tokens(request) + round(self.limiter.window.mean_completion_tokens)

    def describe(self) -> str:
        """The limiter's state for the progress line."""
        limiter = self.limiter
        learned = limiter.report()
        parts = [f"{limiter.in_flight} in flight, limit {limiter.limit}"]
        if learned["concurrency_cap"] is not None:
            parts.append(f"cap {learned['concurrency_cap']} learned")
        if learned["requests_per_minute"] is not None:
            parts.append(f"{learned['requests_per_minute']:g} requests/min learned")
        if learned["tokens_per_minute"] is not None:
            parts.append(f"{learned['tokens_per_minute']} tokens/min learned")
        if limiter.rate_limited:
            parts.append(f"{limiter.rate_limited} 429s ({learned['random_429s']} random)")
        return ", ".join(parts)

    def learned(self) -> dict[str, Any]:
        """What was sent and what the limiter met and settled at (JSON-safe, for ``qwen_batch``)."""
        limiter = self.limiter
        return {
            "requests": self.requests,
            "rate_limited": limiter.rate_limited,
            "concurrency": {
                "max": limiter.max_concurrency,
                "final": limiter.limit,
                "lowest": min(limiter.lowest_limit, limiter.limit),  # lowered with no answer since too
                "peak_in_flight": limiter.peak_in_flight,
            },
            "limits": limiter.report(),
        }
