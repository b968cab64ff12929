"""The results file: rows as items finish or in item order, bounded memory, whole or absent."""

from __future__ import annotations

import asyncio
import json
import random

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_provider_qwen.batch.results_file import ResultsFile


def rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def write(sink: ResultsFile, order: list[int]) -> None:
    sink.open_now()
    await asyncio.gather(*(sink.add(i, "ok", f"r{i}", None) for i in order))
    await sink.close()


def test_index_order_writes_as_finished_and_the_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out" / "results.jsonl"
    sink = ResultsFile(ObjectStoragePath(f"file://{target}"))

    async def go() -> None:
        sink.open_now()
        await sink.add(3, "ok", "three", None)
        await sink.add(1, "failed", None, "RateLimitError: 429")
        assert not target.exists()  # nothing visible before close
        info = await sink.close()
        assert info == {"results_path": f"file://{target}", "format": "jsonl", "order": "index", "rows": 2}

    asyncio.run(go())
    assert rows(target) == [
        {"index": 3, "status": "ok", "result": "three", "error": None},
        {"index": 1, "status": "failed", "result": None, "error": "RateLimitError: 429"},
    ]
    assert [p.name for p in target.parent.iterdir()] == ["results.jsonl"]  # no temporary left


def test_item_order_whatever_the_finishing_order(tmp_path):
    target = tmp_path / "results.jsonl"
    order = list(range(5000))
    random.Random(7).shuffle(order)
    asyncio.run(write(ResultsFile(ObjectStoragePath(f"file://{target}"), order="item", window=10_000), order))
    assert [row["index"] for row in rows(target)] == list(range(5000))


def test_item_order_holds_at_most_window_rows_and_the_next_row_never_waits(tmp_path):
    target = tmp_path / "results.jsonl"
    sink = ResultsFile(ObjectStoragePath(f"file://{target}"), order="item", window=3, first_index=100)
    held: list[int] = []

    async def go() -> None:
        sink.open_now()
        later = [asyncio.ensure_future(sink.add(i, "ok", i, None)) for i in range(101, 106)]
        await asyncio.sleep(0.01)
        held.append(len(sink._held))
        assert sum(t.done() for t in later) == 3  # two rows wait for room
        await sink.add(100, "ok", 100, None)  # the slow first item: written at once, the rest follow
        await asyncio.gather(*later)
        await sink.close()

    asyncio.run(go())
    assert held == [3]
    assert [row["index"] for row in rows(target)] == list(range(100, 106))


def test_structured_results_are_json_values_in_jsonl_and_json_text_in_parquet(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    jsonl, parquet = tmp_path / "r.jsonl", tmp_path / "r.parquet"
    value = {"title": "Q3", "tags": ["ops", "é"]}
    for target, format in ((jsonl, "jsonl"), (parquet, "parquet")):
        sink = ResultsFile(ObjectStoragePath(f"file://{target}"), format=format, structured=True)

        async def go(sink: ResultsFile = sink) -> None:
            sink.open_now()
            await sink.add(0, "ok", value, None)
            await sink.add(1, "failed", None, "ValidationError")
            await sink.close()

        asyncio.run(go())
    assert rows(jsonl)[0]["result"] == value
    table = pq.read_table(parquet)
    assert table.column_names == ["index", "status", "result", "error", "path"]
    assert json.loads(table.column("result")[0].as_py()) == value
    assert table.column("error")[1].as_py() == "ValidationError"
    assert table.schema.metadata[b"qwen.result_encoding"] == b"json"


def test_abort_leaves_nothing_behind(tmp_path):
    target = tmp_path / "results.jsonl"
    sink = ResultsFile(ObjectStoragePath(f"file://{target}"))

    async def go() -> None:
        sink.open_now()
        await sink.add(0, "ok", "x", None)
        sink.abort()

    asyncio.run(go())
    assert list(tmp_path.iterdir()) == []


def test_a_partial_file_left_by_a_killed_try_is_overwritten_by_the_next(tmp_path):
    target = tmp_path / "results.jsonl"
    (tmp_path / ".results.jsonl.partial").write_text('{"index": 0}\n' * 1000)  # the killed try's
    other = tmp_path / ".other.jsonl.partial"  # another target's: not touched
    other.write_text("")
    asyncio.run(write(ResultsFile(ObjectStoragePath(f"file://{target}")), [0, 1]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.jsonl.partial", "results.jsonl"]
    assert len(rows(target)) == 2


def test_item_order_holds_when_writes_to_storage_interleave(tmp_path):
    target = tmp_path / "results.jsonl"
    big = "x" * 300_000  # every few rows a flush to the file, in a thread: other rows arrive meanwhile
    sink = ResultsFile(ObjectStoragePath(f"file://{target}"), order="item")
    order = list(range(300))
    random.Random(3).shuffle(order)

    async def go() -> None:
        sink.open_now()
        await asyncio.gather(*(sink.add(i, "ok", big, None) for i in order))
        await sink.close()

    asyncio.run(go())
    assert [row["index"] for row in rows(target)] == list(range(300))


def test_abort_on_object_storage_discards_the_upload_instead_of_completing_it():
    class Upload:
        def __init__(self) -> None:
            self.done = ""

        def write(self, data: bytes) -> None: ...

        def close(self) -> None:
            self.done = "completed"

        def discard(self) -> None:
            self.done = "discarded"

    sink = ResultsFile(ObjectStoragePath("memory://bucket/r.jsonl"))
    upload = Upload()
    sink._file = upload
    sink.abort()
    sink.abort()  # idempotent
    assert upload.done == "discarded"
