"""Facts a prompt states, for plausible structured answers: the enum member it names, its e-mail
addresses, its numbers, the strings that match a field's pattern; and the numeric helpers that
check a found number against a schema's bounds.

A forced tool call or a ``json_schema`` answer then reads like the prompt (``"email":
"ana@example.com"`` when the prompt gives that address, ``"severity": "high"`` when it says high),
so a demo makes sense. Everything here is deterministic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
NUMBER = re.compile(r"(?<![\w.,:-])-?\d+(?:,\d{3})*(?:\.\d+)?(?![\w@:-]|\.\d)")
EMAIL_NAME = re.compile(r"e-?mail", re.IGNORECASE)
NEAR = 40  # characters between a field's name and the number that follows it


def named_option(options: Sequence[Any], text: str) -> Any:
    """The string member of ``options`` the text names (as a word, any case), else None.

    Several named: the one named last, since prompts put the instructions (which often list every
    member) before the document.
    """
    best, where = None, -1
    lowered = text.lower()
    for option in options:
        if not isinstance(option, str) or not option.strip():
            continue
        words = "[ _-]".join(re.escape(w) for w in re.split(r"[\s_-]+", option.lower().strip()))
        found = [m.start() for m in re.finditer(rf"(?<!\w){words}(?!\w)", lowered)]
        if found and found[-1] > where:
            best, where = option, found[-1]
    return best


def emails(text: str) -> list[str]:
    """The e-mail addresses in ``text``, in order, each once."""
    return list(dict.fromkeys(m.group(0).rstrip(".") for m in EMAIL.finditer(text)))


def is_email_field(name: str, schema_format: Any) -> bool:
    return schema_format in {"email", "idn-email"} or bool(EMAIL_NAME.search(name))


def pattern_matches(pattern: str, text: str) -> list[str]:
    """Substrings of ``text`` that match ``pattern`` as a whole (anchors taken off to search)."""
    try:
        whole = re.compile(pattern)
        loose = re.compile(pattern.removeprefix("^").removesuffix("$"))
    except re.error:
        return []
    found = (m.group(0) for m in loose.finditer(text) if m.group(0))
    return list(dict.fromkeys(s for s in found if whole.search(s)))


def numbers(text: str, name: str = "") -> list[float | int]:
    """The numbers in ``text``: first those right after the field's ``name``, then all in order."""

    def value(raw: str) -> float | int:
        raw = raw.replace(",", "")  # thousands separators
        return float(raw) if "." in raw else int(raw)

    everything = [value(m.group(0)) for m in NUMBER.finditer(text)]
    near: list[float | int] = []
    words = [w for w in re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", name) if len(w) > 1]
    labels = [r"[\s_-]*".join(re.escape(w) for w in words)] if words else []
    labels += [re.escape(w) for w in sorted(words, key=len, reverse=True) if len(words) > 1]
    for label in labels:
        pattern = rf"(?i)(?<!\w){label}\w{{0,3}}[^\w\n]{{1,{NEAR}}}?({NUMBER.pattern})"
        near += [value(match.group(1)) for match in re.finditer(pattern, text)]
    return list(dict.fromkeys([*near, *everything]))


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_multiple(value: float, step: float) -> bool:
    """``value`` is a multiple of ``step`` the way jsonschema checks it (float quotient is integral)."""
    if isinstance(step, float):
        quotient = value / step
        return int(quotient) == quotient
    return value % step == 0


def inside(value: float, low: float | None, high: float | None, open_ends: tuple[bool, bool]) -> bool:
    above = low is None or value > low or (not open_ends[0] and value == low)
    below = high is None or value < high or (not open_ends[1] and value == high)
    return above and below


def multiple_in(
    value: float, step: float, low: float, high: float, open_ends: tuple[bool, bool] = (False, False)
) -> Any:
    """A multiple of ``step`` near ``value`` inside [low, high] (open ends excluded)."""
    k = round(value / step)
    whole = [float(n) for n in range(math.ceil(low), math.floor(high) + 1)][:50]
    for number in [
        k * step,
        (k + 1) * step,
        (k - 1) * step,
        *(round(k * step, p) for p in range(12)),
        *whole,
    ]:
        if inside(number, low, high, open_ends) and is_multiple(number, step):
            return int(number) if float(number).is_integer() else number
    return k * step
