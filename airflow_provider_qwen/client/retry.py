"""When to try a request again, and how long to wait: the OpenAI client's convention.

See docs/protocol.md, "Retries".

Retried: connection errors, timeouts, 408, 409, 429 and every 5xx; never anything else (400, 401,
403, 404, 422 ...). ``x-should-retry: true|false`` overrides the status rule. A delay the server
asks for (``retry-after-ms``, then ``retry-after`` in seconds or as an HTTP date) wins over the
backoff when it is in (0, 120] seconds; a longer one stops retrying. Otherwise the wait is
``min(0.5 * 2**n, 8) * uniform(0.75, 1.0)`` seconds after the n-th retry (n from 0).
A stream is never retried once its first byte arrived: the client only retries before that point.
The sleep functions are injectable so tests run in milliseconds.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({408, 409, 429})
INITIAL_DELAY = 0.5
MAX_BACKOFF = 8.0
MAX_SERVER_DELAY = 120.0


def is_retryable_status(status_code: int) -> bool:
    """The status rule alone: 408, 409, 429 and >= 500."""
    return status_code in RETRY_STATUSES or status_code >= 500


def should_retry_header(headers: Mapping[str, str] | None) -> bool | None:
    """``x-should-retry``: True / False when the server says so, else None."""
    if headers is None:
        return None
    value = headers.get("x-should-retry")
    if value is None:
        return None
    value = value.strip().lower()
    return True if value == "true" else False if value == "false" else None


def server_delay(headers: Mapping[str, str] | None, *, now: Callable[[], float] = time.time) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, then ``retry-after`` (seconds or date)."""
    if not headers:
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return float(millis) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:  # pragma: no cover - older Pythons returned None for junk
        return None
    return when.timestamp() - now()


def _jitter() -> float:
    return random.uniform(0.75, 1.0)


@dataclass(frozen=True)
class RetryPolicy:
    """How many retries after the first try, and the waits between them."""

    max_retries: int = 2
    initial_delay: float = INITIAL_DELAY
    max_backoff: float = MAX_BACKOFF
    max_server_delay: float = MAX_SERVER_DELAY
    sleep: Callable[[float], object] = field(default=time.sleep, repr=False)
    async_sleep: Callable[[float], Awaitable[object]] = field(default=asyncio.sleep, repr=False)
    jitter: Callable[[], float] = field(default=_jitter, repr=False)
    now: Callable[[], float] = field(default=time.time, repr=False)

    def __post_init__(self) -> None:
        if (
            not isinstance(self.max_retries, int)
            or isinstance(self.max_retries, bool)
            or self.max_retries < 0
        ):
            raise ValueError(f"max_retries={self.max_retries!r} must be an integer >= 0")

    def backoff(self, retries_taken: int) -> float:
        """The wait before retry number ``retries_taken + 1`` when the server names none."""
        return float(min(self.initial_delay * 2**retries_taken, self.max_backoff) * self.jitter())

    def next_delay(
        self,
        retries_taken: int,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> float | None:
        """Seconds to wait before the next try, or None to give up.

        ``status_code`` None means the try failed without an answer (connection error, timeout),
        which is always worth a retry.
        """
        if retries_taken >= self.max_retries:
            return None
        override = should_retry_header(headers)
        if override is False:
            return None
        if override is None and status_code is not None and not is_retryable_status(status_code):
            return None
        delay = server_delay(headers, now=self.now)
        if delay is not None and delay > 0:
            return delay if delay <= self.max_server_delay else None
        return self.backoff(retries_taken)
