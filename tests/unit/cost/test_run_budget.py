"""The run budget across task instances running at once: claims never pass it together."""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.cost.run_budget import Hold, RunShare
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.spend import BudgetRefusedError
from tests.support.operator_fakes import MODEL

PRICES = PriceTable()


class SharedStore:
    """A linearizable store of claims (as the API server's database is), slow like one."""

    def __init__(self) -> None:
        self.holds: dict[str, Hold] = {}
        self.lock = threading.Lock()

    def view(self, instance: str) -> SharedView:
        return SharedView(self, instance)


class SharedView:
    def __init__(self, store: SharedStore, instance: str) -> None:
        self.store, self.instance = store, instance

    def publish(self, hold: Hold) -> None:
        time.sleep(random.uniform(0, 0.002))
        with self.store.lock:
            self.store.holds[hold.instance] = hold

    def others(self) -> list[Hold]:
        time.sleep(random.uniform(0, 0.002))
        with self.store.lock:
            return [h for name, h in self.store.holds.items() if name != self.instance]


def test_four_parallel_instances_never_pass_the_run_budget_together():
    request = build_request("Summarise.", model=MODEL, max_completion_tokens=500)
    worst = worst_case_usd(request, PRICES)
    budget = worst * 10
    store = SharedStore()
    spent: list[Decimal] = []

    def task(index: int) -> None:
        name = f"mapped[{index}]"
        cost = TaskCost(
            prices=PRICES,
            model=MODEL,
            try_number=1,
            dag_run_budget_usd=budget,
            run_store=lambda: store.view(name),
            instance=name,
            refusal=BudgetRefusedError,
        )
        try:
            while True:
                held = cost.budget.reserve(request)
                cost.ledger.add_charge(MODEL, Cost(0, worst))  # the dearest answer it can get
                cost.budget.release(held)
        except BudgetRefusedError:
            pass
        spent.append(cost.finish().usd_spent)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(spent) == 4
    assert sum(spent) <= budget  # never above 1.00x
    assert sum(spent) >= budget - 4 * worst  # and the budget is used, not wasted on leases


def test_two_instances_claiming_at_once_withdraw_and_one_gets_the_room():
    store = SharedStore()
    a = RunShare(Decimal(1), store.view("a"), "a", sleep=lambda s: None)
    b = RunShare(Decimal(1), store.view("b"), "b", sleep=lambda s: None)
    assert a.ensure(Decimal("0.6"), Decimal(0), Decimal(0)) is None
    reason = b.ensure(Decimal("0.6"), Decimal(0), Decimal(0))
    assert reason is not None
    assert "0.6 USD held by their requests in flight" in reason
    a.settle(Decimal("0.3"))  # a spent less than it claimed
    assert b.ensure(Decimal("0.6"), Decimal(0), Decimal(0)) is None
    assert sum(h.claimed_usd for h in store.holds.values()) <= 1
