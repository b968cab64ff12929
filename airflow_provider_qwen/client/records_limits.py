"""The limits of the service's records endpoints: windows of at most 92 days, 200 calls a minute.

``Window`` is a UTC window widened to whole milliseconds, split into legal ones; ``RateLimiter`` a
sliding-window limit, shared per key and host by ``shared_limiter``. No Airflow import.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from airflow_provider_qwen.client.errors import InvalidRequestError

MAX_WINDOW = timedelta(days=92)
RATE_LIMIT_CALLS = 200
RATE_LIMIT_PERIOD = 60.0
EPSILON = 1e-9
PERIOD = re.compile(r"^([1-9][0-9]*)([hd])$")


# -- windows ----------------------------------------------------------------------------------------


def utc(when: datetime) -> datetime:
    """An aware UTC datetime; a naive one is read as UTC (as the service does)."""
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def iso(when: datetime) -> str:
    """``2026-07-01T00:00:00.000Z``."""
    return utc(when).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_period(period: str) -> timedelta:
    """``24h`` / ``7d`` -> timedelta; anything else is an InvalidRequestError."""
    match = PERIOD.match(period)
    if not match:
        raise InvalidRequestError(f"period={period!r}: give a positive integer and h or d, e.g. 24h or 7d")
    amount = int(match.group(1))
    return timedelta(hours=amount) if match.group(2) == "h" else timedelta(days=amount)


def _floor_ms(when: datetime) -> datetime:
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _ceil_ms(when: datetime) -> datetime:
    floor = _floor_ms(when)
    return floor if floor == when else floor + timedelta(milliseconds=1)


@dataclass(frozen=True)
class Window:
    """A time window in UTC, widened to whole milliseconds (what the service's dates carry)."""

    start: datetime
    end: datetime

    @classmethod
    def of(cls, start: datetime, end: datetime) -> Window:
        first, last = _floor_ms(utc(start)), _ceil_ms(utc(end))
        if last < first:
            raise InvalidRequestError(f"the window ends ({iso(end)}) before it starts ({iso(start)})")
        return cls(first, last)

    def split(self, most: timedelta = MAX_WINDOW) -> list[Window]:
        """Consecutive windows of at most ``most`` covering this one (one when it fits)."""
        parts: list[Window] = []
        start = self.start
        while True:
            end = min(start + most, self.end)
            parts.append(Window(start, end))
            if end >= self.end:
                return parts
            start = end

    def covers(self, when: datetime) -> bool:
        return self.start <= utc(when) <= self.end

    def params(self) -> list[tuple[str, str]]:
        return [("start", iso(self.start)), ("end", iso(self.end))]


# -- the rate limit ---------------------------------------------------------------------------------


class RateLimiter:
    """At most ``calls`` acquisitions in any ``period`` seconds (a sliding window); thread-safe."""

    def __init__(
        self,
        calls: int = RATE_LIMIT_CALLS,
        period: float = RATE_LIMIT_PERIOD,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if calls < 1 or period <= 0:
            raise ValueError(f"a rate limit needs calls >= 1 and period > 0, not {calls} per {period}")
        self.calls, self.period = calls, period
        self._clock, self._sleep = clock, sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait until one more call fits; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                # a call leaves the window once period has passed (within a nanosecond: float sums)
                while self._sent and self._sent[0] + self.period - now <= EPSILON:
                    self._sent.popleft()
                if len(self._sent) < self.calls:
                    self._sent.append(now)
                    return waited
                delay = self._sent[0] + self.period - now
            self._sleep(delay)
            waited += delay


_LIMITERS: dict[tuple[str, str], RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def shared_limiter(root_url: str, api_key: str | None) -> RateLimiter:
    """The process-wide limiter of one key on one host (the key is kept only as a hash)."""
    digest = hashlib.sha256((api_key or "").encode()).hexdigest()
    with _LIMITERS_LOCK:
        return _LIMITERS.setdefault((root_url, digest), RateLimiter())
