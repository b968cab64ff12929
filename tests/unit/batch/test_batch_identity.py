"""Each item is its own work: identical items are separate requests (unless ``deduplicate=True``),
and a checkpoint record is used only for the item, slot and request it is bound to."""

from __future__ import annotations

import json
import os

import pytest

from airflow_provider_qwen.batch.checkpoint import record_problem, seal, work_key
from airflow_provider_qwen.batch.runner import BatchFailedError
from airflow_provider_qwen.client.errors import ServerError
from airflow_provider_qwen.operators import QwenBatchOperator
from tests.support.batch_fakes import BatchTI, echo, with_async_client
from tests.support.operator_fakes import answer, run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    base = tmp_path / "qwen"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{base}")
    return base


class ListLog:
    def __init__(self):
        self.lines: list[str] = []
        self.warnings: list[str] = []

    def _add(self, message, *args, **_):
        self.lines.append(message % args if args else message)

    def warning(self, message, *args, **_):
        self._add(message, *args)
        if self.lines[-1].startswith("checkpoint:"):  # not Airflow's own ("outside of the Task Runner")
            self.warnings.append(self.lines[-1])

    info = error = exception = debug = _add


def batch(**kwargs) -> QwenBatchOperator:
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Write a haiku about {{ item }}")
    kwargs.setdefault("progress_interval", 60)
    return QwenBatchOperator(**kwargs)


@pytest.mark.parametrize("checkpoint", [True, False])
def test_identical_items_are_separate_requests(mocker, checkpoint):
    # one slot: each copy starts after the one before it finished (and was checkpointed)
    client = with_async_client(mocker, lambda r: answer(f"haiku {len(client.requests)}"))
    items = ["the sea"] * 10
    result, ti = run(batch(items=items, temperature=1.0, max_concurrency=1, checkpoint=checkpoint), BatchTI())
    assert len(client.requests) == 10
    assert sorted(result) == sorted(f"haiku {n}" for n in range(1, 11))  # ten samples, not one repeated
    report = ti.pushed["qwen_batch"]
    assert (report["resumed"], report["deduplicated"], report["reused"]["requests"]) == (0, 0, 0)
    assert ti.pushed["qwen_cost"]["requests"] == 10


def test_a_retry_resumes_each_identical_item_from_its_own_record(mocker):
    client = with_async_client(mocker, lambda r: answer(f"haiku {len(client.requests)}"))
    run(batch(items=["the sea"] * 4, max_concurrency=4), BatchTI())
    client.requests.clear()
    result, ti = run(batch(items=["the sea"] * 4, max_concurrency=4), BatchTI(try_number=2))
    assert client.requests == []
    assert sorted(result) == ["haiku 1", "haiku 2", "haiku 3", "haiku 4"]
    assert ti.pushed["qwen_batch"]["resumed"] == 4
    assert ti.pushed["qwen_batch"]["reused"]["requests"] == 4


def test_deduplicate_sends_identical_requests_once_and_reports_the_copies(mocker):
    client = with_async_client(mocker, lambda r: (0.01, echo(r)))
    items = ["a"] * 6 + ["b"] * 3 + ["c"]
    result, ti = run(batch(items=items, prompt="{{ item }}", deduplicate=True, max_concurrency=10), BatchTI())
    assert sorted(client.prompts) == ["a", "b", "c"]
    assert result == [f"summary of: {item}" for item in items]
    report = ti.pushed["qwen_batch"]
    assert report["deduplicated"] == 7
    assert report["resumed"] == 0
    assert report["reused"]["requests"] == 0  # copies in this try are never work of earlier tries
    assert ti.pushed["qwen_cost"]["requests"] == 3

    client.requests.clear()  # a retry: every item, copies too, has its own record
    result, ti = run(batch(items=items, prompt="{{ item }}", deduplicate=True), BatchTI(try_number=2))
    assert client.requests == []
    assert result == [f"summary of: {item}" for item in items]
    assert ti.pushed["qwen_batch"]["resumed"] == 10
    assert ti.pushed["qwen_batch"]["reused"]["requests"] == 3  # what was paid, once


