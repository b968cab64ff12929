"""Airflow's side of the money: the run's ``qwen_cost`` XComs read through the Task SDK, a try's
``TaskCost`` wired to its journal and its run, and the budget refusal Airflow does not retry."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.cost.record import COST_XCOM_KEY, records_usd
from airflow_provider_qwen.cost.report import RunCost
from airflow_provider_qwen.cost.task import TaskCost


class BudgetRefusedError(BudgetExceededError, AirflowFailException):  # type: ignore[misc]
    """A budget refused a request; the task fails without retries, since a retry would be refused too."""


def pull_cost_records(ti: Any, task_ids: Iterable[str], **where: Any) -> dict[str, list[Mapping[str, Any]]]:
    """The ``qwen_cost`` records of tasks of the run, every map index, by task id (Task SDK, no DB)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for task_id in task_ids:
        # a list of task ids and no map_indexes: a list with the XCom of every map index of the task
        values = ti.xcom_pull(task_ids=[task_id], key=COST_XCOM_KEY, **where) or []
        found[task_id] = [v for v in values if isinstance(v, Mapping)]
    return found


def other_tasks_reader(context: Mapping[str, Any], task_ids: Iterable[str]) -> Callable[[], Decimal]:
    """What the run's other Qwen task instances spent, from their ``qwen_cost`` XComs.

    This task instance's own XCom was cleared when this try started, so it is not counted twice;
    other map indexes of the same task are counted.
    """
    ti = context.get("ti")
    ids = list(task_ids)

    def read() -> Decimal:
        if ti is None or not ids:
            return Decimal(0)
        records = pull_cost_records(ti, ids)
        return records_usd(r for values in records.values() for r in values)

    return read


def task_cost(
    context: Mapping[str, Any] | None,
    *,
    prices: PriceTable,
    max_cost_usd: Decimal | None = None,
    dag_run_budget_usd: Decimal | None = None,
    model: str | None = None,
    task_ids: Iterable[str] = (),
) -> TaskCost:
    """The ``TaskCost`` of the try running in ``context``: its journal, its run's other tasks
    (``task_ids``: the run's Qwen tasks), and refusals that fail the task without retries."""
    from airflow_provider_qwen.storage import cost_journal

    context = context or {}
    ti = context.get("ti")
    try_number = getattr(ti, "try_number", None)
    return TaskCost(
        prices=prices,
        max_cost_usd=max_cost_usd,
        dag_run_budget_usd=dag_run_budget_usd,
        model=model,
        try_number=try_number if isinstance(try_number, int) else None,
        journal=lambda: cost_journal(context),
        other_tasks_usd=other_tasks_reader(context, task_ids),
        refusal=BudgetRefusedError,
    )


def collect_run_cost(context: Mapping[str, Any], task_ids: Iterable[str] | None = None) -> RunCost:
    """The run's spend from the ``qwen_cost`` XComs of ``task_ids`` (default: every task of the DAG)."""
    ti = context.get("ti")
    dag = context.get("dag")
    if ti is None:
        raise ValueError("the context has no task instance to read the run's qwen_cost XComs through")
    dag_id = getattr(dag, "dag_id", None) or ti.dag_id
    run_id = context.get("run_id") or ti.run_id
    ids = list(task_ids) if task_ids is not None else list(getattr(dag, "task_ids", []))
    return RunCost.of(dag_id, run_id, pull_cost_records(ti, ids, dag_id=dag_id, run_id=run_id))
