"""A DAG run's Qwen spend: total, per task, per model, from its tasks' ``qwen_cost`` records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.cost.record import CostRecord, CostTotals


@dataclass
class RunCost:
    """A DAG run's Qwen spend: total, by task id, by model."""

    dag_id: str
    run_id: str
    total: CostTotals = field(default_factory=CostTotals)
    by_task: dict[str, CostTotals] = field(default_factory=dict)
    by_model: dict[str, CostTotals] = field(default_factory=dict)

    @classmethod
    def of(cls, dag_id: str, run_id: str, records: Mapping[str, list[Mapping[str, Any]]]) -> RunCost:
        """The report over ``records``: task id -> its ``qwen_cost`` XComs (one per map index)."""
        report = cls(dag_id=dag_id, run_id=run_id)
        for task_id, values in records.items():
            for value in values:
                report.add_record(task_id, value)
        return report

    def add_record(self, task_id: str, record: Mapping[str, Any]) -> None:
        """One task instance's ``qwen_cost`` record (all its tries)."""
        task = self.by_task.setdefault(task_id, CostTotals())
        task.instances += 1
        self.total.instances += 1
        whole = CostRecord.from_xcom(record)
        for one_try in whole.each_try():
            model = one_try.model or whole.model or "unknown"
            fields = {**one_try.to_xcom(), "model": model}
            for totals in (self.total, task, self.by_model.setdefault(model, CostTotals())):
                totals.add_record(fields)

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
            usd = f"{usd_text(totals.usd_spent)}{' (est.)' if totals.cost.estimated else ''}"
            numbers = (totals.tries, totals.requests, totals.prompt_tokens, totals.completion_tokens)
            return (name, *(f"{n:,}" for n in numbers), f"{totals.cost.credits_used:,}", usd)

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
