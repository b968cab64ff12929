"""What the built-in tools share: the refusal error the model reads, checks of construction
arguments, and JSON results that stay valid when they must shrink to fit a byte budget."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import uuid
from collections.abc import Callable
from typing import Any

from airflow_provider_qwen.agent.bounds import bound_text

MIN_RESULT_BYTES = 256


class ToolRefusedError(ValueError):
    """A built-in tool refused a call (a write on a read-only connection, a path out of its folder, a
    task it may not read). Its message is written for the model, which gets it as the tool result."""


def check_name(value: str, field: str = "name") -> str:
    """A non-empty string, or a ``ValueError`` naming ``field`` and the value."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}={value!r}: give a non-empty string")
    return value


def check_int(value: int, field: str, minimum: int) -> int:
    """An int of at least ``minimum``, or a ``ValueError`` naming ``field`` and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{field}={value!r}: give an integer of at least {minimum}")
    if value < minimum:
        raise ValueError(f"{field}={value!r} is out of range; allowed: {minimum} or more")
    return value


def check_max_bytes(value: int) -> int:
    """``max_bytes`` with room for the truncation note."""
    return check_int(value, "max_bytes", MIN_RESULT_BYTES)


def cell(value: Any) -> Any:
    """One value as JSON can carry it: numbers and text as they are, the rest as readable text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes of binary data>"
    if isinstance(value, list | tuple):
        return [cell(item) for item in value]
    if isinstance(value, dict):
        return {str(key): cell(item) for key, item in value.items()}
    return str(value)


def fit_json(render: Callable[[int, bool], dict[str, Any]], count: int, max_bytes: int) -> str:
    """JSON of ``render(count, False)`` if it fits ``max_bytes``; else of ``render(k, True)`` for the
    largest ``k`` that fits, so the model still gets valid JSON. When not even one item fits, the
    first one is cut by ``bound_text`` (the text ends with its truncation note)."""

    def dump(shown: int, cut: bool) -> str:
        return json.dumps(render(shown, cut), ensure_ascii=False)

    text = dump(count, False)
    if len(text.encode("utf-8")) <= max_bytes:
        return text
    low, high = 0, count - 1  # the largest k in [low, high] whose rendering fits
    while low < high:
        middle = (low + high + 1) // 2
        if len(dump(middle, True).encode("utf-8")) <= max_bytes:
            low = middle
        else:
            high = middle - 1
    if low == 0 and count > 0:
        return bound_text(dump(1, True), max_bytes)
    return bound_text(dump(low, True), max_bytes)
