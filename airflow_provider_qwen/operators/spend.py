"""Airflow's side of the money: the run's ``qwen_cost`` XComs read through the Task SDK, a try's
``TaskCost`` wired to its journal and its run, and the budget refusal Airflow does not retry."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable, to_decimal, usd_text
from airflow_provider_qwen.cost.record import COST_XCOM_KEY
from airflow_provider_qwen.cost.report import RunCost
from airflow_provider_qwen.cost.run_budget import Hold
from airflow_provider_qwen.cost.task import TaskCost

CLAIM_XCOM_KEY = "qwen_run_claim"


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


class XComHolds:
    """The run's claims on ``dag_run_budget_usd``: each task instance's in its own XCom, read
    through the Task SDK (the API server's database makes publish-then-read linearizable)."""

    def __init__(self, ti: Any, task_ids: Iterable[str], instance: str) -> None:
        self.ti = ti
        self.task_ids = list(task_ids)
        self.instance = instance

    def publish(self, hold: Hold) -> None:
        self.ti.xcom_push(
            key=CLAIM_XCOM_KEY,
            value={
                "instance": hold.instance,
                "claimed_usd": usd_text(hold.claimed_usd),
                "at_most_usd": usd_text(hold.at_most_usd),
            },
        )

    def others(self) -> list[Hold]:
        values = self.ti.xcom_pull(task_ids=self.task_ids, key=CLAIM_XCOM_KEY) if self.task_ids else []
        holds = {}
        for value in values or []:
            if isinstance(value, Mapping) and value.get("instance") not in (None, self.instance):
                name = str(value["instance"])
                claimed, at_most = to_decimal(value.get("claimed_usd")), to_decimal(value.get("at_most_usd"))
                holds[name] = Hold(name, claimed, at_most)
        return list(holds.values())


def instance_name(ti: Any) -> str:
    """``task_id[map_index]``: a task instance's name among the run's claims."""
    map_index = getattr(ti, "map_index", -1)
    return f"{ti.task_id}[{map_index if isinstance(map_index, int) else -1}]"


def task_cost(
    context: Mapping[str, Any] | None,
    *,
    prices: PriceTable,
    max_cost_usd: Decimal | None = None,
    dag_run_budget_usd: Decimal | None = None,
    model: str | None = None,
    task_ids: Iterable[str] = (),
) -> TaskCost:
    """The ``TaskCost`` of the try running in ``context``: its journal, the run's claims (``task_ids``:
    the run's Qwen tasks), and refusals that fail the task without retries."""
    from airflow_provider_qwen.storage import cost_journal

    context = context or {}
    ti = context.get("ti")
    try_number = getattr(ti, "try_number", None)
    in_a_run = ti is not None and isinstance(getattr(ti, "task_id", None), str)
    instance = instance_name(ti) if in_a_run else ""
    holds = XComHolds(ti, task_ids, instance) if in_a_run else None
    return TaskCost(
        prices=prices,
        max_cost_usd=max_cost_usd,
        dag_run_budget_usd=dag_run_budget_usd,
        model=model,
        try_number=try_number if isinstance(try_number, int) else None,
        journal=lambda: cost_journal(context),
        run_store=(lambda: holds) if holds is not None else None,
        instance=instance,
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
