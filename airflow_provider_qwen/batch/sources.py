"""The batch's ``items`` as a file on (object) storage, read as a stream: a JSON-lines, CSV or
Parquet file, or a folder or glob of text files (each file the item ``{"path", "text"}``).

``InputSource`` names the input and, for a shard, the range of items it covers: ``start`` and
``stop`` are global item indices (the item's place in the whole input, the index of its result),
``offset`` is where item ``start`` begins (a byte offset, a Parquet row, a file's place in the
listing). ``shard_input`` reads an input once and cuts it into such ranges for
``.partial(...).expand(items=...)``; each shard is a JSON-safe dict, so it travels in XCom.

A shard also carries the input's fingerprint (size and modification time or ETag): a shard of a
file changed since is refused rather than read at the wrong offsets.
"""

from __future__ import annotations

import hashlib
import os
import re
from array import array
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, replace
from itertools import islice, pairwise
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.readers import (
    InputFormatError,
    csv_header,
    csv_items,
    jsonl_items,
    parquet_items,
    text_file_item,
)

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

SHARD_MARKER = "qwen_input"  # the key that tells a shard dict from an item dict
FORMATS = ("jsonl", "csv", "parquet", "text")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst", ".lz4")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
PASSWORD = re.compile(r"(://)[^/\s?#]*:[^/\s?#]*@")  # user:password@, to the netloc's last @


def display_url(url: str) -> str:
    """``url`` fit for logs, XCom and errors: a ``user:password@`` is cut (a ``conn_id@`` is kept)."""
    return PASSWORD.sub(r"\1***@", url)


