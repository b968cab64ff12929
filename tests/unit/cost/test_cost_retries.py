"""Every paid response of every try is counted: the per-try journal survives Airflow clearing XComs."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.client.errors import BudgetExceededError, QwenError, ServerError
from airflow_provider_qwen.cost.journal import CostJournal
from airflow_provider_qwen.cost.record import CostRecord
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.cost_fakes import FakeRun
from tests.support.operator_fakes import FakeTI, answer, run, with_client


@pytest.fixture
def storage(tmp_path, monkeypatch):
    base = tmp_path / "qwen"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(base))
    return base


def _chat(**kwargs):
    with DAG("cost_dag", schedule=None) as dag:
        op = QwenChatOperator(task_id="chat", prompt="?", **kwargs)
    return dag, op


def _journal(storage, task_id="chat", map_index=-1):
    folder = storage / "cost_dag" / "manual__1" / task_id / str(map_index) / "cost"
    return sorted(json.loads(p.read_text())["try_number"] for p in folder.glob("try-*.json"))


def test_a_charged_try_that_failed_is_counted_by_the_next_try(mocker, storage):
    with_client(mocker, QwenBaseOperator, answer("cut", finish_reason="length"), answer("whole"))
    dag, op = _chat(fail_on_truncation=True)
    fake_run = FakeRun()
    with pytest.raises(QwenError, match="cut at the token limit"):
        run(op, fake_run.ti("chat", try_number=1), dag=dag)
    ti = fake_run.ti("chat", try_number=2)  # Airflow cleared try 1's XComs here
    assert ("chat", -1, "qwen_cost") not in fake_run.xcoms

    result, _ = run(op, ti, dag=dag)

    assert result == "whole"
    record = ti.pushed["qwen_cost"]
    assert record["try_number"] == 2
    assert record["requests"] == 2
    assert Decimal(record["usd_spent"]) == Decimal("0.002")
    assert record["credits_used"] == 4000
    assert [(t["try_number"], t["requests"], t["usd_spent"]) for t in record["tries"]] == [
        (1, 1, "0.001"),
        (2, 1, "0.001"),
    ]
    assert _journal(storage) == [1, 2]


def test_a_try_that_failed_uncharged_adds_nothing(mocker, storage):
    with_client(mocker, QwenBaseOperator, ServerError("bad gateway", status_code=502), answer("ok"))
    dag, op = _chat()
    fake_run = FakeRun()
    with pytest.raises(ServerError):
        run(op, fake_run.ti("chat", try_number=1), dag=dag)
    ti = fake_run.ti("chat", try_number=2)
    run(op, ti, dag=dag)

    record = ti.pushed["qwen_cost"]
    assert record["requests"] == 1
    assert Decimal(record["usd_spent"]) == Decimal("0.001")
    assert [(t["try_number"], t["requests"]) for t in record["tries"]] == [(1, 0), (2, 1)]


def test_max_cost_counts_the_earlier_tries_of_the_task(mocker, storage):
    client = with_client(mocker, QwenBaseOperator, answer("cut", finish_reason="length"), answer("never"))
    dag, op = _chat(fail_on_truncation=True, max_completion_tokens=100, max_cost_usd="0.0015")
    fake_run = FakeRun()
    with pytest.raises(QwenError, match="cut at the token limit"):
        run(op, fake_run.ti("chat", try_number=1), dag=dag)
    ti = fake_run.ti("chat", try_number=2)
    with pytest.raises(BudgetExceededError, match=r"spent 0\.001 USD so far \(1 earlier tries included\)"):
        run(op, ti, dag=dag)
    assert len(client.requests) == 1
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == Decimal("0.001")


def test_each_map_index_has_its_own_journal(mocker, storage):
    with_client(mocker, QwenBaseOperator, answer("a"), answer("b"))
    with DAG("cost_dag", schedule=None) as dag:
        op = QwenChatOperator(task_id="each", prompt="x")
    fake_run = FakeRun()
    for index in (0, 1):
        ti = fake_run.ti("each", map_index=index, try_number=1)
        run(op, ti, dag=dag)
        assert [t["try_number"] for t in ti.pushed["qwen_cost"]["tries"]] == [1]
    assert _journal(storage, "each", 0) == [1]
    assert _journal(storage, "each", 1) == [1]


def test_no_journal_outside_a_task_run(mocker, storage):
    with_client(mocker, QwenBaseOperator, answer("ok"))
    _, ti = run(QwenChatOperator(task_id="chat", prompt="?"), FakeTI(try_number=3))
    record = ti.pushed["qwen_cost"]
    assert [t["try_number"] for t in record["tries"]] == [3]
    assert not storage.exists()


def test_unreadable_journal_entries_are_skipped(tmp_path, caplog):
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"file://{tmp_path}")
    journal = CostJournal(folder)
    journal.write(CostRecord.from_xcom({"try_number": 1, "usd_spent": "0.5", "requests": 1}))
    (tmp_path / "try-2.json").write_text("{not json")
    (tmp_path / "notes.txt").write_text("ignored")
    assert [r.try_number for r in journal.read()] == [1]
    assert "skipping unreadable Qwen cost journal entry" in caplog.text


def test_a_broken_journal_does_not_fail_the_task(mocker, storage, caplog):
    with_client(mocker, QwenBaseOperator, answer("ok"))
    mocker.patch.object(CostJournal, "write", side_effect=OSError("disk full"))
    dag, op = _chat()
    ti = FakeRun().ti("chat")
    result, _ = run(op, ti, dag=dag)
    assert result == "ok"
    assert ti.pushed["qwen_cost"]["requests"] == 1
    assert "could not write the Qwen cost journal" in caplog.text
