"""The per-try cost journal: each try's ``qwen_cost`` record kept in the task's storage folder.

Airflow clears a task instance's XComs when a new try starts; the journal is how a later try (and
the cost report) still counts what earlier tries paid. The folder is any ObjectStoragePath-like
object (``iterdir``, ``/``, ``read_text``, ``write_text``); ``storage.cost_journal`` makes one.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, Protocol

from airflow_provider_qwen.cost.record import CostRecord

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "cost"


class Folder(Protocol):
    """What the journal needs of a storage folder (ObjectStoragePath and pathlib.Path both fit)."""

    @property
    def name(self) -> str: ...
    def iterdir(self) -> Iterable[Any]: ...
    def __truediv__(self, other: str) -> Any: ...


class CostJournal:
    """The per-try cost records of one task instance, as ``try-<n>.json`` files in ``folder``."""

    def __init__(self, folder: Folder | None) -> None:
        self.folder = folder

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def read(self) -> list[CostRecord]:
        """Every try recorded so far, in try order; unreadable files are skipped with a warning."""
        if self.folder is None:
            return []
        records = []
        try:
            paths = [
                p for p in self.folder.iterdir() if p.name.startswith("try-") and p.name.endswith(".json")
            ]
        except FileNotFoundError:
            return []
        except Exception as exc:  # storage down: count this try alone rather than fail the task
            log.warning("Qwen cost journal unreadable (%s): earlier tries will not be counted", exc)
            return []
        for path in paths:
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable Qwen cost journal entry %s: %s", path, exc)
                continue
            if isinstance(data, dict) and isinstance(data.get("try_number"), int):
                records.append(CostRecord.from_xcom(data))
        return sorted(records, key=lambda r: r.try_number or 0)

    def write(self, record: CostRecord) -> None:
        """Store one try's record (a rewrite of the same try replaces it)."""
        if self.folder is None or record.try_number is None:
            return
        path = self.folder / f"try-{record.try_number}.json"
        path.write_text(json.dumps(record.to_xcom(), sort_keys=True))
