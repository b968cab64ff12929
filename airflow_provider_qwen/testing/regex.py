"""One example string for a regular expression, for JSON Schema ``pattern`` (no library needed).

Walks the parse tree of Python's own ``re`` parser: literals, classes, alternations, groups,
repeats (at least once where allowed) and back-references; the result is checked with
``re.search`` (JSON Schema patterns are unanchored) and None is returned when it does not match.
"""

from __future__ import annotations

import re
from typing import Any

try:  # the regex parser behind ``re`` (renamed in 3.11)
    import re._parser as _sre
except ImportError:  # pragma: no cover - Python 3.10
    import sre_parse as _sre  # type: ignore[no-redef,unused-ignore]


_CATEGORY_CHARS = {"CATEGORY_DIGIT": "7", "CATEGORY_WORD": "a", "CATEGORY_SPACE": " "}
_CANDIDATES = "aA0_- .z9Z@/:"


def regex_example(pattern: str, *, seed: int = 0, low: int = 0, high: int | None = None) -> str | None:
    """A string that ``re.search(pattern, s)`` accepts (JSON Schema patterns are unanchored), or None."""
    try:
        parsed = _sre.parse(pattern)
    except (re.error, RecursionError, OverflowError):
        return None
    groups: dict[int, str] = {}
    for repeat_bias in (1, 0, 2):
        try:
            text = _emit(parsed, groups, repeat_bias, seed)
        except (ValueError, RecursionError):
            continue
        if re.search(pattern, text) and len(text) >= low and (high is None or len(text) <= high):
            return text
    return None


def _emit(tokens: Any, groups: dict[int, str], bias: int, seed: int) -> str:
    out = []
    for op, arg in tokens:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append(next(c for c in _CANDIDATES if ord(c) != arg))
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_in_class(arg, seed))
        elif name == "BRANCH":
            options = arg[1]
            out.append(_emit(options[seed % len(options)], groups, bias, seed))
        elif name == "SUBPATTERN":
            group, sub = arg[0], arg[-1]
            text = _emit(sub, groups, bias, seed)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name in {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}:
            low, high, sub = arg
            limit = high if high != _sre.MAXREPEAT else low + 3
            count = min(max(low, bias), limit)
            out.extend(_emit(sub, groups, bias, seed + i) for i in range(count))
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name in {"AT", "ASSERT", "ASSERT_NOT"}:
            continue
        else:
            raise ValueError(f"unsupported regex element {name}")
    return "".join(out)


def _in_class(items: Any, seed: int) -> str:
    negated = bool(items) and str(items[0][0]) == "NEGATE"
    allowed: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            allowed.append(chr(arg))
        elif name == "RANGE":
            start, end = arg
            allowed.append(chr(start + seed % (end - start + 1)))
        elif name == "CATEGORY":
            allowed.append(_CATEGORY_CHARS.get(str(arg), "a"))
    if not negated:
        if not allowed:
            raise ValueError("empty character class")
        return allowed[0]
    text = "".join(c for c in _CANDIDATES if not re.fullmatch(_class_source(items), c))
    if not text:
        raise ValueError("no candidate outside the negated class")
    return text[0]


def _class_source(items: Any) -> str:
    parts = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            parts.append(re.escape(chr(arg)))
        elif name == "RANGE":
            parts.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif name == "CATEGORY":
            parts.append(
                {"CATEGORY_DIGIT": r"\d", "CATEGORY_WORD": r"\w", "CATEGORY_SPACE": r"\s"}.get(str(arg), "")
            )
            parts.append(
                {"CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_NOT_WORD": r"\W", "CATEGORY_NOT_SPACE": r"\S"}.get(
                    str(arg), ""
                )
            )
    return "[" + "".join(parts) + "]"
