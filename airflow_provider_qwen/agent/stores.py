"""Where an agent's journal lives between tries: Airflow's task state store, else a storage folder.

Both take what they need handed in (the state store accessor, a folder path), so nothing here
imports Airflow; ``storage.agent_journal(context)`` picks one for a task run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any, Protocol

STATE_KEY = "qwen_agent_journal"
EVENT_FILE = "event-{:06d}.json"
EVENT_NAME = re.compile(r"event-\d{6}\.json")


class JournalStoreError(RuntimeError):
    """The journal could not be read or written (the message says where and why)."""


class StateStoreJournal:
    """Events as one JSON list under ``qwen_agent_journal`` in the task state store (it follows
    the task instance across tries and workers; no shared storage needed)."""

    def __init__(self, accessor: Any) -> None:
        self.accessor = accessor
        self.where = "the task state store"

    def load(self) -> list[dict[str, Any]]:
        try:
            data = self.accessor.get(STATE_KEY, default=None)
        except Exception as exc:
            raise JournalStoreError(f"the agent journal in {self.where} cannot be read: {exc}") from None
        if data is None:
            return []
        if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
            raise JournalStoreError(f"{STATE_KEY} in {self.where} holds {type(data).__name__}, not events")
        return [dict(e) for e in data]

    def append(self, event: dict[str, Any]) -> None:
        events = self.load()
        events.append(json.loads(json.dumps(event)))
        try:
            self.accessor.set(STATE_KEY, events)
        except Exception as exc:
            raise JournalStoreError(f"the agent journal in {self.where} cannot be written: {exc}") from None


class Folder(Protocol):
    """What the journal needs of a folder (ObjectStoragePath and pathlib.Path both fit)."""

    def iterdir(self) -> Iterable[Any]: ...
    def __truediv__(self, other: str) -> Any: ...


class FolderJournal:
    """Events as numbered files ``event-000001.json`` in a storage folder: each append writes one
    new object, so nothing written is ever rewritten (object stores have no append). A torn last
    file (a kill mid-write on a local disk) is left out of ``load``; the next append replaces it."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.where = f"the storage folder {folder}"
        self._next: int | None = None  # the next event's number, once known

    def load(self) -> list[dict[str, Any]]:
        try:
            names = sorted(p.name for p in self.folder.iterdir() if EVENT_NAME.fullmatch(p.name))
        except FileNotFoundError:
            return []
        except Exception as exc:
            raise JournalStoreError(f"the agent journal in {self.where} cannot be read: {exc}") from None
        events: list[dict[str, Any]] = []
        for position, name in enumerate(names, start=1):
            if name != EVENT_FILE.format(position):
                raise JournalStoreError(f"the agent journal in {self.where} has a gap before {name}")
            try:
                event = json.loads((self.folder / name).read_text())
            except ValueError:
                if position == len(names):
                    break  # torn by a kill mid-write: the event was never durable
                raise JournalStoreError(f"{name} in {self.where} is not JSON") from None
            except Exception as exc:
                raise JournalStoreError(f"the agent journal in {self.where} cannot be read: {exc}") from None
            if not isinstance(event, dict):
                raise JournalStoreError(f"{name} in {self.where} holds {type(event).__name__}, not an event")
            events.append(event)
        self._next = len(events) + 1
        return events

    def append(self, event: dict[str, Any]) -> None:
        position = self._next or len(self.load()) + 1
        text = json.dumps(event, sort_keys=True)
        try:
            (self.folder / EVENT_FILE.format(position)).write_text(text)
        except Exception as exc:
            raise JournalStoreError(f"the agent journal in {self.where} cannot be written: {exc}") from None
        self._next = position + 1