def test_deduplicate_copies_of_a_failed_item_fail_with_it(mocker):
    client = with_async_client(mocker, lambda r: ServerError("broke", status_code=500))
    ti = BatchTI()
    with pytest.raises(BatchFailedError):
        run(batch(items=["x", "x", "x"], deduplicate=True, max_concurrency=3), ti)
    assert len(client.requests) == 1
    errors = ti.pushed["qwen_batch"]["errors"]
    assert len(errors) == 3
    assert sum("the same request as item" in e["error"] for e in errors) == 2


# -- records bound to their work --------------------------------------------------------------


def journal_lines(storage) -> tuple[str, list[dict]]:
    (path,) = [os.path.join(r, f) for r, _, fs in os.walk(storage) for f in fs if f.endswith(".jsonl")]
    with open(path) as segment:
        return path, [json.loads(line) for line in segment]


def rewrite(path: str, records: list[dict]) -> None:
    with open(path, "w") as segment:
        segment.writelines(json.dumps(r) + "\n" for r in records)


def first_try(mocker, storage):
    client = with_async_client(mocker)
    run(batch(items=["one", "two", "three"], prompt="{{ item }}"), BatchTI())
    path, records = journal_lines(storage)
    return client, path, {r["index"]: r for r in records}


def retry(mocker, client):
    log = ListLog()
    mocker.patch.object(QwenBatchOperator, "log", new=log)
    client.requests.clear()
    result, ti = run(batch(items=["one", "two", "three"], prompt="{{ item }}"), BatchTI(try_number=2))
    return result, ti, log


def test_an_edited_result_is_not_reused_but_sent_again(mocker, storage):
    client, path, records = first_try(mocker, storage)
    records[0]["result"] = "forged"
    rewrite(path, list(records.values()))
    result, ti, log = retry(mocker, client)
    assert client.prompts == ["one"]
    assert result == ["summary of: one", "summary of: two", "summary of: three"]
    assert ti.pushed["qwen_batch"]["checkpoint_rejected"] == 1
    (warning,) = log.warnings
    assert "item 0 (item)" in warning
    assert "checksum does not match" in warning
    assert "sending it again" in warning


def test_results_swapped_between_keys_are_not_reused(mocker, storage):
    client, path, records = first_try(mocker, storage)
    records[1]["result"], records[2]["result"] = records[2]["result"], records[1]["result"]
    records[1]["checksum"], records[2]["checksum"] = records[2]["checksum"], records[1]["checksum"]
    rewrite(path, list(records.values()))
    result, _, log = retry(mocker, client)
    assert sorted(client.prompts) == ["three", "two"]
    assert result == ["summary of: one", "summary of: two", "summary of: three"]
    assert sorted(w.split(" (")[0] for w in log.warnings) == [
        "checkpoint: the record found for item 1",
        "checkpoint: the record found for item 2",
    ]


def test_a_resealed_record_under_another_index_is_not_reused(mocker, storage):
    client, path, records = first_try(mocker, storage)
    forged = seal({k: v for k, v in records[1].items() if k != "checksum"} | {"key": records[0]["key"]})
    rewrite(path, [forged, records[1], records[2]])  # item 1's record, filed under item 0's key
    result, _, log = retry(mocker, client)
    assert client.prompts == ["one"]
    assert result[0] == "summary of: one"
    (warning,) = log.warnings
    assert "item 0" in warning
    assert "it is the record of item 1" in warning


def test_record_problem_names_each_mismatch():
    key = work_key(3, "item", "h")
    good = seal({"key": key, "index": 3, "slot": "item", "request": "h", "result": "r"})
    assert record_problem(good, index=3, slot="item", request_hash="h") is None
    assert "item 3" in record_problem(good, index=4, slot="item", request_hash="h")
    assert "another request" in record_problem(good, index=3, slot="item", request_hash="g")
    assert "'item', not 'part 0/2'" in record_problem(good, index=3, slot="part 0/2", request_hash="h")
    assert "checksum" in record_problem({**good, "result": "x"}, index=3, slot="item", request_hash="h")
    assert work_key(3, "item", "h") != work_key(4, "item", "h")