GLOB = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputSource:
    """An input file, folder or glob, and the range of its items this task reads."""

    url: str
    format: str
    conn_id: str | None = None
    start: int = 0
    stop: int | None = None  # exclusive; None: to the end
    offset: int = 0
    fingerprint: str | None = None  # checked when set: the input must not have changed

    @property
    def total(self) -> int | None:
        """Items in range when known (a shard), else None (known once read to the end)."""
        return None if self.stop is None else self.stop - self.start

    def describe(self) -> str:
        span = "" if self.stop is None and not self.start else f" items {self.start}..{self.stop}"
        return f"{self.format} input {display_url(self.url)}{span}"

    def to_dict(self) -> dict[str, Any]:
        return {SHARD_MARKER: 1, **asdict(self)}

    @classmethod
    def from_dict(cls, where: str, value: Mapping[str, Any]) -> InputSource:
        known = set(cls.__dataclass_fields__)
        unknown = set(value) - known - {SHARD_MARKER}
        if unknown or not isinstance(value.get("url"), str) or not isinstance(value.get("format"), str):
            raise InputFormatError(
                f"{where}: items is a dict with {SHARD_MARKER!r} but not a shard from shard_input "
                f"(unknown keys {sorted(unknown)}, url {display_url(str(value.get('url')))!r})"
            )
        source = cls(**{k: v for k, v in value.items() if k in known})
        return source.checked(where)

    def checked(self, where: str) -> InputSource:
        if self.format not in FORMATS:
            raise InputFormatError(
                f"{where}: input format {self.format!r} is not one of {', '.join(FORMATS)}"
            )
        for name in ("start", "offset"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InputFormatError(f"{where}: shard {name}={getattr(self, name)!r} must be an int >= 0")
        if self.stop is not None and (not isinstance(self.stop, int) or self.stop < self.start):
            raise InputFormatError(f"{where}: shard stop={self.stop!r} must be an int >= start={self.start}")
        return self

    def path(self) -> ObjectStoragePath:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(self.url, conn_id=self.conn_id)


def is_input_value(value: Any) -> bool:
    """Whether ``items`` names an input (a path, a URL, a shard) rather than being the items."""
    if is_storage_path(value):
        return True
    if isinstance(value, str):
        text = value.strip()
        return bool(URL.match(text)) or text.startswith("/")
    return isinstance(value, Mapping) and SHARD_MARKER in value


def is_storage_path(value: Any) -> bool:
    """An ``ObjectStoragePath`` (not ``os.PathLike`` in Airflow 3.3) or another path object."""
    if isinstance(value, os.PathLike):
        return True
    return any(cls.__name__ == "ObjectStoragePath" for cls in type(value).__mro__)


def input_source(where: str, value: Any, *, format: str | None = None) -> InputSource:
    """The ``InputSource`` for a path, URL or shard dict (``is_input_value``); the format from the
    name unless given. Raises ``InputFormatError`` for what cannot be an input."""
    if isinstance(value, Mapping):
        return InputSource.from_dict(where, value)
    conn_id = getattr(value, "conn_id", None)
    url = str(value).strip()
    if url.startswith("/"):  # a plain local path
        url = f"file://{url}"
    if format is None:
        format = _format_of(where, url)
    return InputSource(url=url, format=format, conn_id=conn_id).checked(where)


def _format_of(where: str, url: str) -> str:
    if GLOB.search(url) or url.endswith("/"):
        return "text"
    name = url.rsplit("/", 1)[-1].lower()
    for compression in COMPRESSIONS:
        name = name.removesuffix(compression)
    suffix = os.path.splitext(name)[1]
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if not suffix:
        return "text"  # a folder of text files
    raise InputFormatError(
        f"{where}: cannot tell the format of {display_url(url)!r} from its name: use a .jsonl, .ndjson, "
        ".csv or .parquet file (optionally .gz), a folder or glob of text files, or pass input_format="
    )


def _fingerprint(path: ObjectStoragePath) -> str:
    info = path.fs.info(path.path)
    changed = info.get("ETag") or info.get("LastModified") or info.get("mtime") or info.get("created")
    return f"{info.get('size')}:{changed}"


def _listing_print(names: list[str]) -> str:
    digest = hashlib.sha256("\n".join(names).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{len(names)}:{digest}"


def _seekable(source: InputSource) -> bool:
    """Whether item offsets can be used: not for a compressed file (read from its start instead)."""
    return source.format in ("jsonl", "csv") and not source.url.lower().endswith(COMPRESSIONS)


def text_files(source: InputSource) -> list[str]:
    """The files of a folder or glob, sorted (a file's place in this list is its item index).

    Hidden files and folders (``.DS_Store``, ``.git/``, a results file being written) are left
    out; a folder that does not exist, or a glob that matches no file, is an error, not an empty batch."""
    path = source.path()
    if GLOB.search(path.path):
        found = path.fs.glob(path.path, detail=True)
        names = [name for name, info in found.items() if info.get("type") == "file"]
        if not names:
            raise InputFormatError(f"{display_url(source.url)} matches no file")
    else:
        if not path.fs.isdir(path.path):
            raise InputFormatError(f"{display_url(source.url)} is not a folder (or does not exist)")
        names = list(path.fs.find(path.path))
    root = path.path.rstrip("/")
    return sorted(name for name in names if not _hidden(name, root))


def _hidden(name: str, root: str) -> bool:
    below = name[len(root) :] if name.startswith(root) else name.rsplit("/", 1)[-1]
    return any(part.startswith(".") for part in below.split("/") if part)


def probe(where: str, source: InputSource) -> None:
    """Open ``source`` and read its first item: a missing input, a folder or glob with no file,
    a CSV without a header, a file that is not Parquet, a shard of a changed input fail here, once,
    before any request (``InvalidRequestError``, not retried: a retry would read the same)."""
    from airflow_provider_qwen.client.errors import InvalidRequestError

    try:
        next(iter_source(source), None)
    except (InputFormatError, FileNotFoundError) as exc:
        shown = display_url(source.url)
        raise InvalidRequestError(f"{where}: items={shown!r} cannot be read: {exc}") from None


def iter_source(source: InputSource) -> Iterator[tuple[int, Any]]:
    """``(global index, item)`` for the items of ``source`` in range, read as a stream."""
    for index, _end, item in _records(source):
        yield index, item


def _records(source: InputSource) -> Iterator[tuple[int, int, Any]]:
    """``(global index, where the next item starts, item)`` from ``source.start`` to ``source.stop``."""
    if source.stop is not None and source.stop <= source.start:
        return
    index = source.start
    try:
        for end, item in _read_from_start(source):
            yield index, end, item
            index += 1
            if source.stop is not None and index >= source.stop:
                return
    except (InputFormatError, FileNotFoundError):
        raise
    except (OSError, EOFError, ValueError) as exc:  # a truncated .gz, a storage error, a bad Parquet page
        raise InputFormatError(
            f"{display_url(source.url)} cannot be read past item {index} ({type(exc).__name__}: {exc})"
        ) from None
    if source.stop is not None and index < source.stop:
        raise InputFormatError(
            f"{display_url(source.url)} ended at item {index}, before the end of its shard (item "
            f"{source.stop}): the input changed since it was sharded; shard it again"
        )


def _read_from_start(source: InputSource) -> Iterator[tuple[int, Any]]:
    """The reader of ``source``'s format, from item ``source.start`` on."""
    path = source.path()
    if source.format == "text":
        names = text_files(source)
        if source.fingerprint is not None and _listing_print(names) != source.fingerprint:
            shown = display_url(source.url)
            raise InputFormatError(f"the files of {shown} changed since they were sharded: shard again")
        for number, name in enumerate(names[source.start :], start=source.start + 1):
            url = f"{path.protocol or 'file'}://{name}"
            yield number, text_file_item(url, path.fs.cat_file(name))
        return
    if source.fingerprint is not None and (found := _fingerprint(path)) != source.fingerprint:
        raise InputFormatError(
            f"{display_url(source.url)} changed since it was sharded (was {source.fingerprint}, now "
            f"{found}): shard it again"
        )
    with path.fs.open(path.path, "rb", compression="infer") as file:
        if source.format == "parquet":
            yield from parquet_items(file, start_row=source.start)
            return
        seek = _seekable(source)
        records: Iterator[tuple[int, Any]]
        if source.format == "jsonl":
            if seek and source.offset:
                file.seek(source.offset)
            records = jsonl_items(file, offset=source.offset if seek else 0)
        else:
            header, first = csv_header(file)
            records = csv_items(file, header, offset=max(first, source.offset) if seek else first, seek=seek)
        yield from records if seek else islice(records, source.start, None)


def shard_input(
    source: str | ObjectStoragePath,
    parts: int,
    *,
    conn_id: str | None = None,
    format: str | None = None,
) -> list[dict[str, Any]]:
    """Cut one input into at most ``parts`` shards of (nearly) equal item counts, for
    ``QwenBatchOperator.partial(...).expand(items=shard_input(...))``, in one pass over the input.

    Each shard is resumable on its own (its checkpoint is its mapped task's); result indices are
    global, so the shards' results together cover the input once. An empty input gives one empty shard.
    """
    where = "shard_input"
    if not isinstance(parts, int) or isinstance(parts, bool) or parts < 1:
        raise ValueError(f"{where}: parts={parts!r} must be an int >= 1")
    whole = input_source(where, source, format=format)
    if conn_id is not None:
        whole = replace(whole, conn_id=conn_id)
    starts = array("q", [0])  # where each item starts (line formats): a shard seeks there
    if whole.format == "text":
        names = text_files(whole)
        count, fingerprint = len(names), _listing_print(names)
    else:
        fingerprint = _fingerprint(whole.path())
        for _index, end, _item in _records(whole):
            starts.append(end)
        count = len(starts) - 1
        if whole.format == "csv" and _seekable(whole):
            with whole.path().open("rb") as file:
                starts[0] = csv_header(file)[1]
    shards = max(1, min(parts, count))
    cuts = [count * k // shards for k in range(shards + 1)]
    seek = _seekable(whole)
    return [
        replace(
            whole, start=first, stop=last, offset=starts[first] if seek else 0, fingerprint=fingerprint
        ).to_dict()
        for first, last in pairwise(cuts)
    ]
