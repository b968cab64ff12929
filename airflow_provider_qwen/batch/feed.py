"""The items of a batch as the workers take them: ``(index, item)`` one at a time, read ahead in
small blocks. A file input is read in a worker thread (storage I/O never blocks the event loop)
and only a block at a time is held, so a batch of millions of items needs no more memory than one
of thousands. Each item is taken exactly once, whichever worker asks.

``SendsFirst`` orders the workers' turns on the event loop: requests ready to go out before the
bookkeeping of items just answered.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

BLOCK = 256  # items read ahead at a time at most
BLOCK_CHARS = 8 << 20  # ... and about this many characters of text (a folder of large files)


class ItemFeed:
    """``await next()`` gives the next ``(index, item)``, or None when there are no more."""

    def __init__(
        self,
        items: Iterable[tuple[int, Any]],
        *,
        total: int | None,
        threaded: bool,
        label: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.total = total  # items in all, when known before reading them
        self.label = label or (lambda item: None)  # what names an item in its results row (a file)
        self.taken = 0
        self._items: Iterator[tuple[int, Any]] = iter(items)
        self._threaded = threaded
        self._ready: deque[tuple[int, Any]] = deque()
        self._done = False
        self._exhausted = False
        self._lock = asyncio.Lock()

    async def next(self) -> tuple[int, Any] | None:
        if not self._ready:
            async with self._lock:
                if not self._ready:
                    await self._refill()
        if not self._ready:
            return None
        self.taken += 1
        return self._ready.popleft()

    async def rest(self) -> AsyncIterator[tuple[int, Any]]:
        """The items no worker took (the batch stopped early), to report them unstarted."""
        while (entry := await self.next()) is not None:
            yield entry

    async def _refill(self) -> None:
        if self._done:
            return
        block = await asyncio.to_thread(self._read) if self._threaded else self._read()
        if self._exhausted:
            self._done = True
            if self.total is None:
                self.total = self.taken + len(self._ready) + len(block)
        self._ready.extend(block)

    def _read(self) -> list[tuple[int, Any]]:
        """Up to ``BLOCK`` items, or fewer when they are large (about ``BLOCK_CHARS`` of text)."""
        block: list[tuple[int, Any]] = []
        chars = 0
        for entry in self._items:
            block.append(entry)
            chars += _chars(entry[1])
            if len(block) >= BLOCK or chars >= BLOCK_CHARS:
                return block
        self._exhausted = True
        return block


def _chars(item: Any) -> int:
    if isinstance(item, str):
        return len(item)
    if isinstance(item, dict):
        return sum(len(value) for value in item.values() if isinstance(value, str))
    return 64


MAX_WAIT_ROUNDS = 256  # bookkeeping waits at most this many loop rounds for sends to go first


class SendsFirst:
    """Puts the bookkeeping of answered items behind the requests ready to go out.

    When answers come back together, each frees a slot that a worker waiting at the limiter (its
    request built) takes; but those workers run only after everything already queued on the event
    loop, the answered items' bookkeeping included. So an answered item waits here (``turn``) while
    requests are still leaving (``sent``, called as each goes), then records its answer. Only the
    order on one event loop changes: every answer is still journaled before its item counts as done.
    """

    def __init__(self) -> None:
        self.sends = 0
        self._waiting: asyncio.Future[None] | None = None
        self._releaser: asyncio.Future[None] | None = None  # held: a task nothing refers to may vanish

    def sent(self) -> None:
        self.sends += 1

    async def turn(self) -> None:
        """Return once a loop round passed in which no request was sent (or after ``MAX_WAIT_ROUNDS``)."""
        if self._waiting is None:
            self._waiting = asyncio.get_running_loop().create_future()
            self._releaser = asyncio.ensure_future(self._release(self._waiting))
        await asyncio.shield(self._waiting)

    async def _release(self, waiting: asyncio.Future[None]) -> None:
        try:
            for _ in range(MAX_WAIT_ROUNDS):
                before = self.sends
                await asyncio.sleep(0)
                if self.sends == before:
                    break
        finally:
            self._waiting = None
            if not waiting.done():
                waiting.set_result(None)


# the runner's, for the items of the batch it runs (None: no reordering, as outside a runner)
SENDS_FIRST: contextvars.ContextVar[SendsFirst | None] = contextvars.ContextVar("sends_first", default=None)


async def after_sends() -> asyncio.CancelledError | None:
    """Wait for the requests ready to go out (``SendsFirst``); a cancellation meanwhile is returned,
    not raised, so the answer already paid for is still recorded."""
    pacer = SENDS_FIRST.get()
    if pacer is None:
        return None
    try:
        await pacer.turn()
    except asyncio.CancelledError as exc:
        return exc
    return None
