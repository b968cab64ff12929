"""The account's concurrency cap, learned from where in-flight levels start to meet 429s.

Every answered request is a sample ``(level, ok)``: ``level`` is how many of the batch's requests
were in flight when it was sent, itself included. Under a server cap of ``C`` in flight, requests
sent at levels up to ``C`` pass and those above are refused; random 429s (a flaky gateway) fall at
any level. ``CapFit`` keeps the last ``keep`` samples and fits the one threshold that explains them
best: the ``C`` with the fewest samples on the wrong side (429s at or below it, successes above
it), the largest such ``C`` on a tie. A few random 429s never outweigh the many successes at the
level the batch runs at, so they do not move the cap; a storm of 429s above a level does.

So the limit is held at the cap it found, not halved and crawled back, and it follows a cap that
falls (another task on the same key) as soon as the recent samples say so. The cap outlives its
evidence: when the 429s that showed it have left the samples (the batch ran under it without
meeting it), it stays; only a probe that passed above it (``raise_to``) lifts it. None means no
cap below ``max_level`` was seen.
"""

from __future__ import annotations

from collections import deque


class CapFit:
    """The concurrency cap that best separates recent successes (below) from recent 429s (above)."""

    def __init__(self, max_level: int, *, keep: int) -> None:
        if max_level < 1:
            raise ValueError(f"max_level={max_level} must be >= 1")
        self.max_level = max_level
        self.keep = max(1, keep)
        self._samples: deque[tuple[int, bool, int]] = deque()  # (level, ok, proven level)
        self._ok = [0] * (max_level + 1)  # index: level (levels above max_level count as max_level)
        self._refused = [0] * (max_level + 1)
        self._proven = [0] * (max_level + 1)  # successes by the level they prove the server held
        self._refused_total = 0
        self.cap: int | None = None

    @property
    def refused_samples(self) -> int:
        """429s among the samples kept (0: nothing says there is a cap)."""
        return self._refused_total

    def add(self, level: int, ok: bool, proven: int = 0) -> None:
        """Record one answered request and refit; ``proven``: for a success, how many requests the
        server surely held with it (it raises the cap no further than that)."""
        sample = (self._clamp(level), ok, self._clamp(proven) if ok and proven else 0)
        self._samples.append(sample)
        self._count(*sample, 1)
        if len(self._samples) > self.keep:
            self._count(*self._samples.popleft(), -1)
        if self._refused_total:  # successes alone neither make a cap nor lift one
            self.cap = self._settle(self._fit())

    def raise_to(self, level: int) -> None:
        """A probe passed at ``level`` above the cap: the cap is at least that now, and the 429s at
        or below it that said otherwise are dropped."""
        level = self._clamp(level)
        kept = [sample for sample in self._samples if sample[1] or sample[0] > level]
        self._samples = deque(kept)
        self._ok = [0] * (self.max_level + 1)
        self._refused = [0] * (self.max_level + 1)
        self._proven = [0] * (self.max_level + 1)
        self._refused_total = 0
        for sample in kept:
            self._count(*sample, 1)
        fitted = self._fit() if self._refused_total else level
        self.cap = None if fitted is None or level >= self.max_level else max(level, fitted)

    def restart_at(self, level: int) -> None:
        """The server held ``level`` at once, all sent after every 429 kept here: those told of an
        account that is no more (the first requests refused, a cap since risen). Drop them; the cap
        is what was held, to be probed (None when that is the max)."""
        self._samples = deque(sample for sample in self._samples if sample[1])
        self._refused = [0] * (self.max_level + 1)
        self._refused_total = 0
        level = self._clamp(level)
        self.cap = None if level >= self.max_level else level

    def explains(self, level: int) -> bool:
        """Whether a 429 at ``level`` is what the cap predicts: the fit with that 429 added puts the
        cap below ``level`` (so it was sent above the cap). Never true at level 1: no cap is 0."""
        level = self._clamp(level)
        if level <= 1:
            return False
        self._count(level, False, 0, 1)
        try:
            cap = self._fit()
        finally:
            self._count(level, False, 0, -1)
        return cap is not None and cap < level

    def _settle(self, fitted: int | None) -> int | None:
        """The new cap from a fit: lower at once, but higher only as far as a success proved the
        server to hold that many at once (a request sent above the cap can pass because another
        was refused on its way: its level alone proves nothing)."""
        if self.cap is None or (fitted is not None and fitted <= self.cap):
            return fitted
        proven = next((lvl for lvl in range(self.max_level, 0, -1) if self._proven[lvl]), 0)
        raised = max(self.cap, min(self.max_level if fitted is None else fitted, proven))
        return None if raised >= self.max_level else raised

    def _clamp(self, level: int) -> int:
        return max(1, min(level, self.max_level))

    def _count(self, level: int, ok: bool, proven: int, step: int) -> None:
        if ok:
            self._ok[level] += step
            self._proven[proven] += step
        else:
            self._refused[level] += step
            self._refused_total += step

    def _fit(self) -> int | None:
        """The threshold with the fewest samples on its wrong side; None when no cap is below the max."""
        if not self._refused_total:
            return None
        errors = sum(self._ok[1:])  # threshold 0: every success is on the wrong side
        best, best_errors = 0, errors
        for level in range(1, self.max_level + 1):
            errors += self._refused[level] - self._ok[level]
            if errors <= best_errors:
                best, best_errors = level, errors
        if best >= self.max_level:
            return None
        return max(1, best)
