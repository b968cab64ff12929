"""The items of a batch as the workers take them: ``(index, item)`` one at a time, read ahead in
small blocks. A file input is read in a worker thread (storage I/O never blocks the event loop)
and only a block at a time is held, so a batch of millions of items needs no more memory than one
of thousands. Each item is taken exactly once, whichever worker asks.
"""

from __future__ import annotations

import asyncio
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
