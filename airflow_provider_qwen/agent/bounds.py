"""What goes back to the model from a tool, bounded in size with a note saying it was cut.

A tool result is JSON text (a ``str`` result is sent as it is). Past ``max_bytes`` (UTF-8) it is
cut at a character boundary and ends with a note the model can read, so it knows more exists.
"""

from __future__ import annotations

import json
import math
from typing import Any

DEFAULT_MAX_RESULT_BYTES = 20_000


def result_text(value: Any, max_bytes: int = DEFAULT_MAX_RESULT_BYTES) -> str:
    """``value`` as the text of a tool message: a str as is, anything else as JSON; bounded."""
    if isinstance(value, str):
        return bound_text(value, max_bytes)
    try:
        text = json.dumps(value, ensure_ascii=False, default=_fallback, allow_nan=False)
    except ValueError as exc:  # NaN or infinity: not JSON; sent as the strings JSON has for them
        if "Out of range float" not in str(exc):
            raise
        text = json.dumps(_finite(value), ensure_ascii=False, default=_fallback, allow_nan=False)
    return bound_text(text, max_bytes)


def _finite(value: Any) -> Any:
    """``value`` with every NaN and infinite float as text ("NaN", "Infinity", "-Infinity")."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def bound_text(text: str, max_bytes: int) -> str:
    """``text`` if it fits ``max_bytes`` (UTF-8), else its start and a note of what was cut (the
    note alone when ``max_bytes`` is smaller than the note)."""
    if max_bytes < 1:
        raise ValueError(f"max_bytes={max_bytes!r}: give a positive number of bytes")
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    note = f"\n[truncated: {{shown}} of {len(data)} bytes shown; ask for less to see the rest]"
    room = max(0, max_bytes - len(note.format(shown=max_bytes).encode("utf-8")))
    head = data[:room].decode("utf-8", errors="ignore")
    return head + note.format(shown=len(head.encode("utf-8")))


def _fallback(value: Any) -> Any:
    """JSON for what ``json`` cannot write: pydantic models, dates, decimals, sets, anything else."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    return str(value)
