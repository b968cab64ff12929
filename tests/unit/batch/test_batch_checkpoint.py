"""Checkpoints: request keys, the journal on local and object storage, torn writes, resume of a batch."""

from __future__ import annotations

import asyncio
import os
import uuid
from decimal import Decimal

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_qwen.batch.checkpoint import LocalJournal, ObjectJournal, open_journal, request_key
from airflow_provider_qwen.batch.runner import BatchFailedError
from airflow_provider_qwen.client.errors import ServerError
from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.storage import storage_base, task_folder
from tests.support.batch_fakes import USD, BatchTI, echo, user_text, with_async_client
from tests.support.operator_fakes import answer, run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    base = tmp_path / "qwen"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{base}")
    return base


def record(key: str, result: str = "r") -> dict:
    return {"key": key, "kind": "item", "index": 0, "result": result}


def test_request_key_is_the_hash_of_the_body_as_sent():
    a = build_request("hello", temperature=0.5)
    same = build_request([{"role": "user", "content": "hello"}], temperature=0.5)
    assert request_key(a) == request_key(same)
    assert len(request_key(a)) == 64
    assert request_key(a) != request_key(build_request("hello", temperature=0.6))
    assert request_key(a) != request_key(build_request("hello!", temperature=0.5))


def test_storage_base_defaults_to_airflow_home(monkeypatch, tmp_path):
    monkeypatch.delenv("AIRFLOW__QWEN__STORAGE_BASE")
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    assert str(storage_base()) == f"file://{tmp_path}/home/qwen"


def test_task_folder_names_dag_run_task_and_map_index(storage):
    ti = BatchTI(run_id="scheduled__2024-01-01T00:00:00+00:00", map_index=3)
    folder = task_folder({"ti": ti})
    assert folder.path == f"{storage}/batch_dag/scheduled__2024-01-01T00:00:00+00:00/batch/3"
    assert os.path.isdir(folder.path)


def test_local_journal_survives_a_reopen_and_ignores_a_torn_line(tmp_path):
    async def write(journal, *records):
        for r in records:
            await journal.put(r)

    first = LocalJournal(str(tmp_path), "try1")
    asyncio.run(write(first, record("a"), record("b", "{{ not rendered }}")))
    first.close()
    with open(first.path, "ab") as segment:  # a kill in the middle of the third write
        segment.write(b'{"key": "c", "kind": "item", "result": "hal')
    second = LocalJournal(str(tmp_path), "try2")
    assert second.loaded == 2
    assert second.torn == 1
    assert second.get("b")["result"] == "{{ not rendered }}"
    assert second.get("c") is None
    asyncio.run(write(second, record("c")))
    second.close()
    third = LocalJournal(str(tmp_path), "try3")
    assert sorted(third.records) == ["a", "b", "c"]
    third.close()


def test_object_journal_writes_one_object_per_record():
    from airflow.sdk.io import attach
    from fsspec.implementations.memory import MemoryFileSystem

    attach("memory", fs=MemoryFileSystem())  # object storage stand-in (no appends, one object per key)
    folder = ObjectStoragePath(f"memory://qwen-test-{uuid.uuid4().hex}/task")
    journal = open_journal(folder, "try1")
    assert isinstance(journal, ObjectJournal)
    asyncio.run(journal.put(record("k1", "one")))
    asyncio.run(journal.put(record("k2", "two")))
    assert sorted(p.name for p in (folder / "done").iterdir()) == ["k1.json", "k2.json"]
    (folder / "done" / "torn.json").write_bytes(b'{"key": "k3", "res')
    again = open_journal(folder, "try2")
    assert {k: r["result"] for k, r in again.records.items()} == {"k1": "one", "k2": "two"}
    assert again.torn == 1


def test_a_retry_sends_only_the_items_that_did_not_finish(mocker):
    failing = {"doc 2", "doc 5"}

    def reply(request):
        text = user_text(request).removeprefix("Summarise: ")
        return ServerError("boom", status_code=500) if text in failing else echo(request)

    client = with_async_client(mocker, reply)
    items = [f"doc {i}" for i in range(8)]
    with pytest.raises(BatchFailedError):
        run(QwenBatchOperator(task_id="batch", items=items, prompt="Summarise: {{ item }}"), BatchTI())
    assert len(client.requests) == 8

    failing.clear()
    client.requests.clear()
    op = QwenBatchOperator(task_id="batch", items=items, prompt="Summarise: {{ item }}")
    result, ti = run(op, BatchTI(try_number=2))
    assert client.prompts == ["Summarise: doc 2", "Summarise: doc 5"]
    assert result == [f"summary of: Summarise: doc {i}" for i in range(8)]
    report = ti.pushed["qwen_batch"]
    assert (report["resumed"], report["succeeded"]) == (6, 8)
    assert ti.pushed["qwen_cost"]["tries"][-1]["requests"] == 2
    # what the six resumed items cost when try 1 paid for them, as the checkpoint recorded it
    assert report["reused"] == {
        "requests": 6,
        "credits_used": 6 * 2000,
        "usd_spent": usd_text(6 * USD),  # the one USD formatter (not str(Decimal))
        "estimated": False,
    }


