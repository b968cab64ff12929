"""QwenCostReportOperator: what a DAG run spent on Qwen, in total, per task and per model.

Reads the ``qwen_cost`` XCom of every task of its run through the Task SDK (every map index; each
record carries the task's earlier tries), so retries and mapped instances are all counted, exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class QwenCostReportOperator(BaseOperator):
    """Report what this DAG run spent on Qwen: total, per task and per model; logs a table.

    Put it last. It runs when upstream tasks failed too (``trigger_rule="all_done"`` by default),
    since failed tries cost money as well. Returns ``{"dag_id", "run_id", "total", "by_task",
    "by_model"}``; each figure has the ``qwen_cost`` fields (USD as an exact decimal string) plus
    ``tries`` (try records counted) and ``instances`` (task instances, mapped ones each).

    :param task_ids: tasks to add up (default: every other task of the DAG).
    """

    template_fields: Sequence[str] = ("task_ids",)
    ui_color = "#fff3b0"

    def __init__(
        self, *, task_ids: Sequence[str] | None = None, trigger_rule: str = "all_done", **kwargs: Any
    ) -> None:
        super().__init__(trigger_rule=trigger_rule, **kwargs)
        self.task_ids = list(task_ids) if task_ids is not None else None

    def execute(self, context: Context) -> dict[str, Any]:
        task_ids = self.task_ids
        if task_ids is None:
            task_ids = [t for t in context["dag"].task_ids if t != self.task_id]
        from airflow_provider_qwen.operators.spend import collect_run_cost

        report = collect_run_cost(context, task_ids)
        self.log.info("%s", report.table())
        return report.as_dict()
