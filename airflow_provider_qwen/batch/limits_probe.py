"""When to send one request above the learned concurrency cap, and what its answer means.

A cap found from one burst may be no cap at all: a few random 429s among the first requests look
the same, since nothing in a burst says which request the server saw first. A cap is confirmed by
the weight of its 429s (``STRONG``: half or more of the requests a burst could send above it were
refused, as 48 of the 64 sent at once above a cap of 16; random 429s refuse a few), by two
probes above it refused in a row, or by a Retry-After on its 429s (a server that says how long to
wait means it). An unconfirmed cap whose probe passes is dropped: its 429s were random.

Once confirmed, a probe checks now and then whether the cap rose (another task on the key ended):
the first soon, then twice as far apart after each refused one, up to ``MAX_EVERY_S``. Two
passes in a row raise the cap, by one and then twice as far each time while they keep passing; a
cap overshot comes back down with the next 429s above it. A client sees the server's load a
little late (an answer on its way back still counts here), so a probe can slip into a place just
freed: it counts as passed only if no other request met the cap while it was out, and the batch
was seen holding, at once and beside it, requests the server had surely taken (``observe``: not
just started, so not still to be refused): the cap's worth of them to raise the cap, one fewer
to drop an unconfirmed cap (a first burst's random 429s). A probe that passed without that proves
nothing and is sent again soon. A refused probe costs a
429, and with a Retry-After its request waits: then probes start after ``WARNED_EVERY_S`` and a
rise takes three passes, one at a time.
"""

from __future__ import annotations

FIRST_EVERY_S = 0.05  # or two latencies, if longer
WARNED_EVERY_S = 60.0
MAX_EVERY_S = 300.0
DROP = -1  # ``answered``: the cap was not one
STRONG = 0.5  # 429s above a new cap that confirm it, as a share of the places between it and the max
STRONG_MIN = 4


class CapProber:
    """The schedule and the verdicts of the probes above the cap."""

    def __init__(self) -> None:
        self.confirmed = False
        self.warned = False  # the cap's 429s carry a Retry-After
        self.in_flight = False
        self.spoiled = False  # another request met the cap while the probe was out
        self.level = 0  # the level the probe went out at (one above the cap)
        self.peak = 0  # the most requests seen admitted at once while it was out
        self.latency = 0.0
        self._every = FIRST_EVERY_S
        self._next: float | None = None  # None: no cap to probe
        self._refused = 0  # refused in a row
        self._passed = 0  # passed in a row
        self._step = 1
        self._explained = 0  # 429s above the cap since it was found

    @property
    def first_every(self) -> float:
        return WARNED_EVERY_S if self.warned else max(FIRST_EVERY_S, 2 * self.latency)

    def track(self, now: float, cap: int | None) -> None:
        """After every answer: a cap appeared (probe it soon) or is gone (forget the schedule)."""
        if cap is None:
            self._next = None
            self.confirmed = self.in_flight = False
            self._refused = self._passed = self._explained = 0
            self._step = 1
        elif self._next is None:
            self._every = self.first_every
            self._next = now if not self.confirmed else now + self._every

    def warn(self, now: float) -> None:
        """A cap 429 carried a Retry-After: the cap is real, and a refused probe costs a wait."""
        if self.warned:
            return
        self.warned = self.confirmed = True
        self._every = max(self._every, WARNED_EVERY_S)
        if self._next is not None:
            self._next = max(self._next, now + WARNED_EVERY_S)

    def due(self, now: float) -> bool:
        return self._next is not None and not self.in_flight and now >= self._next

    def started(self, level: int) -> None:
        self.in_flight = True
        self.spoiled = False
        self.level, self.peak = level, 0

    def observe(self, admitted: int) -> None:
        """The batch was seen holding ``admitted`` requests the server had taken, at once."""
        if self.in_flight:
            self.peak = max(self.peak, admitted)

    def other_refused(self, cap: int, most: int) -> None:
        """Another request met the cap (``most``: the batch's max_concurrency): a probe out now took a
        place someone needed, and a new cap gains weight."""
        if self.in_flight:
            self.spoiled = True
        self._explained += 1
        if self._explained >= max(STRONG_MIN, STRONG * (most - cap)):
            self.confirmed = True

    def answered(self, now: float, *, ok: bool) -> int:
        """The probe's answer: ``DROP`` (the cap was random 429s), else how far to raise it (0: not)."""
        self.in_flight = False
        needed = self.level - (0 if self.confirmed else 1)
        if ok and not self.spoiled and self.peak < needed:  # it proved nothing: again soon
            self._next = now + self.first_every
            return 0
        if ok and not self.spoiled:
            if not self.confirmed:
                self.track(now, None)
                return DROP
            self._refused = 0
            self._passed += 1
            self._every = self.first_every
            self._next = now + self._every
            if self._passed < (3 if self.warned else 2):
                return 0
            self._passed, step = 0, self._step
            self._step = 1 if self.warned else 2 * step
            return step
        self._passed, self._step = 0, 1
        self._refused += 1
        self.confirmed = self.confirmed or self._refused >= 2
        self._every = min(2 * self._every, MAX_EVERY_S) if self.confirmed else self.first_every
        self._next = now + self._every
        return 0
