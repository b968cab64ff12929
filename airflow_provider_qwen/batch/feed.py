"""The items of a batch as the workers take them: ``(index, item)`` one at a time, read ahead in
small blocks. A file input is read in a worker thread (storage I/O never blocks the event loop)
and only a block at a time is held, so a batch of millions of items needs no more memory than one
of thousands. Each item is taken exactly once, whichever worker asks.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator
from itertools import islice
from typing import Any

BLOCK = 256  # items read ahead at a time


class ItemFeed:
    """``await next()`` gives the next ``(index, item)``, or None when there are no more."""

    def __init__(self, items: Iterable[tuple[int, Any]], *, total: int | None, threaded: bool) -> None:
        self.total = total  # items in all, when known before reading them
        self.taken = 0
        self._items: Iterator[tuple[int, Any]] = iter(items)
        self._threaded = threaded
        self._ready: deque[tuple[int, Any]] = deque()
        self._done = False
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
        if len(block) < BLOCK:
            self._done = True
            if self.total is None:
                self.total = self.taken + len(self._ready) + len(block)
        self._ready.extend(block)

    def _read(self) -> list[tuple[int, Any]]:
        return list(islice(self._items, BLOCK))
