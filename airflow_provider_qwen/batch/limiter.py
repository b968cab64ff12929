"""How many requests may be in flight, and when the next one may start: learned from the 429s.

The service says neither its limits nor why it refused (docs/protocol.md: a 429 has no
``Retry-After`` and may mean too many in flight, too many requests a minute or too many tokens a
minute). ``AdaptiveLimiter`` learns each from the 429s themselves, and takes every 429 for one of:

- **concurrency**: sent above the cap that ``CapFit`` (limits_cap) finds in the recent (level,
  outcome) samples. The limit is held at that cap, not halved. One request above it now and then,
  only while others wait for a slot (limits_probe), confirms the cap (a first burst cannot tell
  a cap from a few random 429s) and finds one that rose.
- **rate**: a storm, 429s at levels the server accepts for most of what started since
  (limits_storm). Nothing new starts for one answer's time; if hardly any request started after
  the first 429 passed meanwhile, a per-window limit is spent: what the batch's own window held
  when the storm began (limits_window) is the limit, and the gate (limits_rate) keeps starts
  under it from then on. Large requests refused again and again while small ones pass show a
  token limit the same way (limits_sizes). A 429 of a request started near a learned limit is
  the limit's too, and lowers it a little.
- **random**: a lone 429 the cap does not explain while the server is answering (a success in the
  last seconds) is a flaky gateway, not a limit: it changes no limit and is sent again at once.
- **unknown**: nothing says which (nothing answered lately): the sender backs off as the OpenAI
  client does.

A ``Retry-After`` (up to ``MAX_SERVER_DELAY``) delays the request that received it; only when the
429 is part of a storm (many at once: the whole account is limited) does it also hold every new
start until it has passed. A longer one is no pause: the runner stops the batch. The user's
``requests_per_minute`` spaces starts evenly on top, and ``max_concurrency`` bounds everything.
The limiter's state is plain counters and small fixed-size structures: no per-request history.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from airflow_provider_qwen.batch.limits_cap import CapFit
from airflow_provider_qwen.batch.limits_probe import DROP, CapProber
from airflow_provider_qwen.batch.limits_rate import Observation, RateGate
from airflow_provider_qwen.batch.limits_sizes import SizeWatch
from airflow_provider_qwen.batch.limits_storm import Refusal, StormWatch
from airflow_provider_qwen.batch.limits_window import Bucket, StartWindow
from airflow_provider_qwen.client.retry import MAX_SERVER_DELAY  # a longer Retry-After is no pause

DEFAULT_RATE_WINDOW_S = 60.0  # the service's limits are per minute
MAX_NAP_S = 0.5  # waits are slept in naps this long at most, so a changed limit is seen soon
RECENT_OK_S = 2.0  # a success this recent (or 4 answers' time) says the server is answering
RANDOM_SHARE_MAX = 0.3  # above this share of random 429s, they are no longer retried at once
RANDOM_SHARE_WEIGHT = 1 / 32
CONCURRENCY, RATE, RANDOM, UNKNOWN, SUSPECT = "concurrency", "rate", "random", "unknown", "suspect"
KINDS = (CONCURRENCY, RATE, RANDOM, UNKNOWN, SUSPECT)
YOUNG_MIN_S = 0.005  # a request out this briefly may still be refused (else three 429 round trips)
STORM_HOLD_MIN_S = 0.02  # a suspect run is held at least this long (else 1.5 answers' time)


def check_limits(max_concurrency: Any, requests_per_minute: Any) -> None:
    """A clear error, before any request, for a limit that is no number or none the limiter can keep
    (NaN passes every comparison, so ``<= 0`` alone lets it through: starts were never paced)."""
    if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise ValueError(f"max_concurrency={max_concurrency!r} must be an integer >= 1")
    rpm = requests_per_minute
    if rpm is not None and (
        isinstance(rpm, bool) or not isinstance(rpm, (int, float)) or not math.isfinite(rpm) or rpm <= 0
    ):
        raise ValueError(f"requests_per_minute={rpm!r} must be None or a finite number > 0")


def loop_time() -> float:
    """The running event loop's clock (monotonic; a test's virtual clock), else ``time.monotonic``."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        return time.monotonic()


@dataclass
class _Start:
    """What the limiter noted when a request started."""

    level: int  # requests in flight when it started, this one included
    time: float
    bucket: Bucket
    seen: Observation  # the window's starts and tokens before this one
    probe: str | None  # "cap": one above the cap; "rate": one past a full window; None
    estimate: int  # its tokens as estimated at the start (0: none made)


