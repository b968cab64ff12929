"""Where the templates of an operator's fields are, and what their values rendered to (used to name
the expression that left a message without text)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

PROMPT_TEMPLATE_EXT = (".j2", ".jinja2", ".prompt")
ABSENT = object()  # no value at that path


def is_templated(value: Any) -> bool:
    """Whether a (possibly nested) value still holds Jinja markup or a template file name."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value or value.endswith(PROMPT_TEMPLATE_EXT)
    if isinstance(value, Mapping):
        return any(is_templated(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_templated(v) for v in value)
    return False


def template_leaves(value: Any, path: tuple[Any, ...]) -> Iterator[tuple[tuple[Any, ...], str]]:
    """Every template string in a (possibly nested) field value, with its path."""
    if isinstance(value, str):
        if is_templated(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from template_leaves(item, (*path, key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from template_leaves(item, (*path, index))


def at(value: Any, path: Sequence[Any]) -> Any:
    for part in path:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return ABSENT
    return value


def expressions(env: Any, source: str) -> list[str]:
    """The source text of each ``{{ ... }}`` of a template, in order."""
    found: list[str] = []
    current: list[str] | None = None
    for _, kind, text in env.lex(source):
        if kind == "variable_begin":
            current = []
        elif kind == "variable_end":
            found.append("".join(current or ()).strip())
            current = None
        elif current is not None:
            current.append(text)
    return found