def test_checkpoints_are_per_map_index_and_per_request(mocker):
    client = with_async_client(mocker)
    run(QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}"), BatchTI(map_index=0))
    run(QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}"), BatchTI(map_index=1))
    run(QwenBatchOperator(task_id="batch", items=["a"], prompt="Other {{ item }}"), BatchTI(map_index=1))
    assert len(client.requests) == 3  # another shard, then another request: nothing wrongly reused
    run(QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}"), BatchTI(map_index=0))
    assert len(client.requests) == 3


def test_checkpoint_false_writes_nothing(mocker, storage):
    client = with_async_client(mocker)
    for _ in range(2):
        run(QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}", checkpoint=False), BatchTI())
    assert len(client.requests) == 2
    assert not list(storage.rglob("*.jsonl"))


def test_chunk_parts_are_checkpointed_too(mocker):
    long_text = "\n\n".join(f"Paragraph {n}. " + "word " * 150 for n in range(8))
    fail_reduce = True

    def reply(request):
        if user_text(request).startswith("The text was too long") and fail_reduce:
            return ServerError("reduce failed", status_code=500)
        return answer(f"summary {len(client.requests)}")

    client = with_async_client(mocker, reply)
    kwargs = {"task_id": "batch", "items": [long_text], "prompt": "{{ item }}", "max_input_tokens": 700}
    with pytest.raises(BatchFailedError):
        run(QwenBatchOperator(**kwargs), BatchTI())
    parts = len(client.requests) - 1
    assert parts >= 2
    first_report = journal_report(storage_records())
    assert first_report == {"part": (parts, parts * USD)}  # each part record carries its own cost
    fail_reduce = False
    client.requests.clear()
    result, ti = run(QwenBatchOperator(**kwargs), BatchTI(try_number=2))
    assert len(client.requests) == 1  # only the reduce: every part was journaled
    assert result[0] == "summary 1"
    reused = ti.pushed["qwen_batch"]["reused"]
    assert (reused["requests"], reused["usd_spent"]) == (parts, usd_text(parts * USD))
    # the item's record sums the whole item: the parts paid by try 1 and the reduce paid now
    records = journal_report(storage_records())
    assert records["item"] == (parts + 1, (parts + 1) * USD)
    assert records["reduce"] == (1, USD)

    client.requests.clear()
    _, ti = run(QwenBatchOperator(**kwargs), BatchTI(try_number=3))
    assert client.requests == []
    reused = ti.pushed["qwen_batch"]["reused"]
    assert (reused["requests"], reused["usd_spent"]) == (parts + 1, usd_text((parts + 1) * USD))


def storage_records() -> list[dict]:
    import json

    base = storage_base().path
    lines = []
    for root, _, files in os.walk(base):
        for name in files:
            if name.endswith(".jsonl"):
                with open(os.path.join(root, name), "rb") as segment:
                    lines.extend(json.loads(line) for line in segment.read().splitlines())
    return lines


def journal_report(records: list[dict]) -> dict[str, tuple[int, Decimal]]:
    """(requests, usd) recorded per kind of record."""
    found: dict[str, tuple[int, Decimal]] = {}
    for r in records:
        requests, usd = found.get(r["kind"], (0, Decimal(0)))
        found[r["kind"]] = (requests + r["requests"], usd + Decimal(r["usd_spent"]))
    return found


def test_unwritable_storage_fails_clearly_before_any_request(mocker, monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the storage folder should be")
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{blocker}")
    client = with_async_client(mocker)
    with pytest.raises(Exception, match=r"cannot keep checkpoints under \[qwen\] storage_base"):
        run(QwenBatchOperator(task_id="batch", items=["a"], prompt="{{ item }}"), BatchTI())
    assert client.requests == []
