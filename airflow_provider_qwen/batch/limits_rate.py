"""A per-window rate limit learned from a storm of 429s, and the gate that keeps starts under it.

When the account's requests (or tokens) per minute are spent, every new request meets a 429,
whatever the load, until old starts leave the server's window. The limiter calls that a storm
(``limits_storm``) and hands the gate what the batch's own window (``limits_window``) held when the
storm began: that many starts (and tokens) per window is the limit. The gate then lets a start go
only while the window holds fewer, so the batch runs just under the limit instead of meeting it.

A storm can be a fluke (random 429s that happened to bunch up): the learned limit is believed only
once it is confirmed, by two probes in a row that the server refused while the window held the
learned count (one could be a random 429 itself), or by a second storm at the same count. An
unconfirmed limit whose probe passes is forgotten at once (a fluke costs 50 ms, not a window). A
confirmed one is raised by a passing probe: to what the window held with it, and by twice as
much more with every further pass in a row (a limit that rose is found in a few probes; one
overshot meets a storm again and is measured anew). Probes go one at a time while the window is
full, every 50 ms until the limit is confirmed, then twice as far apart each time the server
refuses one (at most a quarter window).

Which of requests or tokens binds is not said by the service: with requests of one size the two
are the same limit, and only the request count is kept (no prompt is tokenised). When sizes vary,
the token count is kept first; a second storm tells which count was the same both times.

The gate's own count can be a little off the server's (a start leaves its bucket up to one bucket
late; a request's tokens are estimated until it answers): a 429 of a request started near the
learned limit lowers the limit by one request toward what the window held then (``leaked``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from airflow_provider_qwen.batch.limits_window import StartWindow

PROBE_FIRST_S = 0.05
PROBE_POLL_S = 0.01  # while a probe is out, look this often for its answer
SAME_SIZE_SPREAD = 0.25  # coefficient of variation of tokens per request below which sizes are "one size"
CONSISTENT = 0.05  # two storms within 5% of each other saw the same limit
NEAR = 0.9  # a 429 of a request started with the window this full of the learned limit is the limit's


@dataclass(frozen=True)
class Observation:
    """What the window held when a storm began."""

    requests: int
    tokens: int


class RateGate:
    """Starts allowed while the window holds fewer than the learned requests (and tokens)."""

    def __init__(self, window: StartWindow) -> None:
        self.window = window
        self.requests: int | None = None
        self.tokens: int | None = None
        self.confirmed = False
        self.storms = 0
        self.probe_in_flight = False
        self._passed = 0  # probes passed in a row
        self._refused = 0  # probes refused in a row
        self._step = 1  # how far the next passing probe raises the limit
        self.observations: deque[Observation] = deque(maxlen=4)
        self._probe_interval = PROBE_FIRST_S
        self._next_probe = 0.0

    @property
    def active(self) -> bool:
        return self.requests is not None or self.tokens is not None

    @property
    def counts_tokens(self) -> bool:
        """Whether a start needs its token estimate (only with a token limit in force)."""
        return self.tokens is not None

    def storm(self, now: float, seen: Observation) -> None:
        """A storm began with ``seen`` in the window: learn (or lower) the limit from it."""
        self.storms += 1
        consistent = any(_close(o.requests, seen.requests) for o in self.observations)
        self.confirmed = self.confirmed or self.active or consistent  # a second storm under a gate too
        self.observations.append(seen)
        requests, tokens = max(1, seen.requests), seen.tokens if seen.tokens > 0 else None
        self.requests, self.tokens = self._binding(requests, tokens)
        self._passed = self._refused = 0
        self._step = 1
        self._probe_interval = PROBE_FIRST_S
        self._next_probe = now + PROBE_FIRST_S

    def learn_tokens(self, now: float, tokens: int) -> None:
        """A token limit shown by large requests refused while small ones passed (``SizeWatch``):
        kept alone (requests are not the limit: small ones kept passing), to be confirmed."""
        self.storms += 1
        self.requests, self.tokens = None, max(1, tokens)
        self.confirmed = False
        self._passed = self._refused = 0
        self._step = 1
        self._probe_interval = PROBE_FIRST_S
        self._next_probe = now + PROBE_FIRST_S

    def wait(self, now: float, need: int = 0) -> tuple[float, bool]:
        """(seconds before a start may go, whether the start due now is a probe)."""
        if not self.active:
            return 0.0, False
        free = self.window.free_at(now, requests=self.requests, tokens=self.tokens, need=need)
        if free <= now:
            return 0.0, False
        if self.probe_in_flight:
            return min(free - now, PROBE_POLL_S), False
        if self._next_probe <= now:
            return 0.0, True
        return min(free, self._next_probe) - now, False

    def near_limit(self, seen: Observation, need: int = 0) -> bool:
        """Whether a start that saw ``seen`` in the window was close to the learned limit."""
        if self.requests is not None and seen.requests >= NEAR * self.requests:
            return True
        return self.tokens is not None and seen.tokens + need >= NEAR * self.tokens

    def leaked(self, seen: Observation, need: int = 0) -> None:
        """A start the gate let through near the limit was refused: the mirror is off by a few, or
        the account's share fell, or the 429 was random. The limit comes down by one request (or a
        request's tokens) toward what the window held then; passing probes raise it again."""
        if self.requests is not None and seen.requests < self.requests:
            self.requests = max(1, self.requests - 1, seen.requests)
        if self.tokens is not None and seen.tokens + need < self.tokens:
            mean = max(1, round(self.window.mean_tokens))
            self.tokens = max(1, self.tokens - mean, seen.tokens + need)
        self._step = 1

    def probe_started(self) -> None:
        self.probe_in_flight = True

    def probe_answered(self, now: float, *, ok: bool) -> None:
        """A probe sent while the window was full passed (the server had room) or met a 429."""
        self.probe_in_flight = False
        self._passed = self._passed + 1 if ok else 0
        self._refused = 0 if ok else self._refused + 1
        if ok and not self.confirmed:
            self.forget()
            return
        if ok:  # confirmed: the server took more than we held; hold that, and more if it repeats
            step, self._step = self._step - 1, 2 * self._step
            if self.requests is not None:
                self.requests = max(self.requests, self.window.count(now)) + step
            if self.tokens is not None:
                held = self.window.tokens(now)
                self.tokens = max(self.tokens, held) + step * max(1, round(self.window.mean_tokens))
            self._probe_interval = PROBE_FIRST_S
        elif self.confirmed or self._refused >= 2:
            self.confirmed = True
            self._step = 1
            self._probe_interval = min(self._probe_interval * 2, self.window.window / 4)
        self._next_probe = now + self._probe_interval

    def forget(self) -> None:
        """No rate limit is known (the storms seen so far are kept, to recognise the next)."""
        self.requests = self.tokens = None
        self.confirmed = False
        self.probe_in_flight = False
        self._passed = self._refused = 0
        self._step = 1

    def _binding(self, requests: int, tokens: int | None) -> tuple[int | None, int | None]:
        """Keep the request count alone for one-size requests; with sizes that vary, keep both
        until two storms tell which of the two counts the server stopped at each time."""
        if tokens is None or self.window.token_spread < SAME_SIZE_SPREAD:
            return requests, None
        if len(self.observations) < 2:  # tokens first: were it requests, the next storm says so
            return None, tokens
        previous, last = self.observations[-2], self.observations[-1]
        request_change = _change(previous.requests, last.requests)
        token_change = _change(previous.tokens, last.tokens)
        return (requests, None) if request_change <= token_change else (None, tokens)


def _change(a: int, b: int) -> float:
    return abs(a - b) / max(a, b, 1)


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= max(2, CONSISTENT * max(a, b))
