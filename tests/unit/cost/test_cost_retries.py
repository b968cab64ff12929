"""Every paid response of every try is counted: the per-try journal survives Airflow clearing XComs."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.client.errors import BudgetExceededError, QwenError, ServerError
from airflow_provider_qwen.cost.journal import CostJournal, FolderStore, JournalError, StateStore
from airflow_provider_qwen.cost.record import CostRecord
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from airflow_provider_qwen.operators.spend import BudgetRefusedError
from tests.support.cost_fakes import FakeRun, FakeStateStore
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
    return sorted(json.loads(p.read_text())["record"]["try_number"] for p in folder.glob("try-*.json"))


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
    with pytest.raises(
        BudgetExceededError, match=r"spent at most 0\.001 USD so far \(1 earlier tries included\)"
    ):
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


def test_an_unreadable_journal_is_an_error_not_a_silent_zero(tmp_path):
    from airflow.sdk import ObjectStoragePath

    folder = ObjectStoragePath(f"file://{tmp_path}")
    journal = CostJournal(FolderStore(folder))
    journal.write(CostRecord.from_xcom({"try_number": 1, "usd_spent": "0.5", "requests": 1}))
    assert [(r.try_number, r.usd_spent) for r in journal.read()] == [(1, Decimal("0.5"))]
    (tmp_path / "try-2.json").write_text("{not json")
    with pytest.raises(JournalError, match=r"cannot be read: .*"):
        journal.read()


@pytest.mark.parametrize("breakage", ["corrupt", "unwritable"])
def test_a_budget_fails_closed_when_the_journal_cannot_be_read_or_written(mocker, storage, breakage):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    dag, op = _chat(max_completion_tokens=100, max_cost_usd="1")
    folder = storage / "cost_dag" / "manual__1" / "chat" / "-1" / "cost"
    folder.mkdir(parents=True)
    if breakage == "corrupt":
        (folder / "try-1.json").write_text("{not json")
    else:
        mocker.patch.object(FolderStore, "save", side_effect=PermissionError("read-only file system"))
    with pytest.raises(
        BudgetRefusedError, match=r"Qwen cost journal .* cannot be (read|written).*storage_base"
    ):
        run(op, FakeRun().ti("chat", try_number=2), dag=dag)
    assert client.requests == []  # refused before sending


def test_without_a_budget_a_broken_journal_only_warns(mocker, storage, caplog):
    with_client(mocker, QwenBaseOperator, answer("ok"))
    dag, op = _chat()
    folder = storage / "cost_dag" / "manual__1" / "chat" / "-1" / "cost"
    folder.mkdir(parents=True)
    (folder / "try-1.json").write_text("{not json")
    result, _ti = run(op, FakeRun().ti("chat", try_number=2), dag=dag)
    assert result == "ok"
    assert "earlier tries are not counted" in caplog.text


def test_the_journal_lives_in_the_task_state_store_when_the_context_has_one(mocker, storage):
    client = with_client(mocker, QwenBaseOperator, answer("cut", finish_reason="length"), answer("never"))
    dag, op = _chat(fail_on_truncation=True, max_completion_tokens=100, max_cost_usd="0.0015")
    fake_run, state = FakeRun(), FakeStateStore()
    with pytest.raises(QwenError, match="cut at the token limit"):
        run(op, fake_run.ti("chat", try_number=1), dag=dag, task_state_store=state)
    assert state.values["qwen_cost_journal"]["1"]["final"] is True
    with pytest.raises(BudgetExceededError, match=r"\(1 earlier tries included\)"):
        run(op, fake_run.ti("chat", try_number=2), dag=dag, task_state_store=state)  # another worker
    assert len(client.requests) == 1
    assert not storage.exists()  # no shared storage needed


def test_a_try_killed_mid_call_is_counted_at_its_claim_by_the_next_try():
    from airflow_provider_qwen.client.pricing import PriceTable
    from airflow_provider_qwen.client.request import build_request
    from airflow_provider_qwen.cost.task import TaskCost

    state = FakeStateStore()
    request = build_request("hi", model="alibaba/qwen3.7-max", max_completion_tokens=1000)
    killed = TaskCost(
        prices=PriceTable(),
        max_cost_usd=Decimal("0.05"),
        try_number=1,
        journal=lambda: CostJournal(StateStore(state)),
    )
    killed.budget.reserve(request)  # sent, then SIGKILL: no finish(), no record
    claimed = Decimal(state.values["qwen_cost_journal"]["1"]["claimed_usd"])
    assert claimed >= killed.budget.reserved_usd > 0
    retry = TaskCost(
        prices=PriceTable(),
        max_cost_usd=Decimal("0.05"),
        try_number=2,
        journal=lambda: CostJournal(StateStore(state)),
    )
    assert retry.budget.task_spent_usd == claimed  # the killed try counts at its claim


def test_a_broken_journal_does_not_fail_the_task(mocker, storage, caplog):
    with_client(mocker, QwenBaseOperator, answer("ok"))
    mocker.patch.object(CostJournal, "write", side_effect=OSError("disk full"))
    dag, op = _chat()
    ti = FakeRun().ti("chat")
    result, _ = run(op, ti, dag=dag)
    assert result == "ok"
    assert ti.pushed["qwen_cost"]["requests"] == 1
    assert "disk full: a retry will count this try at its last claim" in caplog.text