class AdaptiveLimiter:
    """Concurrency held under a learned cap, starts under a learned rate, 429s told apart."""

    def __init__(
        self,
        max_concurrency: int,
        *,
        requests_per_minute: float | None = None,
        rate_window_s: float = DEFAULT_RATE_WINDOW_S,
        min_concurrency: int = 1,
        clock: Callable[[], float] = loop_time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        check_limits(max_concurrency, requests_per_minute)
        self.max_concurrency = max_concurrency
        self.min_concurrency = max(1, min(min_concurrency, max_concurrency))
        self.fit = CapFit(max_concurrency, keep=max(64, 2 * max_concurrency))
        self.window = StartWindow(rate_window_s)
        self.gate = RateGate(self.window)
        self.storms = StormWatch()
        self.sizes = SizeWatch()
        self.interval = 60.0 / requests_per_minute if requests_per_minute else 0.0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.lowest_limit = max_concurrency  # the lowest limit an answer came back under
        self.rate_limited = 0  # every 429
        self.counts = dict.fromkeys(KINDS, 0)  # 429s by what they were taken for
        self.retry_after_waits = 0  # 429s whose Retry-After delayed their own request
        self.account_pauses = 0  # Retry-Afters that held every new start (a storm's)
        self.last_kind = ""  # what the latest 429 was taken for
        self._refusal: Refusal | None = None  # the latest 429 in the storm watch
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()  # one acquirer at a time decides; the others queue in order
        self._slot = asyncio.Event()
        self._tickets = 0  # requests started so far; a ticket is a request's start number
        self._starts: dict[int, _Start] = {}
        self._paused_until = 0.0
        self._next_start = 0.0
        self.prober = CapProber()
        self._last_ok_at: float | None = None  # when the latest success came
        self._random_share = 0.0
        self._share_before_run = 0.0  # the random share when the open run of 429s began
        self._latency = 0.0
        self._refusal_rtt = 0.0  # how soon a 429 comes back
        self._cap_refused = -1  # the latest-sent request refused for the cap

    # -- state --------------------------------------------------------------------------------------
    @property
    def limit(self) -> int:
        """Requests allowed in flight now: the learned cap, else ``max_concurrency``."""
        cap = self.fit.cap
        if cap is None:
            return self.max_concurrency
        return max(self.min_concurrency, min(cap, self.max_concurrency))

    @property
    def paused_for(self) -> float:
        """Seconds left of an account-wide pause a storm's Retry-After asked for (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    @property
    def counts_tokens(self) -> bool:
        """Whether ``acquire`` wants the request's token estimate (a token limit is in force, or
        large requests are refused while small ones pass)."""
        return self.gate.counts_tokens or self.sizes.sizing

    @property
    def rate_window_s(self) -> float:
        return self.window.window

    # -- a request's life ---------------------------------------------------------------------------
    async def acquire(self, tokens: int = 0) -> int:
        """Wait for a slot, any account-wide pause, the learned rate and the user's pace; returns the
        request's ticket. ``tokens``: its estimate, needed only when ``counts_tokens``."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = max(self._paused_until - now, self._storm_wait(now))  # (a storm may set the gate)
                if self.interval:
                    wait = max(wait, self._next_start - now)
                rate_wait, rate_probe = self.gate.wait(now, tokens)
                wait = max(wait, rate_wait)
                if wait > 0:
                    await self._sleep(min(wait, MAX_NAP_S))
                    continue
                cap_probe = False
                if self.in_flight >= self.limit:
                    if not self._cap_probe_due(now):
                        self._slot.clear()
                        await self._slot.wait()
                        continue
                    cap_probe = True
                return self._start(now, "rate" if rate_probe else "cap" if cap_probe else None, tokens)

    def succeeded(self, ticket: int, tokens: int | None = None, completion: int | None = None) -> None:
        """The request answered; ``tokens`` / ``completion``: the total and completion tokens its
        usage reported (None: not reported)."""
        admitted, youngest = self._admitted_in_flight(ticket)  # the server surely held that many with it
        self.prober.observe(admitted)
        start = self._release(ticket)
        now = self._clock()
        self.window.answered(start.bucket, tokens, completion, start.estimate)
        if start.estimate:
            self.sizes.admitted(start.seen.tokens + start.estimate, start.seen.tokens)
        self.fit.add(start.level, True, admitted)
        cap = self.fit.cap
        if cap is not None and admitted > cap + 1 and youngest > self._cap_refused:
            self.fit.restart_at(admitted)  # more held at once, all sent after the cap's 429s
            self.prober.track(now, None)  # a new cap, to be confirmed
        self.storms.succeeded(ticket)
        self._last_ok_at = now
        self._latency += 0.1 * ((now - start.time) - self._latency)
        self._random_share *= 1 - RANDOM_SHARE_WEIGHT
        if start.probe == "rate":
            self.gate.probe_answered(now, ok=True)
        elif start.probe == "cap":
            rise = self.prober.answered(now, ok=True)
            if rise == DROP:
                self.fit.raise_to(self.max_concurrency)  # no cap: the 429s that made it were random
            elif rise:
                self.fit.raise_to(start.level - 1 + rise)
        self._after(now)
        self.lowest_limit = min(self.lowest_limit, self.limit)  # as it stands between answers

    def rate_limited_by_server(
        self, ticket: int, retry_after: float | None = None, *, random_before: int = 0
    ) -> float | None:
        """The request got a 429 (``random_before``: how many of its tries just before this one
        were 429s taken for random, ``last_kind``). Returns how long it should wait before it is
        sent again: its own ``Retry-After``, 0 (the limiter's slot and gate are wait enough), or
        None (nothing says why, or it keeps being refused "at random": back off). A request taken
        for randomly refused a third time in a row waits two answers' time first (its size may be
        what the server refuses: ``SizeWatch``)."""
        start = self._release(ticket)
        level = start.level
        now = self._clock()
        self._refusal_rtt += 0.2 * ((now - start.time) - self._refusal_rtt)
        self.rate_limited += 1
        self.window.refused(start.bucket, start.estimate)
        kind = self.last_kind = self._classify(ticket, start, level, now)
        self.counts[kind] += 1
        self._after(now)
        if start.probe == "cap":
            self.prober.answered(now, ok=False)
        elif kind == CONCURRENCY and self.fit.cap is not None:
            self.prober.other_refused(self.fit.cap, self.max_concurrency)
        if kind == RANDOM:  # refused again and again while others pass: not random (sizes?)
            self.sizes.refused_randomly(again=random_before > 0)
        if retry_after is None or not 0 < retry_after <= MAX_SERVER_DELAY:
            if kind == UNKNOWN or (kind == RANDOM and random_before >= 4):
                return None
            if kind == RANDOM and random_before >= 2:  # the third in a row: give the window time
                return 2 * self._latency
            return 0.0
        self.retry_after_waits += 1
        if kind == CONCURRENCY:
            self.prober.warn(now)
        if kind in (SUSPECT, RANDOM, UNKNOWN) and self._refusal is not None:
            self._refusal.until = now + retry_after  # if it turns out a storm's, everyone waits
        if kind == RATE and now + retry_after > self._paused_until:  # the whole account is limited
            self.account_pauses += 1
            self._paused_until = now + retry_after
        return retry_after

    def failed(self, ticket: int) -> None:
        """The request failed otherwise: free its slot, learn nothing."""
        start = self._release(ticket)
        if start.probe == "rate":
            self.gate.probe_in_flight = False
        elif start.probe == "cap":
            self.prober.in_flight = False

    # -- internals ----------------------------------------------------------------------------------
    def _start(self, now: float, probe: str | None, estimate: int) -> int:
        seen = Observation(self.window.count(now), self.window.tokens(now))
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        ticket = self._tickets
        self._tickets += 1
        if self.interval:
            self._next_start = max(now, self._next_start) + self.interval
        if probe == "rate":
            self.gate.probe_started()
        elif probe == "cap":
            self.prober.started(self.in_flight)
        bucket = self.window.start(now, estimate)
        self._starts[ticket] = _Start(self.in_flight, now, bucket, seen, probe, estimate)
        return ticket

    def _release(self, ticket: int) -> _Start:
        start = self._starts.pop(ticket)
        self.in_flight -= 1
        self._slot.set()
        return start

    def _admitted_in_flight(self, ticket: int) -> tuple[int, int]:
        """Requests in flight that have been out longer than a 429 takes to come back, so the
        server took them (the youngest may still be refused): how many it held, at least, and the
        ticket of the latest sent of them (``ticket``'s own, the one answering, if none)."""
        young = max(YOUNG_MIN_S, 3 * self._refusal_rtt)
        if self._latency:
            young = min(young, self._latency / 2)
        since = self._clock() - young
        count = 0
        youngest = ticket
        for other, start in reversed(self._starts.items()):  # newest first: stop at the first old one
            if start.time <= since:
                youngest = max(ticket, other)
                break
            count += 1
        return max(1, self.in_flight - count), youngest

    def _after(self, now: float) -> None:
        self.prober.latency = self._latency
        self.prober.track(now, self.fit.cap)

    def _cap_probe_due(self, now: float) -> bool:
        """One request above the cap, now and then, while others wait for a slot."""
        if self.limit >= self.max_concurrency or self.in_flight > self.limit:  # drain to a lowered cap
            return False
        return self.prober.due(now)

    def _classify(self, ticket: int, start: _Start, level: int, now: float) -> str:
        if start.probe == "rate":
            self.gate.probe_answered(now, ok=False)
            return RATE
        if self.gate.near_limit(start.seen, start.estimate):  # started at the learned limit: it is lower
            self.gate.leaked(start.seen, start.estimate)
            return RATE
        if self.fit.explains(level):
            self.fit.add(level, False)
            self._cap_refused = max(self._cap_refused, ticket)
            return CONCURRENCY
        held = start.seen.tokens + start.estimate if start.estimate else 0
        tokens = self.sizes.refused(held, start.seen.tokens)
        if tokens is not None:  # large requests refused above what the window held with others
            self.gate.learn_tokens(now, tokens)
            return RATE
        # not in the fit: a 429 the cap does not explain would only drag it down
        refusal = self._refusal = Refusal(ticket, UNKNOWN, start.seen)
        if not self.storms.running:
            self._share_before_run = self._random_share
        if self.storms.refused(refusal, self._tickets, now, random_share=self._share_before_run):
            refusal.kind = SUSPECT  # nothing new starts until it is judged (``_storm_wait``)
            return SUSPECT
        if self._random_share < RANDOM_SHARE_MAX and self._proven(now):
            self._random_share += RANDOM_SHARE_WEIGHT * (1 - self._random_share)
            refusal.kind = RANDOM
        return refusal.kind

    def _storm_wait(self, now: float) -> float:
        """While a run of 429s is suspect, how long nothing new may start; after the hold, the run
        is judged: a storm teaches the gate, anything else was random (or the cap, which the fit
        follows by itself)."""
        storms = self.storms
        if storms.suspect_since is None:
            return 0.0
        hold = max(STORM_HOLD_MIN_S, 1.5 * self._latency)
        verdict = storms.judge(now, hold)
        if verdict is None:
            return storms.suspect_since + hold - now
        storm, run = verdict
        if not storm:
            for entry in run:
                if entry.kind == SUSPECT:
                    self.counts[SUSPECT] -= 1
                    self.counts[RANDOM] += 1
            return 0.0
        self._random_share = self._share_before_run  # the run's 429s were the storm's, not random
        for entry in run:  # counted as random, unknown or suspect when they came: a storm's
            self.counts[entry.kind] -= 1
            self.counts[RATE] += 1
        until = max(entry.until for entry in run)
        if until > max(now, self._paused_until):  # many at once asked to wait: the account is limited
            self.account_pauses += 1
            self._paused_until = until
        seen = [entry.seen for entry in run]
        self.gate.storm(now, Observation(min(o.requests for o in seen), min(o.tokens for o in seen)))
        return 0.0

    def _proven(self, now: float) -> bool:
        """Whether the server answered a request of the batch in the last few seconds."""
        last = self._last_ok_at
        return last is not None and last >= now - max(RECENT_OK_S, 4 * self._latency)

    def report(self) -> dict[str, Any]:
        """What the limiter learned (JSON-safe; ``qwen_batch["limits"]``)."""
        window = self.window.window
        per_minute = 60.0 / window
        requests, tokens = self.gate.requests, self.gate.tokens
        return {
            "concurrency_cap": self.fit.cap,
            "cap_confirmed": self.prober.confirmed if self.fit.cap is not None else None,
            "requests_per_minute": None if requests is None else round(requests * per_minute, 1),
            "tokens_per_minute": None if tokens is None else round(tokens * per_minute),
            "rate_confirmed": self.gate.confirmed if self.gate.active else None,
            "rate_window_s": window,
            "rate_storms": self.gate.storms,
            "concurrency_429s": self.counts[CONCURRENCY],
            "rate_429s": self.counts[RATE],
            "random_429s": self.counts[RANDOM],
            "unexplained_429s": self.counts[UNKNOWN] + self.counts[SUSPECT],
            "retry_after_waits": self.retry_after_waits,
            "account_pauses": self.account_pauses,
        }
