"""Test doubles for cost tests: one DAG run's XComs shared by the fake task instances of its tasks.

``FakeRun.ti(task_id, try_number=n)`` clears that task instance's XComs as Airflow 3 does when a
try starts, and ``xcom_pull`` answers like the Task SDK's (a list of task ids -> the XComs of every
map index of each, in map-index order, ``None`` for a task without any).
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.cost.record import CostTotals
from tests.support.operator_fakes import MODEL

# The qwen_cost fields two runs of the same work must agree on (a deferred and a worker run).
COST_FIELDS = (
    "model",
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "total_tokens",
    "credits_used",
    "usd_spent",
    "estimated",
    "usd_unsettled",
    "try_number",
)


class FakeRun:
    def __init__(self, dag_id: str = "cost_dag", run_id: str = "manual__1") -> None:
        self.dag_id = dag_id
        self.run_id = run_id
        self.xcoms: dict[tuple[str, int, str], Any] = {}
        self.pulls: list[dict[str, Any]] = []

    def ti(self, task_id: str, *, map_index: int = -1, try_number: int = 1) -> RunTI:
        """The task instance of a new try: its XComs from earlier tries are gone."""
        for key in [k for k in self.xcoms if k[:2] == (task_id, map_index)]:
            del self.xcoms[key]
        return RunTI(self, task_id, map_index, try_number)

    def reader(self, task_id: str) -> RunTI:
        """A task instance that only reads (a callback's ``ti``): nothing is cleared."""
        return RunTI(self, task_id, -1, 1)

    def put(self, task_id: str, record: dict[str, Any], *, map_index: int = -1) -> None:
        """An XCom left by a task that ran earlier in the run."""
        self.xcoms[(task_id, map_index, "qwen_cost")] = record

    def put_claim(
        self, task_id: str, claimed: str, at_most: str | None = None, *, map_index: int = -1
    ) -> None:
        """A claim on the run budget published by another task instance of the run."""
        self.xcoms[(task_id, map_index, "qwen_run_claim")] = {
            "instance": f"{task_id}[{map_index}]",
            "claimed_usd": claimed,
            "at_most_usd": at_most if at_most is not None else claimed,
        }


class FakeStateStore:
    """Airflow 3.3's ``context["task_state_store"]``: JSON values by key, kept across tries."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = value


class RunTI:
    """The slice of a RuntimeTaskInstance cost code uses, over a FakeRun's XComs."""

    def __init__(self, run: FakeRun, task_id: str, map_index: int, try_number: int) -> None:
        self.run = run
        self.dag_id = run.dag_id
        self.run_id = run.run_id
        self.task_id = task_id
        self.map_index = map_index
        self.try_number = try_number
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value
        self.run.xcoms[(self.task_id, self.map_index, key)] = value

    def xcom_pull(
        self,
        task_ids: str | list[str] | None = None,
        key: str = "return_value",
        *,
        dag_id: str | None = None,
        run_id: str | None = None,
        **extra: Any,
    ) -> Any:
        assert "map_indexes" not in extra, "cost code pulls every map index (map_indexes not set)"
        assert dag_id in (None, self.dag_id)
        assert run_id in (None, self.run_id)
        self.run.pulls.append({"task_ids": task_ids, "key": key})
        single = task_ids is None or isinstance(task_ids, str)
        ids = [self.task_id] if task_ids is None else [task_ids] if isinstance(task_ids, str) else task_ids
        values: list[Any] = []
        for task_id in ids:
            found = [v for (t, m, k), v in sorted(self.run.xcoms.items()) if t == task_id and k == key]
            values.extend(found or [None])
        if single and len(values) == 1:
            return values[0]
        return values


def cost_record(
    usd_each: str, *, requests: int = 1, try_number: int = 1, model: str = MODEL
) -> dict[str, Any]:
    """A ``qwen_cost`` record of one try with ``requests`` responses of ``usd_each`` (reported cost)."""
    totals = CostTotals()
    for _ in range(requests):
        totals.add_charge(model, Cost.from_reported(usd=usd_each))
    return totals.record(model=model, try_number=try_number).to_xcom()
