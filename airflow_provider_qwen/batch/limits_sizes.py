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

A refusal counts only when the window held no more before it than before some admitted request
(``before``), and its own size put it clearly above the most admitted: in the first window the
window only grows, so any 429 (a random one too) comes with more tokens in it than any answered
request saw, and with requests of one size that alone would "find" a token limit (30% random 429s
made one, and a batch 18 times slower).
"""

from __future__ import annotations

REFUSED_MIN = 3
REPEATS = 0.3  # share of "random" 429s that hit a request refused before, that means sizes matter
REPEATS_MIN = 5
SIZE_MARGIN = 0.1  # a refused request is "large" when it held this share of its own size more


class SizeWatch:
    """When to count tokens, and the token limit that refusals of large requests show."""

    def __init__(self) -> None:
        self.sizing = False  # starts carry token estimates
        self._admitted = 0  # the most the window held with a request the server took
        self._admitted_before = 0  # the most the window held before a request the server took
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

    def admitted(self, held: int, before: int | None = None) -> None:
        """A request the server took with ``held`` tokens in the window, its own included
        (``before``: without them)."""
        if not self.sizing:
            return
        if before is not None:
            self._admitted_before = max(self._admitted_before, before)
        if held > self._admitted:
            self._admitted = held
            self._refused = 0

    def refused(self, held: int, before: int | None = None) -> int | None:
        """A request refused with ``held`` tokens in the window (its own included, 0 if not
        counted; ``before``: without them); returns a token limit once the refusals show one."""
        if not self.sizing or held <= 0 or not self._admitted or held <= self._admitted:
            return None
        if before is not None and (
            before > self._admitted_before or held - self._admitted <= SIZE_MARGIN * (held - before)
        ):  # the window was fuller than any admitted request saw, or it was no larger than those
            return None
        self._refused += 1
        if self._refused < REFUSED_MIN:
            return None
        self._refused = 0
        return self._admitted
