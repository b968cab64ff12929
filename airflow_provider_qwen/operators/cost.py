"""The cost path every Qwen operator shares: budget check before a request, record after it.

One ``TaskCost`` lives for one try of one task: it refuses a request whose worst case would
pass ``max_cost_usd``, records every paid response exactly (also when the task then fails), and
pushes the ``qwen_cost`` XCom record stamped with the try number.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client.cost import CostLedger, PriceTable, estimate_prompt_tokens
from airflow_provider_qwen.client.errors import BudgetExceededError, InvalidRequestError

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest

COST_XCOM_KEY = "qwen_cost"


def parse_usd(field: str, value: Any) -> Decimal | None:
    """A USD amount from an operator argument (number or rendered string), or a clear error."""
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidRequestError(f"{field}={value!r} is not a number: give USD, e.g. 0.50") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRequestError(f"{field}={value!r} must be a finite amount of USD >= 0")
    return amount


def request_text(request: ChatRequest) -> str:
    """All the text a request sends, tools included: the input to a conservative token estimate."""
    body = request.to_body()
    return json.dumps(body.get("messages", []), ensure_ascii=False) + json.dumps(
        body.get("tools", []), ensure_ascii=False
    )


def worst_case_usd(request: ChatRequest, prices: PriceTable) -> Decimal:
    """The most a request can cost: estimated prompt tokens plus the output cap at the output price.

    Without ``max_completion_tokens``/``max_tokens`` the output is unbounded; only the prompt counts.
    """
    price, _ = prices.price_for(request.model)
    output_cap = request.max_completion_tokens or request.max_tokens or 0
    return price.usd(estimate_prompt_tokens(request_text(request)), int(output_cap))


class TaskCost:
    """Budget and ledger of one task try."""

    def __init__(
        self,
        *,
        prices: PriceTable,
        max_cost_usd: Decimal | None = None,
        dag_run_budget_usd: Decimal | None = None,
        model: str | None = None,
        context: Any = None,
    ) -> None:
        self.prices = prices
        self.max_cost_usd = max_cost_usd
        self.dag_run_budget_usd = dag_run_budget_usd  # enforced by the run-budget work (issue 6)
        self.context = context
        self.model = model
        self.ledger = CostLedger()

    @property
    def spent_usd(self) -> Decimal:
        return self.ledger.usd_spent

    def check(self, request: ChatRequest) -> None:
        """Refuse ``request`` (raise BudgetExceededError) if its worst case would pass the budget."""
        if self.max_cost_usd is None:
            return
        worst = worst_case_usd(request, self.prices)
        if self.spent_usd + worst > self.max_cost_usd:
            raise BudgetExceededError(
                f"max_cost_usd={self.max_cost_usd} would be passed: spent {self.spent_usd} USD so far, "
                f"the next request may cost up to {worst.quantize(Decimal('0.000001'))} USD; not sent"
            )

    def add(self, completion: ChatCompletion) -> None:
        self.ledger.add(completion)

    def add_from_error(self, error: BaseException) -> None:
        """Record what a failed call was still charged for (a cut stream's usage, an unparsable 200)."""
        partial = getattr(error, "partial", None)
        if partial is not None and getattr(partial, "usage", None) is not None:
            self.ledger.add(partial)
            return
        cost = getattr(error, "cost", None)
        if cost is not None:
            self.ledger.add_charge(self.model or "", cost)

    def record(self, try_number: int | None) -> dict[str, Any]:
        return self.ledger.record(model=self.model, try_number=try_number)

    def push(self, context: Any) -> dict[str, Any]:
        """Push the ``qwen_cost`` XCom for this try and return the record."""
        ti = context["ti"]
        record = self.record(getattr(ti, "try_number", None))
        ti.xcom_push(key=COST_XCOM_KEY, value=record)
        return record
