"""Progress of a batch in the task log: one line every few seconds, never one per item."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

PROGRESS_EVERY_S = 5.0


class BatchProgress:
    """Counters the runner updates, and a periodic log line built from them."""

    def __init__(
        self,
        total: Callable[[], int | None],
        log: Any,
        *,
        spent: Callable[[], Decimal] = lambda: Decimal(0),
        concurrency: Callable[[], str] = lambda: "",
        every: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.log = log
        self.spent = spent
        self.concurrency = concurrency
        self.every = every
        self.clock = clock
        self.started = clock()
        self.done = 0
        self.failed = 0
        self.resumed = 0
        self.lines = 0

    def item_done(self, *, ok: bool, resumed: bool = False) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self.resumed += 1 if resumed else 0

    def line(self) -> str:
        """``done/total``, failures, resumed, spend so far, rate, concurrency and an ETA."""
        elapsed = max(self.clock() - self.started, 1e-9)
        fresh = self.done - self.resumed
        rate = fresh / elapsed
        total = self.total()
        left = None if total is None else total - self.done
        eta = f", ETA {left / rate:.0f} s" if rate > 0 and left else ""
        concurrency = self.concurrency()
        return (
            f"batch: {self.done}/{'?' if total is None else total} done "
            f"({self.failed} failed, {self.resumed} resumed), "
            f"{self.spent()} USD spent, {rate:.1f} items/s"
            + (f", concurrency {concurrency}" if concurrency else "")
            + eta
        )

    def log_line(self) -> None:
        self.lines += 1
        self.log.info("%s", self.line())

    async def report_periodically(self) -> None:
        """Log a line every ``every`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            self.log_line()
