"""QwenBatchOperator over a file input and into a results file: streamed, resumable, a manifest in XCom."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from airflow_provider_qwen.batch import results_asset, shard_input
from airflow_provider_qwen.batch.runner import BatchFailedError
from airflow_provider_qwen.client.errors import InvalidRequestError, ServerError
from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.operators.batch_checks import BatchArgumentError
from tests.support.batch_fakes import USD, BatchTI, echo, user_text, with_async_client
from tests.support.operator_fakes import run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'qwen-storage'}")


@pytest.fixture
def docs(tmp_path):
    path = tmp_path / "in" / "docs.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps({"id": i, "text": f"doc {i}"}) + "\n" for i in range(40)))
    return path


def batch(**kwargs) -> QwenBatchOperator:
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Summarise: {{ item.text }}")
    kwargs.setdefault("progress_interval", 60)
    return QwenBatchOperator(**kwargs)


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_jsonl_input_to_a_results_file_returns_a_manifest_not_the_results(mocker, docs, tmp_path):
    client = with_async_client(mocker)
    out = tmp_path / "out" / "summaries.jsonl"
    manifest, ti = run(
        batch(items=f"file://{docs}", results_path=f"file://{out}", results_order="item"), BatchTI()
    )
    assert manifest == {
        "results_path": f"file://{out}",
        "format": "jsonl",
        "order": "item",
        "rows": 40,
        "input": f"jsonl input file://{docs}",
        "total": 40,
        "succeeded": 40,
        "failed": 0,
        "unstarted": 0,
        "usd_spent": usd_text(40 * USD),
        "usd_spent_this_try": usd_text(40 * USD),
    }
    assert [row["result"] for row in rows(out)] == [f"summary of: Summarise: doc {i}" for i in range(40)]
    assert len(client.requests) == 40
    assert ti.pushed["qwen_batch"]["total"] == 40
    assert Decimal(ti.pushed["qwen_cost"]["usd_spent"]) == 40 * USD


def test_a_retry_rewrites_the_results_file_from_the_checkpoint_sending_only_what_failed(
    mocker, docs, tmp_path
):
    failing = {7, 21}
    client = with_async_client(
        mocker,
        lambda r: (
            ServerError("boom", status_code=500) if int(user_text(r).split()[-1]) in failing else echo(r)
        ),
    )
    out = tmp_path / "out" / "r.jsonl"
    op = batch(items=f"file://{docs}", results_path=f"file://{out}", max_failures=0)
    with pytest.raises(BatchFailedError, match="2 of 40 item"):
        run(op, BatchTI(try_number=1))
    first = {row["index"]: row for row in rows(out)}  # the failed try's file is kept: errors per item
    assert first[7]["status"] == "failed"
    assert "ServerError" in first[7]["error"]
    assert len(first) == 40
    failing.clear()
    client.requests.clear()
    manifest, _ = run(batch(items=f"file://{docs}", results_path=f"file://{out}"), BatchTI(try_number=2))
    assert sorted(user_text(r) for r in client.requests) == ["Summarise: doc 21", "Summarise: doc 7"]
    assert manifest["succeeded"] == 40
    assert (manifest["usd_spent"], manifest["usd_spent_this_try"]) == (usd_text(40 * USD), usd_text(2 * USD))
    assert sorted(row["index"] for row in rows(out)) == list(range(40))


def test_shards_over_expand_cover_the_input_with_global_indices(mocker, docs, tmp_path):
    client = with_async_client(mocker)
    folder = tmp_path / "results"
    shards = shard_input(f"file://{docs}", 3)
    seen = []
    for map_index, shard in enumerate(shards):
        op = batch(items=shard, results_path=f"file://{folder}/")
        manifest, _ = run(op, BatchTI(map_index=map_index))
        assert manifest["results_path"] == f"file://{folder}/batch-{map_index:05d}.jsonl"
        seen += [row["index"] for row in rows(folder / f"batch-{map_index:05d}.jsonl")]
    assert sorted(seen) == list(range(40))
    assert len(client.requests) == 40


def test_bad_lines_fail_alone_and_are_never_sent(mocker, tmp_path):
    client = with_async_client(mocker)
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "a"}\n42\n{"text": "b"}\n')
    out = tmp_path / "r.jsonl"
    manifest, ti = run(batch(items=f"file://{path}", results_path=f"file://{out}", max_failures=1), BatchTI())
    assert (manifest["succeeded"], manifest["failed"]) == (2, 1)
    assert len(client.requests) == 2
    bad = next(row for row in rows(out) if row["index"] == 1)
    assert bad["error"] == "input: the line at byte 14 is a JSON int, not a string or an object"
    assert ti.pushed["qwen_batch"]["errors"][0]["index"] == 1


def test_a_file_input_without_results_path_returns_the_results_list(mocker, docs):
    with_async_client(mocker)
    shard = shard_input(f"file://{docs}", 4)[2]
    result, _ = run(batch(items=shard), BatchTI())
    assert result == [f"summary of: Summarise: doc {i}" for i in range(20, 30)]


def test_parquet_results(mocker, docs, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    with_async_client(mocker)
    out = tmp_path / "r.parquet"
    manifest, _ = run(batch(items=f"file://{docs}", results_path=str(out)), BatchTI())
    assert manifest["format"] == "parquet"
    table = pq.read_table(out)
    assert sorted(table.column("index").to_pylist()) == list(range(40))


def test_the_results_path_is_the_tasks_asset_outlet():
    op = batch(items=["a"], results_path="s3://my_conn@bucket/summaries/")
    assert [asset.uri for asset in op.outlets] == ["s3://bucket/summaries"]
    assert results_asset("s3://bucket/x.jsonl").uri == "s3://bucket/x.jsonl"
    assert batch(items=["a"], results_path="s3://b/{{ ds }}.jsonl").outlets == []  # known only when rendered


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"items": "file:///x/docs.json"}, "cannot tell the format of 'file:///x/docs.json'"),
        (
            {"items": ["a"], "results_format": "csv"},
            "results_format='csv' is not allowed: one of 'jsonl', 'parquet'",
        ),
        ({"items": ["a"], "results_order": "random"}, "results_order='random' is not allowed"),
        ({"items": ["a"], "input_format": "xml"}, "input_format='xml' is not allowed"),
        ({"items": ["a"], "results_path": 42}, "results_path=42 is not allowed"),
    ],
)
def test_bad_file_arguments_are_refused_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        batch(**kwargs)


def test_a_missing_input_fails_before_any_request(mocker, tmp_path):
    client = with_async_client(mocker)
    with pytest.raises(
        BatchArgumentError, match=r"items='file://.*nope.jsonl' cannot be read: .*No such file"
    ):
        run(
            batch(items=f"file://{tmp_path}/nope.jsonl", results_path=f"file://{tmp_path}/r.jsonl"), BatchTI()
        )
    assert client.requests == []
    assert not (tmp_path / "r.jsonl").exists()


def test_a_rendered_url_that_is_no_input_fails_once(mocker):
    with_async_client(mocker)
    with pytest.raises(BatchArgumentError, match="cannot tell the format"):
        run(batch(items="file:///data/{{ ds }}.xml"), BatchTI(), ds="2026-12-01")


def test_a_mapped_task_may_not_write_one_shared_results_file(mocker, docs, tmp_path):
    client = with_async_client(mocker)
    shard = shard_input(f"file://{docs}", 2)[1]
    with pytest.raises(BatchArgumentError, match="names one file, but this task is mapped"):
        run(batch(items=shard, results_path=f"file://{tmp_path}/all.jsonl"), BatchTI(map_index=1))
    assert client.requests == []
    templated = batch(items=shard, results_path=f"file://{tmp_path}/{{{{ ds }}}}.jsonl")  # same for all
    with pytest.raises(BatchArgumentError, match="names one file, but this task is mapped"):
        run(templated, BatchTI(map_index=1), ds="2026-12-01")


def test_a_password_in_an_input_url_is_cut_where_it_is_shown_a_conn_id_is_kept():
    from airflow_provider_qwen.batch.sources import display_url

    assert display_url("https://user:hunter2@host/docs.jsonl") == "https://***@host/docs.jsonl"
    assert display_url("s3://my_conn@bucket/docs.jsonl") == "s3://my_conn@bucket/docs.jsonl"
    source = input_source_of("https://user:hunter2@host/docs.jsonl")
    assert "hunter2" not in source.describe()


def input_source_of(url: str):
    from airflow_provider_qwen.batch.sources import input_source

    return input_source("t", url)
