"""Budgets of one task try: ``max_cost_usd`` over the task's tries, ``dag_run_budget_usd`` over the run.

Before each request the worst case (its prompt's token bound plus the output cap, at the model's
price) is reserved; a request that would take a budget past its limit is refused, unsent. Concurrent
requests each hold their worst case while in flight, so together they cannot pass a budget each
alone fits. A call whose cost had to be estimated keeps the rest of its worst case held (it is
"unsettled") until the service's figure replaces the estimate. The run budget is shared with the
run's other task instances through claims (``cost/run_budget.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable, usd_text
from airflow_provider_qwen.client.tokens import output_cap, request_token_bound

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.cost.record import Estimate
    from airflow_provider_qwen.cost.run_budget import RunShare

USD_QUANTUM = Decimal("0.000001")
RUN_LEASE_CALLS = 8  # a claim covers this many more worst cases (fewer writes) ...
RUN_LEASE_SHARE = Decimal("0.05")  # ... but a run claim never more than this share of the run budget

RefusalFactory = Callable[[str], BaseException]


class UnpricedModelError(BudgetExceededError):
    """A budget cannot bound a request to a model without a known price."""


def worst_case_usd(request: ChatRequest, prices: PriceTable) -> Decimal:
    """The most a request can cost: its prompt's token bound plus the output cap at the output price.

    Without ``max_completion_tokens``/``max_tokens`` the output is unbounded; only the prompt counts.
    """
    price, _ = prices.price_for(request.model)
    return price.usd(request_token_bound(request), output_cap(request))


def settle(held: Decimal, estimate: Estimate | None) -> None:
    """An estimated call keeps the rest of the worst case ``held`` for it counted as unsettled."""
    if estimate is not None and held:
        known = estimate.estimated.usd_spent + estimate.reported.usd_spent
        estimate.unsettled_usd = max(Decimal(0), held - known)


class Budget:
    """The limits of one try and what is held against them.

    ``spent`` is this try's spend so far (at most: unsettled estimates included), ``earlier_usd``
    what earlier tries of the task paid at most, ``run`` this instance's share of the run budget
    (None: only this task's spend counts). ``refusal`` builds the error raised (the operator layer
    makes it one that Airflow does not retry).
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
        run: RunShare | None = None,
        claim: Callable[[Decimal], None] | None = None,
        refusal: RefusalFactory = BudgetExceededError,
    ) -> None:
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.dag_run_budget_usd = dag_run_budget_usd
        self.run = run
        self._spent = spent
        self._earlier_usd = earlier_usd
        self._earlier_tries = earlier_tries
        self._claim = claim
        self._refusal = refusal
        self._lock = threading.Lock()
        self.reserved_usd = Decimal(0)
        self.claimed_usd = Decimal(0)  # this try's journaled claim

    @property
    def limited(self) -> bool:
        """Whether any budget is set (then a try that may have been paid is not retried)."""
        return self.max_cost_usd is not None or self.dag_run_budget_usd is not None

    @property
    def task_spent_usd(self) -> Decimal:
        """Spent, at most, by this task instance over all its tries."""
        return self._earlier_usd() + self._spent()

    def worst_case(self, request: ChatRequest) -> Decimal:
        """``worst_case_usd`` at a known price; an unknown model's request is refused."""
        if self.prices.get(request.model) is None:
            raise UnpricedModelError(
                f"model={request.model!r} has no known price, so a budget cannot bound its requests; "
                "set one in the connection's extra 'prices' (USD per 1M tokens, e.g. "
                f'{{"{request.model}": {{"input": "1.00", "output": "4.00"}}}}) or refresh the live '
                "price table (QwenHook.refresh_prices()); not sent"
            )
        return worst_case_usd(request, self.prices)

    def reserve(self, request: ChatRequest) -> Decimal:
        """Refuse ``request`` if its worst case would pass a budget, else hold it until ``release``."""
        if not self.limited:
            return Decimal(0)
        worst = self.worst_case(request)
        shown = worst.quantize(USD_QUANTUM)
        with self._lock:
            task_spent = self.task_spent_usd
            held = self.reserved_usd
            in_flight = f", {usd_text(held)} USD held by requests in flight" if held else ""
            if self.max_cost_usd is not None and task_spent + held + worst > self.max_cost_usd:
                earlier = self._earlier_tries()
                included = f" ({earlier} earlier tries included)" if earlier else ""
                raise self._refusal(
                    f"max_cost_usd={self.max_cost_usd} would be passed: this task spent at most "
                    f"{usd_text(task_spent)} USD so far{included}{in_flight}, the next request may cost up "
                    f"to {shown} USD; not sent"
                )
            if self.dag_run_budget_usd is not None:
                need = task_spent + held + worst
                why = None
                if need > self.dag_run_budget_usd:
                    why = "which alone passes it"
                elif self.run is not None:
                    lease = min(worst * RUN_LEASE_CALLS, self.dag_run_budget_usd * RUN_LEASE_SHARE)
                    why = self.run.ensure(need, lease, task_spent + held)
                if why is not None:
                    raise self._refusal(
                        f"dag_run_budget_usd={self.dag_run_budget_usd} would be passed: this task "
                        f"instance spent at most {usd_text(task_spent)} USD{in_flight}, {why}; the next "
                        f"request may cost up to {shown} USD; not sent"
                    )
            self._journal_claim(self._spent() + held + worst, worst)
            self.reserved_usd += worst
        return worst

    def _journal_claim(self, need: Decimal, worst: Decimal) -> None:
        """Journal this try's claim before sending, so a retry counts it even if this try is killed."""
        if self._claim is None or need <= self.claimed_usd:
            return
        amount = need + worst * RUN_LEASE_CALLS
        self._claim(amount)
        self.claimed_usd = amount

    def release(self, amount: Decimal, estimate: Estimate | None = None) -> None:
        """Drop a reservation once its request was answered (and recorded) or failed.

        When the call's cost was estimated, the rest of its worst case stays counted as unsettled.
        """
        with self._lock:
            self.reserved_usd -= amount
        settle(amount, estimate)

    def check(self, request: ChatRequest) -> None:
        """Refuse ``request`` if its worst case would pass a budget; hold nothing."""
        self.release(self.reserve(request))
