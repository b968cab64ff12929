"""The journal of finished work: what a retry of the task reads so it sends only what is left.

Every finished item (and every finished part of a chunked item) is recorded as it finishes, keyed
by its place (the item's index, and which part or reduce step) and the SHA-256 of its rendered
request, under the task's folder (``storage.task_folder``: dag, run, task and map index). A retry of
the same task instance, or a rerun after the worker was killed, finds the record and reuses its
result instead of paying again. Identical items have keys of their own: each is its own request.

A record is bound to its work: it names its index, slot and request hash, and carries a checksum
of its content. One that does not match what it is looked up for (an edited result, results
swapped between keys, another index) is not used: ``record_problem`` says why, and the work is
sent again.

Two layouts, both safe against SIGKILL at any instant:

- a local folder: one append-only JSON-lines file per try (``journal/<writer>.jsonl``), each
  record one ``write()``; a line cut by a kill does not parse and is ignored on reading;
- object storage (no appends there): one object per record (``done/<key>.json``), written from a
  worker thread; a PUT is atomic, so an object is either whole or absent.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_qwen.client.request import ChatRequest

log = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
OBJECTS_DIR = "done"


def request_key(request: ChatRequest) -> str:
    """SHA-256 of the request body as sent (canonical JSON): the identity of one request."""
    return request_hash_and_size(request)[0]


def request_hash_and_size(request: ChatRequest) -> tuple[str, int]:
    """``request_key`` and the length of the canonical body (characters: a bound on its tokens / 4)."""
    body = json.dumps(request.to_body(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode("utf-8", "surrogatepass")).hexdigest(), len(body)


def work_key(index: int, slot: str, request_hash: str) -> str:
    """The key of one piece of work: item ``index``, its ``slot`` (``item``, ``part 2/5``, ``reduce
    1.0``) and its request: identical requests of different items (or parts) are different work."""
    return hashlib.sha256(f"{index}\x1f{slot}\x1f{request_hash}".encode()).hexdigest()


def _checksum(record: dict[str, Any]) -> str:
    content = {k: v for k, v in record.items() if k != "checksum"}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def seal(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` with the checksum of its content (what ``record_problem`` checks on reading)."""
    return {**record, "checksum": _checksum(record)}


def sealed(record: dict[str, Any]) -> bool:
    """Whether the record's content matches its checksum."""
    return record.get("checksum") == _checksum(record)


def record_problem(record: dict[str, Any], *, index: int, slot: str, request_hash: str) -> str | None:
    """Why ``record`` is not the record of this work (None: it is)."""
    if not sealed(record):
        return "its checksum does not match its content (edited, or written by another version)"
    if record.get("index") != index:
        return f"it is the record of item {record.get('index')!r}"
    if record.get("slot") != slot:
        return f"it is the record of {record.get('slot')!r}, not {slot!r}"
    if record.get("request") != request_hash:
        return "it is the record of another request"
    if record.get("key") != work_key(index, slot, request_hash):
        return "its key is not the key of its work"
    return None


def sealed_line(record: dict[str, Any]) -> bytes:
    """``encode_record(seal(record))`` with one JSON encoding, not two: the canonical content the
    checksum is taken of, with the checksum put last (the same record once read; keys sorted)."""
    content = {k: v for k, v in record.items() if k != "checksum"} if "checksum" in record else record
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    checksum = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
    comma = "," if len(canonical) > 2 else ""
    return (f'{canonical[:-1]}{comma}"checksum":"{checksum}"}}\n').encode()


def encode_record(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def decode_record(line: bytes) -> dict[str, Any] | None:
    """A record from one line, or None for a torn or foreign line."""
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("key"), str) else None


class Journal:
    """Records of finished work by request key; this base (``checkpoint=False``) keeps none."""

    location = "none"

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.loaded = 0  # records found from earlier tries
        self.torn = 0  # unreadable lines/objects skipped (a write cut by a kill)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.records.get(key)

    def take(self, key: str) -> dict[str, Any] | None:
        """The record of ``key`` from an earlier try, let go of here: each piece of work is looked
        up once, so a resumed batch holds fewer records the further it gets."""
        return self.records.pop(key, None)

    async def put(self, record: dict[str, Any]) -> None:
        """Record one finished piece of work (sealed with its checksum); durable once this returns.

        Not kept in memory: only earlier tries' records are ever looked up."""

    def close(self) -> None:
        """Release files; the records stay readable."""

    def _load(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            for line in chunk.splitlines(keepends=True):
                record = decode_record(line) if line.endswith(b"\n") else None
                if record is None:
                    self.torn += 1 if line.strip() else 0
                    continue
                known = self.records.get(record["key"])
                if known is not None and sealed(known) and not sealed(record):
                    continue  # a bad copy never hides a good record under the same key
                self.records[record["key"]] = record
        self.loaded = len(self.records)


class LocalJournal(Journal):
    """Append-only JSON-lines segments in a local folder, one segment per writer (try)."""

    def __init__(self, folder: str, writer: str) -> None:
        super().__init__()
        directory = os.path.join(folder, JOURNAL_DIR)
        os.makedirs(directory, exist_ok=True)
        self.location = directory
        chunks = []
        for name in sorted(os.listdir(directory)):
            if name.endswith(".jsonl"):
                with open(os.path.join(directory, name), "rb") as segment:
                    chunks.append(segment.read())
        self._load(chunks)
        self.path = os.path.join(directory, f"{writer}.jsonl")
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    async def put(self, record: dict[str, Any]) -> None:
        data = sealed_line(record)
        if self._fd is None:
            raise RuntimeError("the journal is closed")
        view = memoryview(data)
        while view:  # a local append is one write() in practice; loop for the rule's sake
            view = view[os.write(self._fd, view) :]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ObjectJournal(Journal):
    """One object per record (object stores cannot append); read back in one concurrent fetch."""

    def __init__(self, folder: ObjectStoragePath) -> None:
        super().__init__()
        self.folder = folder / OBJECTS_DIR
        self.location = str(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        paths = [p.path for p in self.folder.iterdir() if p.name.endswith(".json")]
        found = self.folder.fs.cat(paths, on_error="omit") if paths else {}
        self._load([data if data.endswith(b"\n") else data + b"\n" for data in found.values()])

    async def put(self, record: dict[str, Any]) -> None:
        record = seal(record)
        target = self.folder / f"{record['key']}.json"
        await asyncio.to_thread(target.write_bytes, encode_record(record))


def open_journal(folder: ObjectStoragePath, writer: str) -> Journal:
    """The journal in ``folder``: append-only segments when local, one object per record otherwise."""
    from airflow_provider_qwen.storage import local_path

    local = local_path(folder)
    journal: Journal = LocalJournal(local, writer) if local is not None else ObjectJournal(folder)
    if journal.torn:
        log.warning("checkpoint: skipped %d torn record(s) in %s", journal.torn, journal.location)
    return journal


def open_task_journal(where: str, folder: Callable[[], ObjectStoragePath], try_number: int | None) -> Journal:
    """``open_journal`` for one try of a task (its own writer name), or a clear error naming the fix."""
    from airflow_provider_qwen.client.errors import InvalidRequestError

    writer = f"try{try_number}-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        return open_journal(folder(), writer)
    except OSError as exc:
        raise InvalidRequestError(
            f"{where}: cannot keep checkpoints under [qwen] storage_base ({exc}); point "
            "AIRFLOW__QWEN__STORAGE_BASE at a writable folder or bucket, or pass checkpoint=False"
        ) from exc
