"""QwenCostReportOperator: what a DAG run spent on Qwen, in total, per task and per model.

Reads the ``qwen_cost`` XCom of every task of its run through the Task SDK (every map index; each
record carries the task's earlier tries), so retries and mapped instances are all counted, exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_qwen.operators.cost import (
    CostTotals,
    pull_cost_records,
    record_tries,
    usd_text,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


@dataclass
class RunCost:
    """A DAG run's Qwen spend: total, by task id, by model."""

    dag_id: str
    run_id: str
    total: CostTotals = field(default_factory=CostTotals)
    by_task: dict[str, CostTotals] = field(default_factory=dict)
    by_model: dict[str, CostTotals] = field(default_factory=dict)

    def add_record(self, task_id: str, record: Mapping[str, Any]) -> None:
        """One task instance's ``qwen_cost`` record (all its tries)."""
        task = self.by_task.setdefault(task_id, CostTotals())
        task.instances += 1
        self.total.instances += 1
        for one_try in record_tries(record):
            model = str(one_try.get("model") or record.get("model") or "unknown")
            for totals in (self.total, task, self.by_model.setdefault(model, CostTotals())):
                totals.add_try(one_try)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "run_id": self.run_id,
            "total": self.total.as_dict(),
            "by_task": {task: totals.as_dict() for task, totals in sorted(self.by_task.items())},
            "by_model": {model: totals.as_dict() for model, totals in sorted(self.by_model.items())},
        }

    def table(self) -> str:
        """A fixed-width table for the task log."""
        header = ("", "tries", "requests", "prompt tok", "completion tok", "credits", "USD")
        rows: list[tuple[str, ...]] = []

        def row(name: str, totals: CostTotals) -> tuple[str, ...]:
            usd = f"{usd_text(totals.usd_spent)}{' (est.)' if totals.estimated else ''}"
            numbers = (totals.tries, totals.requests, totals.prompt_tokens, totals.completion_tokens)
            return (name, *(f"{n:,}" for n in numbers), f"{totals.credits_used:,}", usd)

        rows += [row(f"task {task}", totals) for task, totals in sorted(self.by_task.items())]
        rows += [row(f"model {model}", totals) for model, totals in sorted(self.by_model.items())]
        rows.append(row("TOTAL", self.total))
        widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]

        def line(cells: tuple[str, ...]) -> str:
            first = cells[0].ljust(widths[0])
            return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

        rule = "-" * len(line(header))
        body = [line(r) for r in rows]
        split = len(self.by_task)
        title = f"Qwen cost of DAG run {self.dag_id} / {self.run_id}"
        return "\n".join([title, line(header), rule, *body[:split], rule, *body[split:-1], rule, body[-1]])


def collect_run_cost(context: Mapping[str, Any], task_ids: Iterable[str] | None = None) -> RunCost:
    """The run's spend from the ``qwen_cost`` XComs of ``task_ids`` (default: every task of the DAG)."""
    ti = context.get("ti")
    dag = context.get("dag")
    if ti is None:
        raise ValueError("the context has no task instance to read the run's qwen_cost XComs through")
    dag_id = getattr(dag, "dag_id", None) or ti.dag_id
    run_id = context.get("run_id") or ti.run_id
    ids = list(task_ids) if task_ids is not None else list(getattr(dag, "task_ids", []))
    report = RunCost(dag_id=dag_id, run_id=run_id)
    for task_id, records in pull_cost_records(ti, ids, dag_id=dag_id, run_id=run_id).items():
        for record in records:
            report.add_record(task_id, record)
    return report


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
        report = collect_run_cost(context, task_ids)
        self.log.info("%s", report.table())
        return report.as_dict()
