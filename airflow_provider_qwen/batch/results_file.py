"""The batch's results as a file on (object) storage, written as items finish: JSON lines or Parquet,
one row per item ``{"index", "status", "result", "error"}``, so nothing needs to fit in XCom.

``order="index"`` writes rows as they finish (each names its item's index); ``order="item"`` writes
them in item order, holding at most ``window`` finished rows for a slow earlier item (a worker with
a row past the window waits, so memory stays bounded). The file appears whole or not at all: a
local file is written under a temporary name and renamed when complete; on object storage the
upload completes when the file is closed. Each try writes the whole file again (finished items
come from the checkpoint, not from the service).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

RESULT_FORMATS = ("jsonl", "parquet")
RESULT_ORDERS = ("index", "item")
FLUSH_BYTES = 1 << 20  # JSON lines are written to the file in blocks of about this size
PARQUET_ROWS = 10_000  # rows per Parquet row group at most
PARQUET_BYTES = 32 << 20  # ... and about this much text (large answers make smaller groups)
PARQUET_COLUMNS = ("index", "status", "result", "error", "path")
DEFAULT_WINDOW = 4096


class ResultsFile:
    """Rows of finished items, written to ``path`` in blocks, in finishing or item order."""

    def __init__(
        self,
        path: ObjectStoragePath,
        *,
        format: str = "jsonl",
        order: str = "index",
        first_index: int = 0,
        window: int = DEFAULT_WINDOW,
        structured: bool = False,
    ) -> None:
        self.path = path
        self.format = format
        self.order = order
        self.structured = structured
        self.rows = 0
        self._next = first_index  # item order: the index whose row is written next
        self._held: dict[int, dict[str, Any]] = {}
        self._window = window
        self._room = asyncio.Condition()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._columns: dict[str, list[Any]] = {name: [] for name in PARQUET_COLUMNS}
        self._file: Any = None
        self._writer: Any = None
        self._temp: str | None = None
        self._lock = asyncio.Lock()

    def open_now(self) -> None:
        """Open the file (its folder created); nothing is visible at ``path`` before ``close``."""
        from airflow_provider_qwen.storage import local_path

        self.path.parent.mkdir(parents=True, exist_ok=True)
        local = local_path(self.path)
        if local is not None:
            # one name per target: a try killed while writing leaves its file to the next try, which
            # overwrites it (one try of a task instance runs at a time; tasks write targets of their own)
            self._temp = f"{os.path.dirname(local)}/.{os.path.basename(local)}.partial"
            self._file = open(self._temp, "wb")  # noqa: SIM115 (closed in close/abort)
        else:
            self._file = self.path.fs.open(self.path.path, "wb")
        if self.format == "parquet":
            self._writer = _parquet_writer(self._file, self.structured)

    async def add(
        self, index: int, status: str, result: Any, error: str | None, path: str | None = None
    ) -> None:
        """One finished item's row (written in its turn in item order; may wait for room).

        ``path``: the input file the item came from (a folder or glob input), kept in its row."""
        row = {"index": index, "status": status, "result": result, "error": error}
        if path is not None or self.format == "parquet":
            row["path"] = path
        if self.order == "index":
            await self._emit(row)
            return
        async with self._room:  # rows are emitted under it: no other row can come in between
            await self._room.wait_for(lambda: index == self._next or len(self._held) < self._window)
            self._held[index] = row
            ready = False
            while self._next in self._held:
                await self._emit(self._held.pop(self._next))
                self._next += 1
                ready = True
            if ready:
                self._room.notify_all()

    async def _emit(self, row: dict[str, Any]) -> None:
        self.rows += 1
        if self.format == "parquet":
            for name, value in row.items():
                if name == "result" and value is not None and (self.structured or not isinstance(value, str)):
                    value = json.dumps(value, ensure_ascii=False)
                self._columns[name].append(value)
                self._buffered += len(value) if isinstance(value, str) else 8
            if len(self._columns["index"]) >= PARQUET_ROWS or self._buffered >= PARQUET_BYTES:
                await self._flush()
            return
        line = (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode(
            "utf-8", "surrogatepass"
        )
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        async with self._lock:
            if self.format == "parquet":
                columns, self._columns = self._columns, {name: [] for name in self._columns}
                self._buffered = 0
                if columns["index"]:
                    table = _parquet_table(columns, self.structured)
                    await asyncio.to_thread(self._writer.write_table, table)
                return
            data, self._buffer, self._buffered = b"".join(self._buffer), [], 0
            if data:
                await asyncio.to_thread(self._file.write, data)

    async def close(self) -> dict[str, Any]:
        """Write what is left, make the file visible at ``path``; returns what the manifest says of it."""
        if self._held:  # item order: rows after a gap (an index that never came) are still written
            for index in sorted(self._held):
                await self._emit(self._held.pop(index))
        await self._flush()
        await asyncio.to_thread(self._commit)
        from airflow_provider_qwen.batch.sources import display_url

        shown = display_url(str(self.path))
        return {"results_path": shown, "format": self.format, "order": self.order, "rows": self.rows}

    def _commit(self) -> None:
        if self._writer is not None:
            self._writer.close()
        file, self._file = self._file, None
        file.close()
        if self._temp is not None:
            from airflow_provider_qwen.storage import local_path

            os.replace(self._temp, str(local_path(self.path)))
            self._temp = None

    def abort(self) -> None:
        """Drop the unfinished file (the batch itself failed before it could finish). On object
        storage the upload is discarded, not completed (closing would publish the partial file)."""
        file, self._file = self._file, None
        try:
            if file is not None:
                discard = getattr(file, "discard", None)
                if self._temp is None and callable(discard):
                    discard()
                else:
                    file.close()
        finally:
            if self._temp is not None and os.path.exists(self._temp):
                os.remove(self._temp)


def _parquet_writer(file: Any, structured: bool) -> Any:
    import pyarrow.parquet as pq  # present: ``open_streams`` checked

    return pq.ParquetWriter(file, _parquet_schema(structured))


def _parquet_schema(structured: bool) -> Any:
    import pyarrow as pa

    encoding = b"json" if structured else b"text"
    fields = [
        pa.field("index", pa.int64()),
        pa.field("status", pa.string()),
        pa.field("result", pa.string()),
        pa.field("error", pa.string()),
        pa.field("path", pa.string()),
    ]
    return pa.schema(fields, metadata={b"qwen.result_encoding": encoding})


def _parquet_table(columns: dict[str, list[Any]], structured: bool) -> Any:
    import pyarrow as pa

    return pa.Table.from_pydict(columns, schema=_parquet_schema(structured))
