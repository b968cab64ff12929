"""QwenCostReportOperator: what a DAG run spent on Qwen, in total, per task and per model.

Reads the ``qwen_cost`` XCom of every task of its run through the Task SDK (every map index; each
record carries the task's earlier tries), so retries and mapped instances are all counted, exactly.
With ``reconcile=True`` the run's estimates (cut streams, tries that failed after being sent,
answers without usage) are first replaced by the service's own figures (``QwenHook.reconcile``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_qwen import DEFAULT_CONN_ID

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_qwen.cost.reconcile import ReconcileReport

# Clock skew between workers and the service: the logs window starts this much before the run.
RECONCILE_MARGIN = timedelta(minutes=5)


class QwenCostReportOperator(BaseOperator):
    """Report what this DAG run spent on Qwen: total, per task and per model; logs a table.

    Put it last. It runs when upstream tasks failed too (``trigger_rule="all_done"`` by default),
    since failed tries cost money as well. Returns ``{"dag_id", "run_id", "total", "by_task",
    "by_model"}``; each figure has the ``qwen_cost`` fields (USD as an exact decimal string) plus
    ``tries`` (try records counted) and ``instances`` (task instances, mapped ones each).

    :param task_ids: tasks to add up (default: every other task of the DAG).
    :param reconcile: replace estimated figures by the service's own records first (one logs query
        per 92 days of the run, the ledger for the rows found); the result then has
        ``"reconciliation"``: entries reconciled, still estimated (task, call, reason), USD difference.
        A failure to read the records is logged and reported there; the figures stay estimated.
    :param qwen_conn_id: the connection whose key reads the records (``reconcile=True``).
    :param reconcile_since: where the logs window starts: a datetime, or a timedelta back from now
        (default: the run's start, or its ``run_after`` once cleared, less 5 minutes).
    """

    template_fields: Sequence[str] = ("task_ids",)
    ui_color = "#fff3b0"

    def __init__(
        self,
        *,
        task_ids: Sequence[str] | None = None,
        trigger_rule: str = "all_done",
        reconcile: bool = False,
        qwen_conn_id: str = DEFAULT_CONN_ID,
        reconcile_since: datetime | timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.task_ids = list(task_ids) if task_ids is not None else None
        self.reconcile = reconcile
        self.qwen_conn_id = qwen_conn_id
        self.reconcile_since = reconcile_since

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_qwen.cost.report import RunCost
        from airflow_provider_qwen.operators.spend import pull_cost_records

        task_ids = self.task_ids
        if task_ids is None:
            task_ids = [t for t in context["dag"].task_ids if t != self.task_id]
        ti = context["ti"]
        dag_id = getattr(context.get("dag"), "dag_id", None) or ti.dag_id
        run_id = context.get("run_id") or ti.run_id
        records = pull_cost_records(ti, task_ids, dag_id=dag_id, run_id=run_id)
        reconciliation: dict[str, Any] | None = None
        if self.reconcile:
            records, reconciliation = self._reconciled(records, context)
        report = RunCost.of(dag_id, run_id, records)
        self.log.info("%s", report.table())
        result = report.as_dict()
        if reconciliation is not None:
            result["reconciliation"] = reconciliation
        return result

    def _reconciled(
        self, records: dict[str, list[Mapping[str, Any]]], context: Context
    ) -> tuple[dict[str, list[Mapping[str, Any]]], dict[str, Any]]:
        """The run's records with estimates replaced, and the reconciliation's report (by task)."""
        from airflow_provider_qwen.client.errors import QwenError
        from airflow_provider_qwen.hooks.qwen import QwenHook

        owners = [task_id for task_id, values in records.items() for _ in values]
        flat = [record for values in records.values() for record in values]
        since = self._since(context)
        try:
            result = QwenHook(qwen_conn_id=self.qwen_conn_id).reconcile(flat, since=since)
        except QwenError as exc:
            self.log.warning("Could not reconcile with the service's records: %s", exc)
            return records, {"error": f"{type(exc).__name__}: {exc}", "since": since.isoformat()}
        rebuilt: dict[str, list[Mapping[str, Any]]] = {task_id: [] for task_id in records}
        for task_id, record in zip(owners, result.records, strict=True):
            rebuilt[task_id].append(record)
        self.log.info("%s", result.report.summary())
        return rebuilt, _by_task(result.report, owners, since)

    def _since(self, context: Context) -> datetime:
        chosen = self.reconcile_since
        if isinstance(chosen, timedelta):
            return datetime.now(timezone.utc) - chosen
        if isinstance(chosen, datetime):
            return chosen
        run = context.get("dag_run")
        start = getattr(run, "start_date", None)
        candidates = [start] if isinstance(start, datetime) else []
        if getattr(run, "clear_number", 0) or not candidates:  # tries before a clear predate its start
            after = getattr(run, "run_after", None)
            candidates += [after] if isinstance(after, datetime) else []
        if not candidates:
            raise ValueError("reconcile=True: the run has no start date; set reconcile_since")
        return min(candidates) - RECONCILE_MARGIN


def _by_task(report: ReconcileReport, owners: list[str], since: datetime) -> dict[str, Any]:
    data = report.as_dict()
    for entry in data["still_estimated"]:
        entry["task_id"] = owners[entry.pop("record")]
    return {**data, "since": since.isoformat()}
