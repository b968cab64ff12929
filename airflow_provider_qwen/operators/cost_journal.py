"""The per-try cost journal: each try's ``qwen_cost`` record kept under the task's storage folder.

Airflow clears a task instance's XComs when a new try starts; the journal is how a later try (and
the cost report) still counts what earlier tries paid.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

JOURNAL_FOLDER = "cost"


class CostJournal:
    """The per-try cost records of one task instance, as JSON files under its task folder."""

    def __init__(self, folder: ObjectStoragePath | None) -> None:
        self.folder = folder

    @classmethod
    def for_context(cls, context: Mapping[str, Any] | None) -> CostJournal:
        """The journal of the task instance running in ``context``; disabled outside a real task run."""
        ti = (context or {}).get("ti")
        if not all(isinstance(getattr(ti, name, None), str) for name in ("dag_id", "run_id", "task_id")):
            return cls(None)
        try:
            from airflow_provider_qwen.storage import task_folder

            folder = task_folder(context) / JOURNAL_FOLDER
            folder.mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            log.warning("Qwen cost journal unavailable (%s): earlier tries will not be counted", exc)
            return cls(None)
        return cls(folder)

    @property
    def enabled(self) -> bool:
        return self.folder is not None

    def read(self) -> list[dict[str, Any]]:
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
                record = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable Qwen cost journal entry %s: %s", path, exc)
                continue
            if isinstance(record, dict) and isinstance(record.get("try_number"), int):
                records.append(record)
        return sorted(records, key=lambda r: r["try_number"])

    def write(self, record: Mapping[str, Any]) -> None:
        """Store one try's record (``try-<n>.json``; a rewrite of the same try replaces it)."""
        if self.folder is None or not isinstance(record.get("try_number"), int):
            return
        path = self.folder / f"try-{record['try_number']}.json"
        path.write_text(json.dumps(dict(record), sort_keys=True))
