"""Random 429s, a fallen cap, or a spent rate limit? Told apart by the requests started after them.

A 429 the concurrency cap does not explain (sent at a level the server accepts) is random (a
flaky gateway: the next requests pass), a sign that the cap fell (another task on the key: some
of the next requests pass, the others are refused), or the start of a storm (a per-minute limit is
spent: every request started from now on is refused until the window frees).

``StormWatch`` follows the run: the 429s of requests started after the latest request that
succeeded. A run of ``MIN_RUN`` or more making up at least ``STORM_SHARE`` of everything started
since its first is *suspect* (random 429s at 10% almost never are: 8 of 10 starts in a row
refused is about 1 in 2,000,000). Meanwhile the limiter starts nothing new (a storm is not fed
with requests it will refuse), for one answer's time (``hold``): then the run is judged. A storm
is when hardly any request started after its first 429 succeeded (``PASSED_MAX`` of the 429s: a
few at the edge, admitted just before the window filled). More passed means the server still
admits some: the cap fell (another task took places), or the 429s were random.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MIN_RUN = 8
STORM_SHARE = 0.75
PASSED_MAX = 0.15  # requests started after a storm's first 429 that may pass, as a share of its 429s


@dataclass
class Refusal:
    """One 429 of the run: its ticket, how the limiter counted it, and what it noted at its start."""

    ticket: int
    kind: str
    seen: Any = None
    until: float = 0.0  # when its Retry-After ends (0: none)


class StormWatch:
    """The unexplained 429s since the latest success (in start order): random, suspect or a storm."""

    def __init__(self, *, min_run: int = MIN_RUN, share: float = STORM_SHARE) -> None:
        self.min_run = min_run
        self.share = share
        self.suspect_since: float | None = None  # when the run became suspect
        self._last_ok = -1  # ticket of the latest-started request that succeeded
        self._run: list[Refusal] = []  # the 429s of requests started after it
        self._passed = 0  # while suspect: successes of requests started after the run's first 429

    @property
    def running(self) -> bool:
        """Whether a run of unexplained 429s is open."""
        return bool(self._run)

    def succeeded(self, ticket: int) -> None:
        """A request succeeded: the 429s of requests started before it are no run any more; while
        the run is suspect, it counts against the run being a storm if it started after its first."""
        if self.suspect_since is not None:
            self._passed += ticket > self._run[0].ticket
            return
        if ticket > self._last_ok:
            self._last_ok = ticket
            kept = [entry for entry in self._run if entry.ticket > ticket]
            if len(kept) < len(self._run):  # the server took a request started after some of them
                self._run = kept
                self.suspect_since = None  # the next 429 judges what is left

    def refused(self, refusal: Refusal, issued: int, now: float, *, random_share: float = 0.0) -> bool:
        """Note an unexplained 429 (``issued`` tickets so far); True if the run is suspect now.
        ``random_share``: the share of random 429s seen before the run, which raises the share needed."""
        if refusal.ticket > self._last_ok:
            self._run.append(refusal)
        if self.suspect_since is None and len(self._run) >= self.min_run:
            started = issued - min(entry.ticket for entry in self._run)
            share = min(0.95, max(self.share, 3 * random_share))
            if len(self._run) >= share * started:
                self.suspect_since = now
                self._run.sort(key=lambda entry: entry.ticket)
                self._passed = 0
        return self.suspect_since is not None

    def judge(self, now: float, hold: float) -> tuple[bool, list[Refusal]] | None:
        """After a suspect run's ``hold``: (whether it is a storm, its 429s oldest first), and the
        watch starts a new run; None while there is nothing to judge yet."""
        if self.suspect_since is None or now < self.suspect_since + hold:
            return None
        run, passed = self._run, self._passed
        self._run, self._passed, self.suspect_since = [], 0, None
        return passed <= PASSED_MAX * len(run), run
