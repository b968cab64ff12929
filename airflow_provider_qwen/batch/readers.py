"""Streaming readers of one input file: JSON lines, CSV, Parquet. Each yields ``(end, item)`` in
file order, where ``end`` is where the next item starts (a byte offset for JSON lines and CSV, a
row number for Parquet), so a shard can start there without reading what comes before.

An item a reader cannot make sense of (a line that is not JSON, a CSV row of the wrong width) is
yielded as a ``BadItem`` saying where and why: it fails on its own, before any request, and the
rest of the file goes on. Blank lines are no items. Nothing is held beyond the item being read.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

PARQUET_BATCH_ROWS = 1024
CSV_ENCODING = "utf-8-sig"  # a UTF-8 BOM, as spreadsheets write it, is not part of the first header


@dataclass(frozen=True)
class BadItem:
    """An input record that is no item: it fails with ``error``, and is never sent."""

    error: str


class InputFormatError(ValueError):
    """The input as a whole cannot be read (no header, a missing column, not Parquet)."""


def jsonl_items(file: IO[bytes], *, offset: int = 0) -> Iterator[tuple[int, Any]]:
    """Items of a JSON-lines file read from ``offset``: each non-blank line a JSON string or object."""
    position = offset
    for line in iter(file.readline, b""):
        start, position = position, position + len(line)
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, UnicodeDecodeError) as exc:
            yield position, BadItem(f"the line at byte {start} is not JSON ({exc})")
            continue
        if isinstance(value, (str, dict)):
            yield position, value
        else:
            kind = "null" if value is None else type(value).__name__
            yield position, BadItem(f"the line at byte {start} is a JSON {kind}, not a string or an object")


def csv_header(file: IO[bytes]) -> tuple[list[str], int]:
    """The header row of a CSV file and the byte offset of the first record after it."""
    lines = _Lines(file, 0)
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise InputFormatError("the CSV file is empty: it needs a header row naming its columns") from None
    except csv.Error as exc:
        raise InputFormatError(f"the CSV header cannot be read ({exc})") from None
    if not header or len(set(header)) != len(header) or not all(header):
        raise InputFormatError(f"the CSV header {header!r} must name every column once")
    return header, lines.position


def csv_items(
    file: IO[bytes], header: list[str], *, offset: int, seek: bool = True
) -> Iterator[tuple[int, Any]]:
    """Rows of a CSV file from ``offset`` (a record boundary) as dicts keyed by the header; without
    ``seek`` (a compressed file) the file must already stand at ``offset``."""
    if seek:
        file.seek(offset)
    lines = _Lines(file, offset)
    reader = csv.reader(lines, strict=True)
    while True:
        start = lines.position
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield lines.position, BadItem(f"the CSV record at byte {start} cannot be read ({exc})")
            continue
        if not row:
            continue
        if len(row) != len(header):
            problem = f"has {len(row)} fields where the header has {len(header)}"
            yield lines.position, BadItem(f"the CSV record at byte {start} {problem}")
            continue
        record = dict(zip(header, row, strict=True))
        if any(_not_utf8(value) for value in record.values()):
            yield lines.position, BadItem(f"the CSV record at byte {start} is not UTF-8 text")
            continue
        yield lines.position, record


def _not_utf8(value: str) -> bool:
    """Whether a field decoded with ``surrogateescape`` held bytes that are not UTF-8."""
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _Lines:
    """Decoded lines of a binary file for ``csv.reader``, counting the bytes consumed: the reader
    pulls lines only until its record is complete, so after each record ``position`` is its end."""

    def __init__(self, file: IO[bytes], position: int) -> None:
        self.file = file
        self.position = position
        self.encoding = CSV_ENCODING if position == 0 else "utf-8"

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self.file.readline()
        if not line:
            raise StopIteration
        self.position += len(line)
        text = line.decode(self.encoding, errors="surrogateescape")  # bad bytes: see _not_utf8
        self.encoding = "utf-8"
        return text


def parquet_file(file: IO[bytes]) -> Any:
    """``pyarrow.parquet.ParquetFile`` over ``file``, or a clear error naming the extra to install."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InputFormatError(
            "reading Parquet needs pyarrow: pip install 'airflow-provider-qwen[parquet]'"
        ) from None
    try:
        return pq.ParquetFile(file)
    except Exception as exc:  # pyarrow raises ArrowInvalid and friends
        raise InputFormatError(f"not a Parquet file ({exc})") from None


def parquet_items(file: IO[bytes], *, start_row: int = 0) -> Iterator[tuple[int, Any]]:
    """Rows of a Parquet file from row ``start_row`` as dicts; whole row groups before it are skipped."""
    parquet = parquet_file(file)
    first_group, row = 0, 0
    metadata = parquet.metadata
    while (
        first_group < metadata.num_row_groups and row + metadata.row_group(first_group).num_rows <= start_row
    ):
        row += metadata.row_group(first_group).num_rows
        first_group += 1
    groups = list(range(first_group, metadata.num_row_groups))
    if not groups:
        return
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups):
        for record in batch.to_pylist():
            row += 1
            if row > start_row:
                yield row, record


def text_file_item(url: str, data: bytes) -> Any:
    """One text file as the item ``{"path", "text"}``; a file that is not UTF-8 is a ``BadItem``."""
    try:
        return {"path": url, "text": data.decode("utf-8")}
    except UnicodeDecodeError as exc:
        return BadItem(f"{url} is not UTF-8 text ({exc})")
