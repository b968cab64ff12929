"""A try that pauses (waits for a person, defers) and goes on in a new process counts its spend once."""

from __future__ import annotations

from decimal import Decimal

from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.cost.journal import CostJournal, FolderStore
from airflow_provider_qwen.cost.task import TaskCost

MODEL = "alibaba/qwen3.7-max"


def _cost(tmp_path, try_number, **kwargs):
    return TaskCost(
        prices=PriceTable(),
        model=MODEL,
        try_number=try_number,
        journal=lambda: CostJournal(FolderStore(tmp_path)),
        **kwargs,
    )


def _spend(cost, usd):
    cost.ledger.add_charge(MODEL, Cost(int(Decimal(usd) * 2_000_000), Decimal(usd)))


def test_a_resumed_try_counts_what_it_spent_before_its_pause(tmp_path):
    earlier = _cost(tmp_path, 1)
    _spend(earlier, "0.5")
    earlier.finish()
    paused = _cost(tmp_path, 2)
    _spend(paused, "0.25")
    paused.finish()  # the task waits for a person: this process ends

    resumed = _cost(tmp_path, 2)
    resumed.resume()
    _spend(resumed, "0.125")
    record = resumed.finish()

    assert resumed.spent_usd == Decimal("0.375")
    assert record.usd_spent == Decimal("0.875")
    assert [(t.try_number, t.totals.requests, t.usd_spent) for t in record.each_try()] == [
        (1, 1, Decimal("0.5")),
        (2, 2, Decimal("0.375")),
    ]
    again = _cost(tmp_path, 2)  # a second pause and resume: still counted once
    again.resume()
    assert again.spent_usd == Decimal("0.375")


def test_the_budget_after_a_resume_counts_the_spend_before_the_pause(tmp_path):
    paused = _cost(tmp_path, 1, max_cost_usd=Decimal("1"))
    _spend(paused, "0.75")
    paused.finish()
    resumed = _cost(tmp_path, 1, max_cost_usd=Decimal("1"))
    resumed.resume()
    assert resumed.budget.task_spent_usd == Decimal("0.75")


def test_a_fresh_try_is_not_a_resume(tmp_path):
    cost = _cost(tmp_path, 1)
    cost.resume()  # nothing journaled yet
    assert cost.spent_usd == 0
