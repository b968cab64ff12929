"""The async scheduler: workers pull item indices, every request passes the limiter and the budget,
and the outcomes become the aligned result list and the ``qwen_batch`` report.

Rate limits are absorbed here (the item waits, the limit adapts, the request goes again) unless
the server asks for a wait over ``MAX_SERVER_DELAY`` (120 s): such a delay stops retrying
(docs/protocol.md, "Retries"), and a limit of minutes means the account is spent for now, so that
item fails and the batch stops. Other failures fail their item only, except those no other item
can escape (bad key, no credits, unknown model) and a spent budget: then too no new item starts,
and the rest are reported unstarted.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.items import ItemOutcome, describe_error
from airflow_provider_qwen.batch.limiter import AdaptiveLimiter
from airflow_provider_qwen.batch.progress import PROGRESS_EVERY_S, BatchProgress
from airflow_provider_qwen.client.errors import (
    AuthenticationError,
    BudgetExceededError,
    InsufficientCreditsError,
    NotFoundError,
    QwenError,
    RateLimitError,
)
from airflow_provider_qwen.client.retry import MAX_SERVER_DELAY
from airflow_provider_qwen.cost.record import CostTotals

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest

BATCH_XCOM_KEY = "qwen_batch"
MAX_ERRORS_LISTED = 1000
# Failures that every other item would meet too: stop starting items instead of failing them all.
FATAL_ERRORS: tuple[type[BaseException], ...] = (AuthenticationError, InsufficientCreditsError, NotFoundError)


class BatchFailedError(QwenError):
    """More items failed (or were not started) than ``max_failures`` allows."""


def long_rate_limit(exc: BaseException | None) -> float | None:
    """The server's delay when ``exc`` is a 429 asking for more than ``MAX_SERVER_DELAY`` s, else None."""
    if isinstance(exc, RateLimitError) and exc.retry_after is not None and exc.retry_after > MAX_SERVER_DELAY:
        return exc.retry_after
    return None


@dataclass
class BatchOptions:
    max_concurrency: int = 16
    requests_per_minute: float | None = None
    max_rate_limit_retries: int = 8
    progress_interval: float = PROGRESS_EVERY_S


@dataclass
class BatchReport:
    """Everything a batch run produced: the aligned results and the counts for ``qwen_batch``."""

    total: int
    results: list[Any]
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
        self.results[outcome.index] = outcome.result if outcome.status == "ok" else None
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


def allowed_failures(max_failures: int | float, total: int) -> int:
    """``max_failures`` as a count: an int is a count, a float in [0, 1] a fraction of the items."""
    if isinstance(max_failures, float):
        return math.floor(max_failures * total + 1e-9)
    return int(max_failures)


class BatchRunner:
    """Runs ``process(index)`` over every index with ``max_concurrency`` workers; owns ``send``."""

    sleep = staticmethod(asyncio.sleep)  # the backoff's wait; tests record it instead

    def __init__(
        self,
        total: int,
        send_once: Callable[[ChatRequest], Awaitable[ChatCompletion]],
        *,
        options: BatchOptions,
        log: Any,
        spent: Callable[[], Decimal] = lambda: Decimal(0),
    ) -> None:
        from airflow_provider_qwen.client.retry import RetryPolicy

        self.total = total
        self.send_once = send_once
        self.options = options
        self.log = log
        self.limiter = AdaptiveLimiter(
            options.max_concurrency, requests_per_minute=options.requests_per_minute
        )
        self.backoff = RetryPolicy().backoff
        self.requests = 0
        self.progress = BatchProgress(
            total,
            log,
            spent=spent,
            concurrency=lambda: f"{self.limiter.in_flight} in flight, limit {self.limiter.limit}",
            every=options.progress_interval,
        )

    async def send(self, request: ChatRequest) -> ChatCompletion:
        """One request: wait for a slot, send it (``send_once`` checks the budget), absorb rate limits."""
        for attempt in range(self.options.max_rate_limit_retries + 1):
            ticket = await self.limiter.acquire()
            try:
                completion = await self.send_once(request)
            except RateLimitError as exc:
                if long_rate_limit(exc) is not None:
                    await self.limiter.rate_limited_by_server(ticket, None)
                    raise  # no retry (docs/protocol.md, "Retries"); the batch stops starting items
                await self.limiter.rate_limited_by_server(ticket, exc.retry_after)
                if attempt >= self.options.max_rate_limit_retries:
                    raise
                if exc.retry_after is None or exc.retry_after <= 0:
                    await self.sleep(self.backoff(attempt))
                # else the limiter pauses every request, this one too, until the Retry-After passed
                continue
            except BaseException:
                await self.limiter.failed(ticket)
                raise
            self.requests += 1
            await self.limiter.succeeded(ticket)
            return completion
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, process: Callable[[int], Awaitable[ItemOutcome]]) -> BatchReport:
        report = BatchReport(self.total, [None] * self.total)
        started = time.monotonic()
        indices = iter(range(self.total))

        async def worker() -> None:
            for index in indices:  # one shared iterator: each index is taken exactly once
                outcome = await process(index)
                report.add(outcome)
                self.progress.item_done(ok=outcome.status == "ok", resumed=outcome.resumed)
                self._maybe_stop(report, outcome)
                if report.stopped:
                    return

        ticker = asyncio.ensure_future(self.progress.report_periodically())
        try:
            await asyncio.gather(*(worker() for _ in range(min(self.options.max_concurrency, self.total))))
        finally:
            ticker.cancel()
        for index in indices:  # left when the batch stopped early
            report.add(ItemOutcome(index, "unstarted", error="not started: the batch stopped (see stopped)"))
        report.extra = {
            "requests": self.requests,
            "rate_limited": self.limiter.rate_limited,
            "concurrency": {
                "max": self.limiter.max_concurrency,
                "final": self.limiter.limit,
                "lowest": self.limiter.lowest_limit,
                "peak_in_flight": self.limiter.peak_in_flight,
            },
            "elapsed_s": round(time.monotonic() - started, 3),
        }
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
            report.stop_error = exc
            self.log.error("batch stops starting new items (%s)", report.stopped)
