"""What a hostile input or results path did to the file batch, each now refused or handled."""

from __future__ import annotations

import json

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_qwen.batch import shard_input
from airflow_provider_qwen.batch.readers import BadItem, InputFormatError
from airflow_provider_qwen.batch.sources import InputSource, display_url, input_source, iter_source
from airflow_provider_qwen.operators import QwenBatchOperator
from airflow_provider_qwen.operators.batch_checks import BatchArgumentError
from tests.support.batch_fakes import BatchTI, with_async_client
from tests.support.operator_fakes import run


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{tmp_path / 'qwen-storage'}")


def batch(**kwargs) -> QwenBatchOperator:
    kwargs.setdefault("task_id", "batch")
    kwargs.setdefault("prompt", "Summarise: {{ item.text }}")
    kwargs.setdefault("progress_interval", 60)
    return QwenBatchOperator(**kwargs)


def jsonl(path, count: int):
    path.write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n" for i in range(count)))
    return path


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_results_path_equal_to_the_input_is_refused_and_the_input_kept(mocker, tmp_path):
    client = with_async_client(mocker)
    docs = jsonl(tmp_path / "docs.jsonl", 3)
    before = docs.read_text()
    with pytest.raises(BatchArgumentError, match="is the input file itself"):
        run(batch(items=f"file://{docs}", results_path=str(docs)), BatchTI())
    assert docs.read_text() == before
    assert client.requests == []


def test_results_inside_a_folder_input_are_refused(mocker, tmp_path):
    with_async_client(mocker)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("a")
    for items in (f"file://{tmp_path}/notes/", f"file://{tmp_path}/notes/*.txt"):
        with pytest.raises(BatchArgumentError, match="inside the folder the input lists"):
            run(batch(items=items, results_path=f"file://{tmp_path}/notes/out/"), BatchTI())


def test_hidden_files_are_no_items_and_rows_name_their_file(mocker, tmp_path):
    with_async_client(mocker)
    folder = tmp_path / "notes"
    (folder / ".git").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref")
    (folder / ".DS_Store").write_bytes(b"\x00\x01")
    (folder / "a.txt").write_text("alpha")
    (folder / "b.txt").write_text("beta")
    out = tmp_path / "out.jsonl"
    manifest, _ = run(batch(items=f"file://{folder}/", results_path=str(out)), BatchTI())
    assert (manifest["total"], manifest["failed"]) == (2, 0)
    assert sorted(row["path"] for row in rows(out)) == [f"file://{folder}/a.txt", f"file://{folder}/b.txt"]


@pytest.mark.parametrize("suffix", ["missing/", "missing", "*.none"])
def test_a_folder_or_glob_that_matches_nothing_fails_before_any_request(mocker, tmp_path, suffix):
    client = with_async_client(mocker)
    with pytest.raises(BatchArgumentError, match=r"cannot be read: .*(not a folder|matches no file)"):
        run(batch(items=f"file://{tmp_path}/{suffix}", results_path=str(tmp_path / "r.jsonl")), BatchTI())
    assert client.requests == []
    assert not (tmp_path / "r.jsonl").exists()


def test_a_shard_of_an_input_that_shrank_fails_instead_of_succeeding_short(tmp_path):
    docs = jsonl(tmp_path / "docs.jsonl", 30)
    shard = InputSource.from_dict("t", shard_input(f"file://{docs}", 1)[0])
    from dataclasses import replace

    unchecked = replace(shard, fingerprint=None)  # e.g. an object replaced mid-read
    jsonl(docs, 10)
    with pytest.raises(ValueError, match="ended at item 10, before the end of its shard"):
        list(iter_source(unchecked))


def test_an_unbalanced_csv_quote_fails_its_record_instead_of_swallowing_the_next(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text('id,text\n1,fine\n2,"broken" tail\n3,next\n4,"ok"\n')
    items = [item for _, item in iter_source(input_source("t", f"file://{path}"))]
    assert items[0] == {"id": "1", "text": "fine"}
    assert isinstance(items[1], BadItem)
    assert {"id": "4", "text": "ok"} in items


def test_a_csv_record_that_is_not_utf8_fails_alone_and_is_never_sent(mocker, tmp_path):
    client = with_async_client(mocker)
    path = tmp_path / "docs.csv"
    path.write_bytes("id,text\n1,Café\n2,plain\n".encode("cp1252"))
    out = tmp_path / "r.jsonl"
    manifest, _ = run(batch(items=str(path), results_path=str(out), max_failures=1), BatchTI())
    assert (manifest["succeeded"], manifest["failed"]) == (1, 1)
    assert [r.to_body()["messages"][-1]["content"] for r in client.requests] == ["Summarise: plain"]
    assert "not UTF-8" in next(row["error"] for row in rows(out) if row["index"] == 0)


def test_object_storage_paths_are_inputs_and_results_paths(mocker, tmp_path):
    with_async_client(mocker)
    docs = jsonl(tmp_path / "docs.jsonl", 4)
    out = ObjectStoragePath(f"file://{tmp_path}/out.jsonl")
    manifest, _ = run(batch(items=ObjectStoragePath(f"file://{docs}"), results_path=out), BatchTI())
    assert manifest["succeeded"] == 4
    assert len(rows(tmp_path / "out.jsonl")) == 4


def test_an_unwritable_results_path_is_refused_before_any_request(mocker, tmp_path):
    client = with_async_client(mocker)
    (tmp_path / "a-file").write_text("")
    with pytest.raises(BatchArgumentError, match=r"results_path .* cannot be written"):
        run(batch(items=["x"], results_path=f"file://{tmp_path}/a-file/sub/r.jsonl"), BatchTI())
    assert client.requests == []


def test_a_hand_edited_shard_gets_a_clear_error():
    with pytest.raises(InputFormatError, match="not a shard from shard_input"):
        input_source("t", {"qwen_input": 1, "url": "file:///x.jsonl", "start": 0})


def test_a_password_holding_an_at_sign_is_cut_whole():
    assert display_url("https://user:p@ssw0rd@host/docs.jsonl") == "https://***@host/docs.jsonl"
