"""object_storage_tool against a hostile environment: a folder swapped for a symbolic link between
the tool's check and its read (a race) is refused, not followed;
encoded traversals are names, never a way up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from airflow_provider_qwen.tools import ToolRefusedError, object_storage_tool
from tests.unit.tools.helpers import call


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "b.txt").write_text("inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("THE SECRET\n")
    return root


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(tree, monkeypatch):
    real_isfile = os.path.isfile

    def swap_then_check(path):  # runs after the real-path check, before the file is opened
        result = real_isfile(path)
        if str(path).endswith("b.txt") and not os.path.islink(tree / "sub"):
            shutil.rmtree(tree / "sub")
            os.symlink(tree.parent / "outside", tree / "sub")
        return result

    monkeypatch.setattr(os.path, "isfile", swap_then_check)

    with pytest.raises(ToolRefusedError, match="changed while it was read"):
        call(object_storage_tool(tree), path="sub/b.txt")


def test_the_file_itself_swapped_for_a_link_is_not_followed(tree, monkeypatch):
    real_isfile = os.path.isfile

    def swap_then_check(path):
        result = real_isfile(path)
        target = tree / "sub" / "b.txt"
        if str(path) == str(target) and not os.path.islink(target):
            target.unlink()
            os.symlink(tree.parent / "outside" / "b.txt", target)
        return result

    monkeypatch.setattr(os.path, "isfile", swap_then_check)

    with pytest.raises(ToolRefusedError, match="changed while it was read"):
        call(object_storage_tool(tree), path="sub/b.txt")


@pytest.mark.parametrize(
    "path", ["%2e%2e/outside/b.txt", "..%2foutside%2fb.txt", "\uff0e\uff0e/outside/b.txt"]
)
def test_encoded_traversals_are_plain_names(tree, path):
    with pytest.raises(ToolRefusedError, match="no such file"):
        call(object_storage_tool(tree), path=path)


def test_reading_still_works(tree):
    assert call(object_storage_tool(tree), path="sub/b.txt") == "inside\n"
