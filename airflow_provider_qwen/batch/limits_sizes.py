"""Large requests refused while small ones pass: a tokens-per-minute limit the storms never show.

Under a token limit with requests of different sizes, the window is never full for everyone: a
small request still fits when a large one does not. No storm comes (requests keep passing), and
the large ones look randomly refused, again and again. ``SizeWatch`` notices that (of the 429s
taken for random, ``REPEATS`` or more are of requests refused before: random 429s at 10% hit the
same request twice a tenth of the time) and turns on token counting: from then on every start
carries its token estimate (the prompt counted, ``request_tokens``), so the limiter knows what the
window held with each request (``held``, its own tokens included). A token limit is found once
``REFUSED_MIN`` requests were refused above the most the window held with one admitted: the limit
is that most (proven: the server took it), and the rate gate keeps starts under it.
"""

from __future__ import annotations

REFUSED_MIN = 3
REPEATS = 0.3  # share of "random" 429s that hit a request refused before, that means sizes matter
REPEATS_MIN = 5


class SizeWatch:
    """When to count tokens, and the token limit that refusals of large requests show."""

    def __init__(self) -> None:
        self.sizing = False  # starts carry token estimates
        self._admitted = 0  # the most the window held with a request the server took
        self._refused = 0  # refusals above that, since the last limit found
        self._random = 0  # 429s taken for random
        self._repeats = 0  # of them, of requests refused before

    def refused_randomly(self, *, again: bool) -> None:
        """A 429 taken for random (``again``: its request was refused before): if too many of them
        hit the same requests again, sizes matter, so count tokens from now on."""
        self._random += 1
        self._repeats += again
        if self._repeats >= REPEATS_MIN and self._repeats >= REPEATS * self._random:
            self.sizing = True

    def admitted(self, held: int) -> None:
        if self.sizing and held > self._admitted:
            self._admitted = held
            self._refused = 0

    def refused(self, held: int) -> int | None:
        """A request refused with ``held`` tokens in the window (its own included, 0 if not
        counted); returns a token limit once the refusals show one, else None."""
        if not self.sizing or held <= 0 or not self._admitted or held <= self._admitted:
            return None
        self._refused += 1
        if self._refused < REFUSED_MIN:
            return None
        self._refused = 0
        return self._admitted
