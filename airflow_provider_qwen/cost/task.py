"""The cost of one task try: its ledger, its budgets, and its task's earlier tries from the journal.

At the end of the try its record is journaled (a later try reads it) and the task's ``qwen_cost``
record covers every try so far, with a ``tries`` breakdown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from decimal import Decimal
from functools import cached_property

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.cost.budget import Budget, RefusalFactory
from airflow_provider_qwen.cost.journal import CostJournal
from airflow_provider_qwen.cost.ledger import TryLedger
from airflow_provider_qwen.cost.record import CostRecord

log = logging.getLogger(__name__)


class TaskCost:
    """Ledger, budgets and records of one task try (Airflow hands in the journal and the run reader)."""

    def __init__(
        self,
        *,
        prices: PriceTable,
        max_cost_usd: Decimal | None = None,
        dag_run_budget_usd: Decimal | None = None,
        model: str | None = None,
        try_number: int | None = None,
        journal: Callable[[], CostJournal] | None = None,
        other_tasks_usd: Callable[[], Decimal] = lambda: Decimal(0),
        refusal: RefusalFactory = BudgetExceededError,
    ) -> None:
        self.prices = prices
        self.model = model
        self.try_number = try_number
        self._journal = journal
        self.ledger = TryLedger(prices, model)
        self.budget = Budget(
            prices=prices,
            spent=lambda: self.ledger.spent_usd,
            max_cost_usd=max_cost_usd,
            dag_run_budget_usd=dag_run_budget_usd,
            earlier_usd=lambda: sum((r.usd_spent for r in self.earlier_tries), Decimal(0)),
            earlier_tries=lambda: len(self.earlier_tries),
            other_tasks_usd=other_tasks_usd,
            refusal=refusal,
        )

    @cached_property
    def journal(self) -> CostJournal:
        """The task's journal, opened on first use (None: no journal, as outside a task run)."""
        return self._journal() if self._journal is not None else CostJournal(None)

    @cached_property
    def earlier_tries(self) -> list[CostRecord]:
        """The journal's records of this task instance's earlier tries (their XComs are gone)."""
        if self.try_number is None:
            return []
        return [r for r in self.journal.read() if (r.try_number or 0) < self.try_number]

    @property
    def spent_usd(self) -> Decimal:
        """Spent by this try."""
        return self.ledger.spent_usd

    def try_record(self) -> CostRecord:
        """This try alone, stamped with its try number."""
        return self.ledger.total.record(model=self.model, try_number=self.try_number)

    def record(self) -> CostRecord:
        """The ``qwen_cost`` record: every try of this task instance so far."""
        return CostRecord.combine(
            [*self.earlier_tries, self.try_record()], model=self.model, try_number=self.try_number
        )

    def finish(self) -> CostRecord:
        """Journal this try (a failure to is logged, not raised) and return the task's record."""
        try:
            self.journal.write(self.try_record())
        except Exception as exc:
            log.warning("could not write the Qwen cost journal (a retry will not see this try): %s", exc)
        return self.record()
