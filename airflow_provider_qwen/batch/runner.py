"""The async scheduler: workers pull item indices, every request goes through the sender (limiter,
budget, rate-limit retries), and the outcomes become the aligned result list and ``qwen_batch``.

A 429 asking for a wait over ``MAX_SERVER_DELAY`` (120 s) is not retried (``sender``): the
account's limit is spent for now, so that item fails and the batch stops. Other failures fail
their item only, except those no other item can escape (bad key, no credits, unknown model) and
a spent budget: then too no new item starts, and the rest are reported unstarted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol

from airflow_provider_qwen.batch.feed import SENDS_FIRST, ItemFeed, SendsFirst
from airflow_provider_qwen.batch.items import BatchStoppedBeforeSendError, ItemOutcome, describe_error
from airflow_provider_qwen.batch.progress import PROGRESS_EVERY_S, BatchProgress
from airflow_provider_qwen.batch.sender import RateLimitedSender, long_rate_limit
from airflow_provider_qwen.client.errors import (
    AuthenticationError,
    BudgetExceededError,
    InsufficientCreditsError,
    NotFoundError,
    QwenError,
)
from airflow_provider_qwen.client.retry import MAX_SERVER_DELAY
from airflow_provider_qwen.cost.record import CostTotals

BATCH_XCOM_KEY = "qwen_batch"
MAX_ERRORS_LISTED = 1000
NOT_STARTED = "not started: the batch stopped (see stopped)"
# Failures that every other item would meet too: stop starting items instead of failing them all.
FATAL_ERRORS: tuple[type[BaseException], ...] = (AuthenticationError, InsufficientCreditsError, NotFoundError)


class BatchFailedError(QwenError):
    """More items failed (or were not started) than ``max_failures`` allows."""


@dataclass
class BatchOptions:
    max_concurrency: int = 16
    progress_interval: float = PROGRESS_EVERY_S


class ResultSink(Protocol):
    """Where finished items go: the list for XCom (``streams.GrowingResults``) or a ``ResultsFile``."""

    async def add(
        self, index: int, status: str, result: Any, error: str | None, path: str | None = None
    ) -> None: ...


@dataclass
class BatchReport:
    """The counts of a batch run for ``qwen_batch`` (the results went to its sink)."""

    total: int = 0
    succeeded: int = 0
    failed: int = 0
    unstarted: int = 0
    chunked: int = 0
    resumed: int = 0
    deduplicated: int = 0  # items that took the answer of an identical item (``deduplicate``)
    truncated: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    reused: CostTotals = field(default_factory=CostTotals)  # what checkpointed work cost earlier tries
    stopped: str | None = None
    stop_error: BaseException | None = field(default=None, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    def add(self, outcome: ItemOutcome) -> None:
        self.reused.merge(outcome.reused)
        self.deduplicated += outcome.deduplicated
        if outcome.status == "ok":
            self.succeeded += 1
            self.chunked += outcome.chunked
            self.resumed += outcome.resumed
            self.truncated += outcome.truncated
            return
        if outcome.status == "unstarted":
            self.unstarted += 1
        else:
            self.failed += 1
        if len(self.errors) < MAX_ERRORS_LISTED:
            self.errors.append({"index": outcome.index, "error": outcome.error})

    def record(self) -> dict[str, Any]:
        """The ``qwen_batch`` XCom: JSON-safe."""
        listed = len(self.errors)
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "unstarted": self.unstarted,
            "chunked": self.chunked,
            "resumed": self.resumed,
            "deduplicated": self.deduplicated,
            "truncated": self.truncated,
            "errors": self.errors,
            "errors_not_listed": self.failed + self.unstarted - listed,
            "reused": self.reused.charge_fields(),
            "stopped": self.stopped,
            **self.extra,
        }


def spare_workers(max_concurrency: int) -> int:
    """Workers beyond ``max_concurrency``, waiting at the limiter with their request ready: a freed
    slot is taken at once (even when every request in flight answers at the same moment), and the
    finished item's bookkeeping (cost, checkpoint, results) runs while the next request is in flight
    instead of before it is sent (``items.SendsFirst``)."""
    return max(2, max_concurrency)


def allowed_failures(max_failures: int | float, total: int) -> int:
    """``max_failures`` as a count: an int is a count, a float in [0, 1] a fraction of the items."""
    if isinstance(max_failures, float):
        return math.floor(max_failures * total + 1e-9)
    return int(max_failures)


class BatchRunner:
    """Runs ``process(index, item)`` over every item of a feed with ``max_concurrency`` workers."""

    def __init__(
        self,
        sender: RateLimitedSender,
        *,
        options: BatchOptions,
        log: Any,
        spent: Callable[[], Decimal] = lambda: Decimal(0),
    ) -> None:
        self.sender = sender
        self.options = options
        self.log = log
        self.spent = spent
        self.stopped: str | None = None
        self.sends_first = SendsFirst()

    def check_running(self) -> None:
        """Called just before each request is sent: none is sent once the batch has stopped."""
        if self.stopped is not None:
            raise BatchStoppedBeforeSendError(f"not sent: the batch stopped ({self.stopped})")
        self.sends_first.sent()

    async def run(
        self, process: Callable[[int, Any], Awaitable[ItemOutcome]], feed: ItemFeed, sink: ResultSink
    ) -> BatchReport:
        report = BatchReport()
        started = time.monotonic()
        progress = BatchProgress(
            lambda: feed.total,
            self.log,
            spent=self.spent,
            concurrency=self.sender.describe,
            every=self.options.progress_interval,
        )

        async def finish(outcome: ItemOutcome, item: Any) -> None:
            report.add(outcome)
            result = outcome.result if outcome.status == "ok" else None
            await sink.add(outcome.index, outcome.status, result, outcome.error, feed.label(item))

        async def worker() -> None:
            while not report.stopped and (entry := await feed.next()) is not None:
                outcome = await process(*entry)
                await finish(outcome, entry[1])
                progress.item_done(ok=outcome.status == "ok", resumed=outcome.resumed)
                self._maybe_stop(report, outcome)

        ticker = asyncio.ensure_future(progress.report_periodically())
        token = SENDS_FIRST.set(self.sends_first)  # the workers' tasks copy it when created
        try:
            workers = self.options.max_concurrency + spare_workers(self.options.max_concurrency)
            if feed.total is not None:
                workers = max(1, min(workers, feed.total))
            await gather_or_cancel([worker() for _ in range(workers)])
        finally:
            SENDS_FIRST.reset(token)
            ticker.cancel()
        async for index, item in feed.rest():  # left when the batch stopped early
            await finish(ItemOutcome(index, "unstarted", error=NOT_STARTED), item)
        report.total = feed.taken
        report.extra = {**self.sender.learned(), "elapsed_s": round(time.monotonic() - started, 3)}
        return report

    def _maybe_stop(self, report: BatchReport, outcome: ItemOutcome) -> None:
        exc = outcome.exception
        if report.stopped or exc is None:
            return
        delay = long_rate_limit(exc)
        if isinstance(exc, BudgetExceededError):
            report.stopped = f"budget: {exc}"
        elif delay is not None:
            report.stopped = (
                f"rate limit: the server asked to wait {delay:.0f} s (over {MAX_SERVER_DELAY:.0f} s, so not "
                "waited for); the account's limit is spent for now, a later retry resumes from the checkpoint"
            )
        elif isinstance(exc, FATAL_ERRORS):
            report.stopped = f"fatal error no item can escape: {describe_error(exc)}"
        if report.stopped:
            self.stopped = report.stopped
            report.stop_error = exc
            self.log.error("batch stops starting new items (%s)", report.stopped)


async def gather_or_cancel(coroutines: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``coroutines`` together; when one raises, cancel the others and raise that error."""
    tasks = [asyncio.ensure_future(coroutine) for coroutine in coroutines]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
