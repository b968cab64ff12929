"""The batch's ``items``: resolved from XComArgs without rendering, checked before any request."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_qwen.client.errors import InvalidRequestError


def resolve_items(value: Any, context: Mapping[str, Any]) -> Any:
    """XComArgs in ``items`` resolved to their values; everything else untouched (never rendered)."""
    from airflow_provider_qwen.batch.sources import is_storage_path

    if hasattr(value, "resolve") and not is_storage_path(value):  # an XComArg (a path has resolve too)
        return value.resolve(context)
    if isinstance(value, (list, tuple)):
        return [resolve_items(element, context) for element in value]
    return value


def items_list(where: str, items: Any) -> list[Any]:
    """Rendered ``items`` as a checked list; a string (a template's output) is parsed as a JSON list."""
    if isinstance(items, str):
        try:
            items = json.loads(items)
        except ValueError:
            raise InvalidRequestError(
                f"{where}: items rendered to a string that is not a JSON list ({items[:80]!r}); pass a list, "
                "an XComArg such as task.output, or use render_template_as_native_obj=True"
            ) from None
    return check_items(where, items)


def check_items(where: str, items: Any) -> list[Any]:
    """``items`` as a list of strings and dicts, or a clear error naming the first bad one."""
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence):
        raise InvalidRequestError(
            f"{where}: items must be a list of strings or dicts (a literal list, task.output or "
            f".expand(items=...)), got {type(items).__name__}"
        )
    listed: list[Any] = list(items)
    for index, item in enumerate(listed):
        if not isinstance(item, (str, Mapping)):
            raise InvalidRequestError(
                f"{where}: items[{index}] is a {type(item).__name__} ({item!r:.80}); each item must be a "
                "string or a dict"
            )
    return listed
