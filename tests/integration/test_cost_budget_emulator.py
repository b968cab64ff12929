"""Budgets against the emulator over real sockets: a refused request never reaches the service."""

from __future__ import annotations

from decimal import Decimal

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.operators import QwenChatOperator, QwenCostReportOperator
from tests.integration.conftest import DagRunResult
from tests.support.operator_fakes import FakeTI, run

MODEL = "alibaba/qwen3.7-max"
ONE_CREDIT = Decimal("0.0000005")


def chat_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/chat/completions")]


def test_a_request_the_budget_would_not_cover_is_never_sent(qwen_emulator):
    op = QwenChatOperator(
        task_id="chat", prompt="Write an essay.", max_completion_tokens=50_000, max_cost_usd=0.10
    )
    ti = FakeTI()
    with pytest.raises(BudgetExceededError, match=r"max_cost_usd=0\.1 would be passed"):
        run(op, ti)
    assert chat_requests(qwen_emulator) == []
    assert qwen_emulator.total_charged() == (0, Decimal(0))
    assert ti.pushed["qwen_cost"]["requests"] == 0


def test_the_same_request_inside_the_budget_is_sent_and_recorded_exactly(qwen_emulator):
    op = QwenChatOperator(
        task_id="chat", prompt="Write a haiku.", max_completion_tokens=2_000, max_cost_usd=0.10
    )
    _, ti = run(op)
    (sent,) = chat_requests(qwen_emulator)
    assert sent.body["max_completion_tokens"] == 2_000
    credits, usd = qwen_emulator.total_charged()
    record = ti.pushed["qwen_cost"]
    assert (record["credits_used"], Decimal(record["usd_spent"])) == (credits, usd)
    assert usd <= Decimal("0.10")


def _limerick(budget: Decimal | None = None) -> QwenChatOperator:
    return QwenChatOperator(
        task_id="second",
        prompt="Now a limerick about budgets.",
        model=MODEL,
        max_completion_tokens=2_000,
        dag_run_budget_usd=str(budget) if budget is not None else None,
        retries=2,  # a refusal is not retried: a retry would be refused the same way
    )


def test_the_run_budget_refuses_the_second_task_of_a_run(run_dag, qwen_emulator):
    probe = _limerick()
    worst = worst_case_usd(probe.build_request(probe.rendered_messages()), PriceTable())
    budget = worst + ONE_CREDIT / 5  # the second task alone fits; after any paid first task it does not
    with DAG(
        "qwen_cost_run_budget", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")
    ) as dag:
        first = QwenChatOperator(
            task_id="first", prompt="Write a haiku.", model=MODEL, max_completion_tokens=500
        )
        report = QwenCostReportOperator(task_id="cost_report")
        first >> _limerick(budget) >> report

    result: DagRunResult = run_dag(dag)

    assert result.task_states[("first", -1)] == "success"
    assert result.task_states[("second", -1)] == "failed"
    assert result.task_states[("cost_report", -1)] == "success"  # runs after a failure too
    assert len(chat_requests(qwen_emulator)) == 1  # the second request never left
    refused = result.xcom("second", "qwen_cost")
    assert (refused["requests"], refused["try_number"]) == (0, 1)  # failed without retrying
    credits, usd = qwen_emulator.total_charged()
    total = result.xcom("cost_report")["total"]
    assert (total["credits_used"], Decimal(total["usd_spent"])) == (credits, usd)
    assert result.xcom("cost_report")["by_task"]["second"]["requests"] == 0
