"""Retries against the emulator: what was charged is counted once, what was not adds nothing."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenChatOperator, QwenCostReportOperator
from airflow_provider_qwen.testing.faults import Fault
from tests.support.operator_fakes import run

START = pendulum.datetime(2025, 1, 1, tz="UTC")


@pytest.fixture
def no_client_retries(qwen_emulator, monkeypatch):
    """The emulator's connection with max_retries=0: each fault fails one Airflow try."""
    conn = json.loads(qwen_emulator.conn_json())
    conn["extra"] = {**(conn.get("extra") or {}), "max_retries": 0}
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", json.dumps(conn))
    return qwen_emulator


def chat_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/chat/completions")]


def test_a_client_retry_of_an_uncharged_failure_is_counted_once(qwen_emulator):
    qwen_emulator.add_faults(Fault.server_error(503, retry_after=0.01))
    _, ti = run(QwenChatOperator(task_id="chat", prompt="Say hi."))
    assert len(chat_requests(qwen_emulator)) == 2  # the 503, then the answer
    credits, usd = qwen_emulator.total_charged()
    assert len(qwen_emulator.charges) == 1
    record = ti.pushed["qwen_cost"]
    assert record["requests"] == 1
    assert (record["credits_used"], Decimal(record["usd_spent"])) == (credits, usd)


def _retried_dag(dag_id: str, **chat_kwargs) -> DAG:
    with DAG(dag_id, schedule=None, start_date=START) as dag:
        chat = QwenChatOperator(
            task_id="chat", prompt="Say hi.", retries=1, retry_delay=timedelta(seconds=0), **chat_kwargs
        )
        chat >> QwenCostReportOperator(task_id="cost_report")
    return dag


def test_a_task_retry_after_a_charged_try_counts_both_tries(run_dag, qwen_emulator):
    qwen_emulator.add_faults(Fault.length())  # try 1 is answered (and charged) but cut short
    result = run_dag(_retried_dag("qwen_cost_charged_retry", fail_on_truncation=True))

    assert result.state == "success", result.task_states
    assert len(qwen_emulator.charges) == 2
    credits, usd = qwen_emulator.total_charged()
    record = result.xcom("chat", "qwen_cost")
    assert record["try_number"] == 2
    assert [(t["try_number"], t["requests"]) for t in record["tries"]] == [(1, 1), (2, 1)]
    assert (record["credits_used"], Decimal(record["usd_spent"])) == (credits, usd)
    total = result.xcom("cost_report")["total"]
    assert (total["credits_used"], Decimal(total["usd_spent"]), total["tries"]) == (credits, usd, 2)


def test_a_task_retry_after_an_uncharged_try_counts_one_charge(run_dag, no_client_retries):
    no_client_retries.add_faults(Fault.server_error(502))
    result = run_dag(_retried_dag("qwen_cost_uncharged_retry"))

    assert result.state == "success", result.task_states
    assert len(chat_requests(no_client_retries)) == 2
    assert len(no_client_retries.charges) == 1
    credits, usd = no_client_retries.total_charged()
    record = result.xcom("chat", "qwen_cost")
    assert [(t["try_number"], t["requests"]) for t in record["tries"]] == [(1, 0), (2, 1)]
    assert (record["credits_used"], Decimal(record["usd_spent"])) == (credits, usd)
