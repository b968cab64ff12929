"""Budgets of one task try: ``max_cost_usd`` over the task's tries, ``dag_run_budget_usd`` over the run.

Before each request the worst case (estimated prompt + the output cap at the output price) is
reserved; a request that would take a budget past its limit is refused, unsent. Concurrent requests
each hold their worst case while in flight, so together they cannot pass a budget each alone fits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable, usd_text
from airflow_provider_qwen.client.tokens import output_cap, request_tokens

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest

RUN_SPEND_TTL_S = 30.0  # how long the other tasks' spend is trusted before a re-read
USD_QUANTUM = Decimal("0.000001")

RefusalFactory = Callable[[str], BaseException]


def worst_case_usd(request: ChatRequest, prices: PriceTable) -> Decimal:
    """The most a request can cost: estimated prompt tokens plus the output cap at the output price.

    Without ``max_completion_tokens``/``max_tokens`` the output is unbounded; only the prompt counts.
    """
    price, _ = prices.price_for(request.model)
    return price.usd(request_tokens(request), output_cap(request))


class Budget:
    """The limits of one try and what is held against them.

    ``spent`` is this try's spend so far, ``earlier_usd`` what earlier tries of the task paid,
    ``other_tasks_usd`` reads what the run's other tasks spent (re-read every 30 s). ``refusal``
    builds the error raised (the operator layer makes it one that Airflow does not retry).
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        spent: Callable[[], Decimal],
        max_cost_usd: Decimal | None = None,
        dag_run_budget_usd: Decimal | None = None,
        earlier_usd: Callable[[], Decimal] = lambda: Decimal(0),
        earlier_tries: Callable[[], int] = lambda: 0,
        other_tasks_usd: Callable[[], Decimal] = lambda: Decimal(0),
        refusal: RefusalFactory = BudgetExceededError,
    ) -> None:
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.dag_run_budget_usd = dag_run_budget_usd
        self._spent = spent
        self._earlier_usd = earlier_usd
        self._earlier_tries = earlier_tries
        self._read_others = other_tasks_usd
        self._refusal = refusal
        self._others: tuple[float, Decimal] | None = None  # (monotonic time read, USD)
        self._lock = threading.Lock()
        self.reserved_usd = Decimal(0)

    @property
    def limited(self) -> bool:
        """Whether any budget is set (then a try that may have been paid is not retried)."""
        return self.max_cost_usd is not None or self.dag_run_budget_usd is not None

    @property
    def task_spent_usd(self) -> Decimal:
        """Spent by this task instance over all its tries."""
        return self._earlier_usd() + self._spent()

    def other_tasks_usd(self) -> Decimal:
        now = time.monotonic()
        if self._others is None or now - self._others[0] > RUN_SPEND_TTL_S:
            self._others = (now, self._read_others())
        return self._others[1]

    def reserve(self, request: ChatRequest) -> Decimal:
        """Refuse ``request`` if its worst case would pass a budget, else hold it until ``release``."""
        if not self.limited:
            return Decimal(0)
        worst = worst_case_usd(request, self.prices)
        shown = worst.quantize(USD_QUANTUM)
        with self._lock:
            task_spent = self.task_spent_usd
            held = self.reserved_usd
            in_flight = f", {usd_text(held)} USD held by requests in flight" if held else ""
            if self.max_cost_usd is not None and task_spent + held + worst > self.max_cost_usd:
                earlier = self._earlier_tries()
                included = f" ({earlier} earlier tries included)" if earlier else ""
                raise self._refusal(
                    f"max_cost_usd={self.max_cost_usd} would be passed: this task spent "
                    f"{usd_text(task_spent)} USD so far{included}{in_flight}, the next request may cost up "
                    f"to {shown} USD; not sent"
                )
            if self.dag_run_budget_usd is not None:
                others = self.other_tasks_usd()
                if others + task_spent + held + worst > self.dag_run_budget_usd:
                    raise self._refusal(
                        f"dag_run_budget_usd={self.dag_run_budget_usd} would be passed: this DAG run spent "
                        f"{usd_text(others + task_spent)} USD so far ({usd_text(others)} by other tasks, "
                        f"{usd_text(task_spent)} by this one){in_flight}, the next request may cost up to "
                        f"{shown} USD; not sent"
                    )
            self.reserved_usd += worst
        return worst

    def release(self, amount: Decimal) -> None:
        """Drop a reservation once its request was answered (and recorded) or failed."""
        with self._lock:
            self.reserved_usd -= amount

    def check(self, request: ChatRequest) -> None:
        """Refuse ``request`` if its worst case would pass a budget; hold nothing."""
        self.release(self.reserve(request))
