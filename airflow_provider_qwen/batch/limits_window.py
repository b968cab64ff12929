"""What the batch has started in the last window: a mirror of the server's rate-limit window.

A per-minute limit counts what the account started in a sliding window (the service's minute).
``StartWindow`` counts the same on the client side: each admitted start, and its tokens, in
``BUCKETS`` buckets across the window, so the memory is fixed however many requests a second the
batch sends. A request refused with a 429 is taken out again (the server did not count it). When
a rate limit is known, the gate asks the window how many starts and tokens it holds and when
enough of them will have left it.

A request's tokens are what its answer reports (``usage.total_tokens``). Until it answers it
counts as the estimate it started with (its prompt counted, plus the completion an answer uses on
average), or, when no estimate was made (no token limit in force, so no prompt is tokenised), as
the mean of the answered ones.
"""

from __future__ import annotations

from collections import deque

BUCKETS = 240  # across one window: 0.25 s buckets for a minute; a start leaves at most one bucket late


class Bucket:
    """Starts and tokens of one slice of the window."""

    __slots__ = ("alive", "count", "estimated", "since", "tokens", "unsized")

    def __init__(self, since: float) -> None:
        self.since = since
        self.count = 0  # admitted starts
        self.unsized = 0  # of them, in flight with no estimate (they count as the mean)
        self.estimated = 0  # estimates of those in flight with one
        self.tokens = 0  # tokens of the answered ones
        self.alive = True


class StartWindow:
    """Admitted starts and their tokens over the last ``window`` seconds."""

    def __init__(self, window: float) -> None:
        if not window > 0 or window == float("inf"):  # NaN and infinity too
            raise ValueError(f"rate window={window} must be > 0 seconds")
        self.window = window
        self.width = window / BUCKETS
        self._buckets: deque[Bucket] = deque()
        self._count = 0
        self._unsized = 0
        self._estimated = 0
        self._tokens = 0
        self._answered = 0  # requests whose tokens were counted, ever (for the mean)
        self._answered_tokens = 0
        self._answered_completion = 0
        self._squares = 0.0  # sum of squared token counts (for the spread)

    # -- what the limiter records -----------------------------------------------------------------
    def start(self, now: float, estimate: int = 0) -> Bucket:
        """An admitted start at ``now`` (``estimate``: its tokens, 0 if none was made); returns its
        bucket, for ``refused`` / ``answered`` with the same estimate."""
        self._purge(now)
        if not self._buckets or now >= self._buckets[-1].since + self.width:
            self._buckets.append(Bucket(now))
        bucket = self._buckets[-1]
        self._add(bucket, count=1, unsized=0 if estimate > 0 else 1, estimated=max(0, estimate))
        return bucket

    def refused(self, bucket: Bucket, estimate: int = 0) -> None:
        """The server refused that start: it counts for nothing."""
        self._add(bucket, count=-1, unsized=0 if estimate > 0 else -1, estimated=-max(0, estimate))

    def answered(
        self, bucket: Bucket, tokens: int | None, completion: int | None = None, estimate: int = 0
    ) -> None:
        """That start was answered: ``tokens`` is the total its answer reports and ``completion`` the
        completion part of it (None: not reported; the estimate, or the mean, stays)."""
        if tokens is None or tokens < 0:
            if estimate <= 0:  # an unsized start that will never be sized: count it at the mean
                self._add(bucket, unsized=-1, tokens=round(self.mean_tokens))
            return
        self._add(bucket, unsized=0 if estimate > 0 else -1, estimated=-max(0, estimate), tokens=tokens)
        self._answered += 1
        self._answered_tokens += tokens
        self._answered_completion += max(0, min(completion or 0, tokens))
        self._squares += float(tokens) * tokens

    # -- what the gate reads ----------------------------------------------------------------------
    def count(self, now: float) -> int:
        """Admitted starts in the window."""
        self._purge(now)
        return self._count

    def tokens(self, now: float) -> int:
        """Tokens in the window: reported, estimated, or the mean for a start with neither."""
        self._purge(now)
        return self._tokens + self._estimated + round(self._unsized * self.mean_tokens)

    @property
    def mean_tokens(self) -> float:
        """Mean tokens of an answered request (0 before any answer with usage)."""
        return self._answered_tokens / self._answered if self._answered else 0.0

    @property
    def mean_completion_tokens(self) -> float:
        """Mean completion tokens of an answered request (what a request not yet sent will add)."""
        return self._answered_completion / self._answered if self._answered else 0.0

    @property
    def token_spread(self) -> float:
        """Coefficient of variation of tokens per request: 0 when every request is the same size."""
        if self._answered < 2 or not self._answered_tokens:
            return 0.0
        mean = self.mean_tokens
        variance = max(0.0, self._squares / self._answered - mean * mean)
        return float(variance**0.5 / mean)

    def free_at(self, now: float, *, requests: int | None, tokens: int | None, need: int = 0) -> float:
        """The time at which fewer than ``requests`` starts and at most ``tokens - need`` tokens will
        be in the window (``now`` when that is so already), counting only what is in it now."""
        self._purge(now)
        count, held = self._count, self.tokens(now)
        mean = self.mean_tokens
        when = now
        for bucket in self._buckets:
            fits_requests = requests is None or count < requests
            fits_tokens = tokens is None or held + need <= tokens
            if fits_requests and fits_tokens:
                return when
            count -= bucket.count
            held -= bucket.tokens + bucket.estimated + round(bucket.unsized * mean)
            when = bucket.since + self.window + self.width
        return when

    def _add(
        self, bucket: Bucket, *, count: int = 0, unsized: int = 0, estimated: int = 0, tokens: int = 0
    ) -> None:
        bucket.count += count
        bucket.unsized += unsized
        bucket.estimated += estimated
        bucket.tokens += tokens
        if bucket.alive:
            self._count += count
            self._unsized += unsized
            self._estimated += estimated
            self._tokens += tokens

    def _purge(self, now: float) -> None:
        """Drop buckets wholly older than the window (a bucket leaves when its last start could)."""
        buckets = self._buckets
        while buckets and buckets[0].since + self.width <= now - self.window:
            old = buckets.popleft()
            old.alive = False
            self._count -= old.count
            self._unsized -= old.unsized
            self._estimated -= old.estimated
            self._tokens -= old.tokens
