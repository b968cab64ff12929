"""``dag_run_budget_usd`` on a real deployment: parallel mapped task instances never pass it together."""

from __future__ import annotations

from decimal import Decimal

import pytest

from tests.e2e.conftest import Deployment
from tests.e2e.test_deployment import task_instances, xcom

pytestmark = pytest.mark.e2e

DAG_ID = "qwen_run_budget"
BUDGET = Decimal("0.04")


def test_parallel_mapped_tasks_stay_within_the_run_budget(deployment: Deployment) -> None:
    emulator = deployment.emulator
    billed_before = emulator.total_charged()[1]
    latency, emulator.latency = emulator.latency, 2.0  # answers slow enough for the tasks to overlap
    emulator._state.peak_in_flight = 0
    try:
        run = deployment.run_test_dag(DAG_ID)
    finally:
        emulator.latency = latency

    tis = task_instances(deployment, run)
    assert len(tis) == 6
    spent = [Decimal(xcom(deployment, run, "chat", "qwen_cost", t["map_index"])["usd_spent"]) for t in tis]
    billed = deployment.emulator.total_charged()[1] - billed_before
    assert sum(spent) == billed  # every paid answer counted
    assert billed <= BUDGET  # never above 1.00x, with four instances at once
    claims = [xcom(deployment, run, "chat", "qwen_run_claim", t["map_index"]) for t in tis]
    assert {c["instance"] for c in claims} == {f"chat[{t['map_index']}]" for t in tis}
    assert all(Decimal(c["claimed_usd"]) == Decimal(c["at_most_usd"]) for c in claims)  # all settled
    # each request in flight holds a worst case (~0.0157 USD) of the 0.04 budget: two at a time at
    # most, though four task instances run at once
    assert emulator.peak_in_flight <= 2
    states = sorted(t["state"] for t in tis)
    assert "success" in states, states
    print(f"run budget {BUDGET} USD: billed {billed} USD, peak in flight {emulator.peak_in_flight}, {states}")
