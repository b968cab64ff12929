"""The retry policy and pool size of the batch's own client: rate limits reach the batch's limiter,
and there are connections enough.

The hook's client retries a 429 inside ``send`` (the OpenAI convention), which would hide the rate
limit from ``AdaptiveLimiter`` while the request holds its slot: the limit would adapt late and the
other workers would never pause. ``LimiterRetryPolicy`` hands every 429 back at once; connection
errors, timeouts, 408, 409 and 5xx are still retried by the client as usual.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from airflow_provider_qwen.client.retry import RetryPolicy

DEFAULT_MAX_CONNECTIONS = 100  # AsyncQwenClient's own default
RATE_LIMITED = 429


@dataclass(frozen=True)
class LimiterRetryPolicy(RetryPolicy):
    """The client's retry policy minus 429: the batch's limiter halves, pauses and sends again."""

    def next_delay(
        self,
        retries_taken: int,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> float | None:
        if status_code == RATE_LIMITED:
            return None
        return super().next_delay(retries_taken, status_code=status_code, headers=headers)


def connections_for(max_concurrency: int) -> int:
    """Pool size for ``max_concurrency`` requests in flight: one connection each, so no request
    waits for a connection (the limiter bounds what is in flight). Connections open only when used.
    """
    return max(DEFAULT_MAX_CONNECTIONS, max_concurrency)
