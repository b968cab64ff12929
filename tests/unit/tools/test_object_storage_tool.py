"""object_storage_tool on a local folder: files read, folders listed, every way out of the folder
refused (.., absolute paths, URLs, symbolic links), long files cut with an offset that reads the rest."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

pytest.importorskip(
    "airflow_provider_qwen.agent.tools", reason="agent/tools.py (the tool API) has not landed"
)

from airflow_provider_qwen.tools import ToolRefusedError, object_storage_tool
from tests.unit.tools.helpers import call

BIG = "".join(f"line {i}: héllo wörld ✓\n" for i in range(400))


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("alpha\n", encoding="utf-8")
    (root / "sub" / "b.md").write_text("# beta\n", encoding="utf-8")
    (root / "big.txt").write_text(BIG, encoding="utf-8")
    (root / "blob.bin").write_bytes(b"PK\x00\x01\x02")
    (tmp_path / "secret.txt").write_text("the secret\n", encoding="utf-8")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "up")
    os.symlink(root / "a.txt", root / "inside.txt")
    return root


def test_reads_a_file_relative_to_the_base(docs):
    tool = object_storage_tool(docs)
    assert call(tool, path="a.txt") == "alpha\n"
    assert call(tool, path="./sub/b.md") == "# beta\n"
    assert call(tool, path="inside.txt") == "alpha\n"  # a link that stays inside is fine


def test_lists_a_folder(docs):
    tool = object_storage_tool(str(docs))
    listing = json.loads(call(tool, path="."))
    names = [(entry["name"], entry["type"]) for entry in listing["entries"]]
    assert names == [
        ("a.txt", "file"),
        ("big.txt", "file"),
        ("blob.bin", "file"),
        ("inside.txt", "file"),
        ("link.txt", "file"),
        ("sub", "folder"),
        ("up", "folder"),
    ]
    assert listing["entries"][0]["size"] == 6
    assert listing["truncated"] is False
    assert json.loads(call(tool, path="sub"))["entries"] == [{"name": "b.md", "type": "file", "size": 7}]


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "..\\secret.txt",
        "..",
        "/etc/passwd",
        "\\etc\\passwd",
        "C:/Windows/win.ini",
        "file:///etc/passwd",
        "link.txt",
        "up/secret.txt",
        "up",
        "a.txt\x00.md",
    ],
)
def test_every_way_out_of_the_base_is_refused(docs, path):
    with pytest.raises(ToolRefusedError, match=r"^refused: "):
        call(object_storage_tool(docs), path=path)


def test_an_absolute_path_inside_the_base_is_still_refused(docs):
    with pytest.raises(ToolRefusedError, match="is absolute"):
        call(object_storage_tool(docs), path=str(docs / "a.txt"))


def test_a_long_file_is_cut_with_a_note_and_the_offset_reads_the_rest(docs):
    tool = object_storage_tool(docs, max_bytes=1_000)
    pieces, offset = [], 0
    for _ in range(100):
        text = call(tool, path="big.txt", offset=offset)
        assert len(text.encode("utf-8")) <= 1_000
        found = re.search(
            r"\n\[truncated: bytes (\d+)-(\d+) of (\d+) shown; call again with offset=(\d+) for more\]$", text
        )
        if found is None:
            pieces.append(text)
            break
        start, end, size, following = (int(group) for group in found.groups())
        assert (start, size, following) == (offset, len(BIG.encode("utf-8")), end)
        pieces.append(text[: found.start()])
        offset = end
    assert len(pieces) > 1
    assert "".join(pieces) == BIG


def test_a_long_listing_is_bounded(tmp_path):
    for i in range(30):
        (tmp_path / f"f{i:02}.txt").write_text("x", encoding="utf-8")
    listing = json.loads(call(object_storage_tool(tmp_path, max_entries=10), path="."))
    assert [entry["name"] for entry in listing["entries"]] == [f"f{i:02}.txt" for i in range(10)]
    assert listing["truncated"] is True
    assert "only the first 10 entries" in listing["note"]
    text = call(object_storage_tool(tmp_path, max_bytes=300), path=".")
    assert len(text.encode("utf-8")) <= 300
    assert json.loads(text)["truncated"] is True


def test_binary_missing_and_past_the_end_are_refused(docs):
    tool = object_storage_tool(docs)
    with pytest.raises(ToolRefusedError, match="looks binary"):
        call(tool, path="blob.bin")
    with pytest.raises(ToolRefusedError, match=r"no such file or folder: nothing\.txt"):
        call(tool, path="nothing.txt")
    with pytest.raises(ToolRefusedError, match="past the end"):
        call(tool, path="a.txt", offset=100)


def test_an_object_storage_path_or_url_base_works(docs):
    from airflow.sdk import ObjectStoragePath

    assert call(object_storage_tool(ObjectStoragePath(f"file://{docs}")), path="sub/b.md") == "# beta\n"
    assert call(object_storage_tool(f"file://{docs}"), path="a.txt") == "alpha\n"
    with pytest.raises(ToolRefusedError, match="outside the tool's folder"):
        call(object_storage_tool(f"file://{docs}"), path="link.txt")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"base": ""}, "base=''"),
        ({"base": 42}, "base=42"),
        ({"max_bytes": 0}, "max_bytes=0 is out of range"),
        ({"max_entries": 0}, "max_entries=0 is out of range"),
    ],
)
def test_bad_parameters_fail_at_construction(tmp_path, kwargs, message):
    arguments = {"base": tmp_path, **kwargs}
    with pytest.raises(ValueError, match=message):
        object_storage_tool(arguments.pop("base"), **arguments)
