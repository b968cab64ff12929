"""The cost journal in a real task run (dag.test()): Airflow 3.3's task state store carries each
try's spend to the next try, with no shared storage; a budget counts the earlier try."""

from __future__ import annotations

from decimal import Decimal

import pendulum
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.testing.faults import Fault


def test_a_retry_counts_the_earlier_try_from_the_task_state_store(
    run_dag, qwen_emulator, tmp_path, monkeypatch
):
    storage = tmp_path / "storage"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(storage))
    qwen_emulator.add_faults(Fault("length"))  # try 1: cut at the token limit, paid, then failed
    start = pendulum.datetime(2025, 1, 1, tz="UTC")
    with DAG("qwen_journal_retry", schedule=None, start_date=start) as dag:
        QwenChatOperator(
            task_id="chat",
            prompt="Write a haiku about ledgers.",
            max_completion_tokens=200,
            max_cost_usd="0.05",
            fail_on_truncation=True,
            retries=1,
            retry_delay=0,
        )

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    record = result.xcom("chat", "qwen_cost")
    assert [t["try_number"] for t in record["tries"]] == [1, 2]
    credits, usd = qwen_emulator.total_charged()
    assert (record["credits_used"], Decimal(record["usd_spent"])) == (credits, usd)  # both tries
    assert len(qwen_emulator.chat_requests()) == 2
    assert not (storage / "qwen_journal_retry").exists()  # the state store, not the folder
