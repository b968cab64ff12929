"""File inputs: each format read as a stream, sharded into ranges that cover it exactly once."""

from __future__ import annotations

import csv
import gzip
import json
import os

import pytest

from airflow_provider_qwen.batch.readers import BadItem, InputFormatError
from airflow_provider_qwen.batch.sources import (
    InputSource,
    input_source,
    is_input_value,
    iter_source,
    shard_input,
)


def url(path) -> str:
    return f"file://{path}"


def read(value, **kwargs) -> list:
    return list(iter_source(input_source("t", value, **kwargs)))


def shards_read(value, parts: int) -> list:
    shards = shard_input(value, parts)
    json.dumps(shards)  # they travel in XCom
    return [pair for shard in shards for pair in iter_source(InputSource.from_dict("t", shard))]


@pytest.fixture
def jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": i, "text": f"doc {i} é"}, ensure_ascii=False) for i in range(11)]
    path.write_text("\n".join(lines[:5]) + "\n\n" + "\n".join(lines[5:]) + "\n", encoding="utf-8")
    return path


def test_jsonl_items_in_order_blank_lines_are_no_items(jsonl):
    items = read(url(jsonl))
    assert [index for index, _ in items] == list(range(11))
    assert items[7] == (7, {"id": 7, "text": "doc 7 é"})


@pytest.mark.parametrize("parts", [1, 2, 3, 4, 11, 50])
def test_jsonl_shards_cover_the_input_once_in_order(jsonl, parts):
    assert shards_read(url(jsonl), parts) == read(url(jsonl))
    shards = shard_input(url(jsonl), parts)
    assert len(shards) == min(parts, 11)
    assert all(s["offset"] > 0 for s in shards[1:])  # a shard seeks: it does not read what is before


def test_a_bad_line_is_its_own_failed_item_with_where_and_why(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'"ok"\n[1, 2]\n{not json\nnull\n{"text": "fine"}\n')
    items = read(url(path))
    assert items[0] == (0, "ok")
    assert items[4] == (4, {"text": "fine"})
    assert items[1][1] == BadItem("the line at byte 5 is a JSON list, not a string or an object")
    assert isinstance(items[2][1], BadItem)
    assert "byte 12 is not JSON" in items[2][1].error
    assert items[3][1] == BadItem("the line at byte 22 is a JSON null, not a string or an object")


def test_csv_rows_with_quoted_newlines_are_dicts_and_shards_cut_between_records(tmp_path):
    path = tmp_path / "docs.csv"
    with path.open("w", newline="", encoding="utf-8-sig") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "text"])
        for i in range(9):
            writer.writerow([i, f"first line {i}\nsecond, line"])
    items = read(url(path))
    assert items[0] == (0, {"id": "0", "text": "first line 0\nsecond, line"})  # BOM not in the header
    assert len(items) == 9
    for parts in (2, 4, 9):
        assert shards_read(url(path), parts) == items


def test_a_csv_row_of_the_wrong_width_fails_alone(tmp_path):
    path = tmp_path / "docs.csv"
    path.write_text("id,text\n1,a\n2\n3,c\n")
    items = read(url(path))
    assert [item for _, item in items][::2] == [{"id": "1", "text": "a"}, {"id": "3", "text": "c"}]
    assert items[1][1] == BadItem("the CSV record at byte 12 has 1 fields where the header has 2")


def test_a_csv_without_a_usable_header_is_refused(tmp_path):
    for content, problem in (("", "empty"), ("text,text\n1,2\n", "every column once")):
        path = tmp_path / "bad.csv"
        path.write_text(content)
        with pytest.raises(InputFormatError, match=problem):
            read(url(path))


def test_gzip_is_read_as_a_stream_and_sharded_by_skipping(tmp_path):
    path = tmp_path / "docs.jsonl.gz"
    with gzip.open(path, "wt") as file:
        for i in range(10):
            file.write(json.dumps(f"doc {i}") + "\n")
    assert read(url(path)) == [(i, f"doc {i}") for i in range(10)]
    assert shards_read(url(path), 3) == read(url(path))


def test_parquet_rows_and_row_group_shards(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "docs.parquet"
    pq.write_table(
        pa.table({"id": list(range(25)), "text": [f"p{i}" for i in range(25)]}), path, row_group_size=4
    )
    items = read(url(path))
    assert items[24] == (24, {"id": 24, "text": "p24"})
    assert len(items) == 25
    assert shards_read(url(path), 4) == items


def test_a_folder_or_glob_of_text_files_each_file_an_item(tmp_path):
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    for name in ("b.txt", "a.txt", "sub/c.txt", "d.md"):
        (folder / name).write_text(f"text of {name}")
    (folder / "bad.txt").write_bytes(b"\xff\xfe not utf-8")
    everything = read(url(folder) + "/")
    assert [item["path"].rsplit("/", 1)[-1] for _, item in everything if not isinstance(item, BadItem)] == [
        "a.txt",
        "b.txt",
        "d.md",
        "c.txt",
    ]
    bad = [item for _, item in everything if isinstance(item, BadItem)]
    assert len(bad) == 1
    assert "bad.txt is not UTF-8" in bad[0].error
    globbed = read(url(folder) + "/*.txt")
    assert [item["text"] for _, item in globbed if not isinstance(item, BadItem)] == [
        "text of a.txt",
        "text of b.txt",
    ]
    assert globbed[0][1]["path"] == f"file://{folder}/a.txt"
    assert shards_read(url(folder) + "/", 3) == everything


def test_a_shard_of_a_file_changed_since_is_refused(jsonl):
    shard = shard_input(url(jsonl), 2)[1]
    with jsonl.open("a") as file:
        file.write('"one more"\n')
    os.utime(jsonl, (1, 1))
    with pytest.raises(InputFormatError, match="changed since it was sharded"):
        list(iter_source(InputSource.from_dict("t", shard)))


def test_what_is_an_input_and_what_is_refused(tmp_path):
    assert is_input_value("s3://bucket/docs.jsonl")
    assert is_input_value({"qwen_input": 1, "url": "x"})
    assert not is_input_value("not a url")
    assert not is_input_value({"text": "an item"})
    with pytest.raises(InputFormatError, match=r"cannot tell the format of 'file:///x/docs\.json'"):
        input_source("t", "file:///x/docs.json")
    assert input_source("t", "file:///x/docs.json", format="jsonl").format == "jsonl"
    with pytest.raises(InputFormatError, match="not a shard from shard_input"):
        input_source("t", {"qwen_input": 1, "url": "file:///x.jsonl", "format": "jsonl", "evil": 1})
    with pytest.raises(InputFormatError, match="stop=2 must be an int >= start=5"):
        input_source(
            "t", {"qwen_input": 1, "url": "file:///x.jsonl", "format": "jsonl", "start": 5, "stop": 2}
        )
    with pytest.raises(ValueError, match="parts=0 must be an int >= 1"):
        shard_input("file:///x.jsonl", 0)


def test_an_empty_input_is_one_empty_shard(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    shards = shard_input(url(path), 4)
    assert [(s["start"], s["stop"]) for s in shards] == [(0, 0)]
    assert shards_read(url(path), 4) == []
