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
from airflow_provider_qwen.client.pricing import PriceTable, usd_text
from airflow_provider_qwen.cost.budget import Budget, RefusalFactory
from airflow_provider_qwen.cost.journal import CostJournal, JournalError
from airflow_provider_qwen.cost.ledger import TryLedger
from airflow_provider_qwen.cost.record import CostRecord, CostTotals
from airflow_provider_qwen.cost.run_budget import Hold, HoldStore, RunShare

log = logging.getLogger(__name__)

JOURNAL_FIX = (
    "fix the storage ([qwen] storage_base: a folder or bucket every worker can write; Airflow 3.3's "
    "task state store needs none) or drop the budget"
)


class TaskCost:
    """Ledger, budgets and records of one task try (Airflow hands in the journal and the run's store).

    :param journal: opens the task instance's cost journal (None: none, as outside a task run).
    :param run_store: opens the run's shared store of claims (for ``dag_run_budget_usd``).
    :param instance: this task instance's name in that store.
    """

    def __init__(
        self,
        *,
        prices: PriceTable,
        max_cost_usd: Decimal | None = None,
        dag_run_budget_usd: Decimal | None = None,
        model: str | None = None,
        try_number: int | None = None,
        journal: Callable[[], CostJournal] | None = None,
        run_store: Callable[[], HoldStore] | None = None,
        instance: str = "",
        refusal: RefusalFactory = BudgetExceededError,
    ) -> None:
        self.prices = prices
        self.model = model
        self.try_number = try_number
        self._journal = journal
        self._run_store = run_store
        self._instance = instance
        self._refusal = refusal
        self.ledger = TryLedger(prices, model)
        self._carry_pending = False  # the journal could not be read on resume (see finish)
        run = None
        if dag_run_budget_usd is not None and run_store is not None:
            run = RunShare(dag_run_budget_usd, run_store(), instance)
        self.budget = Budget(
            prices=prices,
            spent=lambda: self.ledger.total.usd_at_most,
            max_cost_usd=max_cost_usd,
            dag_run_budget_usd=dag_run_budget_usd,
            earlier_usd=lambda: sum((r.totals.usd_at_most for r in self.earlier_tries), Decimal(0)),
            earlier_tries=lambda: len(self.earlier_tries),
            run=run,
            claim=self._claim if journal is not None else None,
            refusal=refusal,
        )

    @cached_property
    def journal(self) -> CostJournal:
        """The task's journal, opened on first use (None: no journal, as outside a task run)."""
        if self._journal is None:
            return CostJournal(None)
        try:
            return self._journal()
        except JournalError:
            raise
        except Exception as exc:
            raise JournalError(f"the Qwen cost journal cannot be opened: {exc}") from None

    @cached_property
    def earlier_tries(self) -> list[CostRecord]:
        """The journal's records of this task instance's earlier tries (their XComs are gone).

        Under a budget a journal that cannot be read refuses the request (fail closed)."""
        if self.try_number is None:
            return []
        try:
            return [r for r in self.journal.read() if (r.try_number or 0) < self.try_number]
        except JournalError as exc:
            if self.budget.limited:
                raise self._refusal(f"{exc}: the budget cannot count earlier tries; {JOURNAL_FIX}") from None
            log.warning("%s: earlier tries are not counted in this task's qwen_cost", exc)
            return []

    def start(self) -> None:
        """Before anything else in a retry: publish what earlier tries spent at most to the run
        (Airflow cleared their claims when this try started), so no other task spends it meanwhile."""
        if self._run_store is None or (self.try_number or 0) <= 1:
            return
        earlier = sum((r.totals.usd_at_most for r in self.earlier_tries), Decimal(0))
        if earlier:
            self._settle_run(earlier)

    def resume(self, carried: CostTotals | None = None) -> None:
        """This try goes on after a pause (waiting for a person, a deferral) in a new process: what
        it spent before the pause is counted again as this try's. ``carried``: the pause's own
        record of it (it travels with the pause), which wins: the journal may hold an older one (a
        later pause's write failed). Without it, the journal's record; a journal that cannot be read
        then refuses under a budget (fail closed: nothing else says what the try spent)."""
        if carried is not None:
            self.ledger.carry(carried)
            return
        if self.try_number is None:
            return
        try:
            self._carry_journaled()
        except JournalError as exc:
            self._carry_pending = True  # tried again when the try finishes, before its record is written
            if self.budget.limited:
                raise self._refusal(f"{exc}: the budget cannot count this try; {JOURNAL_FIX}") from None
            log.warning("%s: what this try spent before its pause is not counted yet", exc)

    def _carry_journaled(self) -> None:
        for record in [r for r in self.journal.read() if r.try_number == self.try_number]:
            self.ledger.carry(record.totals)

    def _claim(self, usd: Decimal) -> None:
        try:
            self.journal.claim(self.try_number, usd, self.model)
        except JournalError as exc:
            raise self._refusal(f"{exc}: a retry could not count this try; {JOURNAL_FIX}; not sent") from None

    @property
    def spent_usd(self) -> Decimal:
        """Spent by this try."""
        return self.ledger.spent_usd

    def try_record(self) -> CostRecord:
        """This try alone, stamped with its try number."""
        return self.ledger.total.record(model=self.model, try_number=self.try_number)

    def record(self) -> CostRecord:
        """The ``qwen_cost`` record: every try of this task instance so far."""
        try:
            earlier = self.earlier_tries
        except BudgetExceededError:
            earlier = []  # the refusal already said why; the record still shows this try
        return CostRecord.combine([*earlier, self.try_record()], model=self.model, try_number=self.try_number)

    def finish(self) -> CostRecord:
        """Journal this try, settle its run claim, return the task's record (failures are logged:
        the try is over; a retry then counts this try at its last claim)."""
        if self._carry_pending:  # the journal could not be read on resume: its record would be lost
            self._carry_pending = False
            try:
                self._carry_journaled()
            except JournalError as exc:
                log.warning("%s: what this try spent before its pause is not in its qwen_cost", exc)
        for held in self.ledger.abandon_in_flight():  # a resumed try stopped before recording it
            log.warning(
                "deferred call %s: its answer was not recorded in this try; counted as one possibly "
                "paid try at its worst case, %s USD, until reconciled",
                held.client_request_id,
                usd_text(held.unsettled_usd),
            )
        record = self.record()
        try:
            self.journal.write(self.try_record())
        except Exception as exc:
            log.warning("%s: a retry will count this try at its last claim, or not at all", exc)
        try:
            self._settle_run(record.totals.usd_at_most)
        except Exception as exc:
            log.warning("could not publish this task's spend to the run's budget claims: %s", exc)
        return record

    def _settle_run(self, at_most: Decimal) -> None:
        """Publish what this instance spent at most, so the run's budgeted tasks count it."""
        if self.budget.run is not None:
            self.budget.run.settle(at_most)
        elif self._run_store is not None:
            self._run_store().publish(Hold(self._instance, at_most, at_most))
