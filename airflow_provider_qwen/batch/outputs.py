"""Large per-item results go to object storage; the XCom list carries a small reference instead.

A reference is ``{"stored_result": <url>, "conn_id": <id or None>, "bytes": <n>, "format": "text"|"json"}``;
``load_result(value)`` gives back the result whether it was stored or inline.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

STORED_KEY = "stored_result"
OUTPUTS_DIR = "outputs"
DEFAULT_THRESHOLD = 64 * 1024  # bytes of one result kept inline in XCom


def is_stored_result(value: Any) -> bool:
    """Whether an element of a batch result is a reference to a stored output."""
    return isinstance(value, dict) and isinstance(value.get(STORED_KEY), str) and "bytes" in value


def load_result(value: Any) -> Any:
    """The result itself: read back from storage when ``value`` is a reference, else ``value``."""
    if not is_stored_result(value):
        return value
    from airflow.sdk import ObjectStoragePath

    data = ObjectStoragePath(value[STORED_KEY], conn_id=value.get("conn_id")).read_bytes()
    text = data.decode("utf-8")
    return json.loads(text) if value.get("format") == "json" else text


def encoded(value: Any) -> tuple[bytes, str]:
    """A result as bytes to store and its format."""
    if isinstance(value, str):
        return value.encode("utf-8"), "text"
    return json.dumps(value, ensure_ascii=False).encode("utf-8"), "json"


class OutputStore:
    """Moves results over ``threshold`` bytes to ``<task folder>/outputs/`` (created on first use)."""

    def __init__(self, folder: Callable[[], ObjectStoragePath], threshold: int | None = DEFAULT_THRESHOLD):
        self._folder_factory = folder
        self._folder: ObjectStoragePath | None = None
        self.threshold = threshold
        self.stored = 0

    async def keep(self, index: int, key: str, value: Any) -> Any:
        """``value`` itself when small, else a reference to where it was written."""
        if self.threshold is None or value is None:
            return value
        if isinstance(value, str) and len(value) * 4 <= self.threshold:
            return value  # certainly small: skip encoding
        data, kind = encoded(value)
        if len(data) <= self.threshold:
            return value
        if self._folder is None:
            folder = self._folder_factory() / OUTPUTS_DIR
            await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
            self._folder = folder
        target = self._folder / f"{index}-{key[:16]}.{'txt' if kind == 'text' else 'json'}"
        await asyncio.to_thread(target.write_bytes, data)
        self.stored += 1
        return {STORED_KEY: str(target), "conn_id": target.conn_id, "bytes": len(data), "format": kind}
