"""The per-try cost journal: what each try of a task instance spent, for its later tries.

Airflow clears a task instance's XComs when a new try starts; the journal is how a later try (and
the cost report) still counts what earlier tries paid. Before a try sends under a budget it journals
a *claim* (the most it may have spent once its requests in flight are answered); at its end it
journals its record. A try killed before its end is counted at its last claim.

Where it lives (``storage.cost_journal``): Airflow's task state store when the context has one (it
follows the task instance across workers, no shared storage needed), else the task's storage folder.
Any failure to read or write raises ``JournalError``: a budget then refuses (fails closed).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.cost.record import CostRecord, CostTotals, Estimate

JOURNAL_FOLDER = "cost"
STATE_KEY = "qwen_cost_journal"


class JournalError(RuntimeError):
    """The journal could not be read or written (the message says where and why)."""


class JournalStore(Protocol):
    """Entries by try number: ``{"record": <qwen_cost of the try>, "claimed_usd": ..., "final": ...}``."""

    where: str

    def load(self) -> dict[int, Mapping[str, Any]]: ...

    def save(self, try_number: int, entry: Mapping[str, Any]) -> None: ...


class StateStore:
    """Entries in Airflow's task state store (``context["task_state_store"]``), under one key."""

    where = "the task state store"

    def __init__(self, accessor: Any) -> None:
        self.accessor = accessor

    def load(self) -> dict[int, Mapping[str, Any]]:
        data = self.accessor.get(STATE_KEY, default=None)
        if data is None:
            return {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{STATE_KEY} holds {type(data).__name__}, not a mapping of tries")
        return {_try(key): entry for key, entry in data.items()}

    def save(self, try_number: int, entry: Mapping[str, Any]) -> None:
        data = dict(self.accessor.get(STATE_KEY, default=None) or {})
        data[str(try_number)] = dict(entry)
        self.accessor.set(STATE_KEY, data)


class Folder(Protocol):
    """What the journal needs of a storage folder (ObjectStoragePath and pathlib.Path both fit)."""

    @property
    def name(self) -> str: ...
    def iterdir(self) -> Iterable[Any]: ...
    def __truediv__(self, other: str) -> Any: ...


class FolderStore:
    """Entries as ``try-<n>.json`` files in a storage folder."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self.where = f"the storage folder {folder}"

    def load(self) -> dict[int, Mapping[str, Any]]:
        entries: dict[int, Mapping[str, Any]] = {}
        try:
            paths = [p for p in self.folder.iterdir() if p.name.startswith("try-")]
        except FileNotFoundError:
            return {}
        for path in paths:
            number = _try(path.name.removeprefix("try-").removesuffix(".json"))
            data = json.loads(path.read_text())
            if not isinstance(data, Mapping):
                raise ValueError(f"{path.name} holds {type(data).__name__}, not a journal entry")
            entries[number] = data
        return entries

    def save(self, try_number: int, entry: Mapping[str, Any]) -> None:
        (self.folder / f"try-{try_number}.json").write_text(json.dumps(dict(entry), sort_keys=True))


class CostJournal:
    """The per-try records of one task instance; ``store=None``: no journal (outside a task run)."""

    def __init__(self, store: JournalStore | None) -> None:
        self.store = store

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def read(self) -> list[CostRecord]:
        """Every try journaled so far, in try order; a try without its final record counts at its
        last claim (as an unsettled estimate)."""
        if self.store is None:
            return []
        try:
            entries = self.store.load()
            return [_record(number, entries[number]) for number in sorted(entries)]
        except Exception as exc:
            raise JournalError(f"the Qwen cost journal in {self.store.where} cannot be read: {exc}") from None

    def claim(self, try_number: int | None, usd: Decimal, model: str | None) -> None:
        """Journal that this try may spend up to ``usd`` (before sending what it reserved)."""
        self._save(try_number, {"claimed_usd": usd_text(usd), "model": model or "", "final": False})

    def write(self, record: CostRecord) -> None:
        """Journal one try's final record (a rewrite of the same try replaces it)."""
        self._save(record.try_number, {"record": record.to_xcom(), "final": True})

    def _save(self, try_number: int | None, entry: Mapping[str, Any]) -> None:
        if self.store is None or try_number is None:
            return
        try:
            self.store.save(try_number, entry)
        except Exception as exc:
            raise JournalError(
                f"the Qwen cost journal in {self.store.where} cannot be written: {exc}"
            ) from None


def _try(key: Any) -> int:
    number = int(str(key))
    if number < 0:
        raise ValueError(f"try number {key!r} is negative")
    return number


def _record(number: int, entry: Mapping[str, Any]) -> CostRecord:
    """A try's final record; or, for a try that never finished, its last claim, all unsettled."""
    if entry.get("final") is True:
        data = entry.get("record")
        if not isinstance(data, Mapping):
            raise ValueError(f"try {number} has no record")
        for name in ("usd_spent", "usd_unsettled"):
            _amount(number, name, data.get(name, "0"))
        record = CostRecord.from_xcom(data)
        record.try_number = number
        return record
    claimed = _amount(number, "claimed_usd", entry.get("claimed_usd"))
    model = str(entry.get("model") or "")
    totals = CostTotals(estimates=[Estimate(None, model, kind="unfinished", unsettled_usd=claimed)])
    return CostRecord(model=model, totals=totals, try_number=number)


def _amount(number: int, name: str, value: Any) -> Decimal:
    """A journaled USD figure, strictly: unreadable, negative or not finite is a corrupt journal."""
    try:
        amount = Decimal(str(value)) if value is not None and not isinstance(value, bool) else None
    except InvalidOperation:
        amount = None
    if amount is None or not amount.is_finite() or amount < 0:
        raise ValueError(f"try {number} has an invalid {name}: {value!r}")
    return amount
