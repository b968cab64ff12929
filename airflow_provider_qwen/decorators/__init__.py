"""The Qwen TaskFlow decorators (``@task.qwen``, ``@task.qwen_tool_call``, ``@task.qwen_batch``,
``@task.qwen_agent``), found by Airflow through the provider info; also importable from here.

Imported lazily, so that a DAG file using one decorator loads only its operator.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.decorators.base import ReturnedValueError
    from airflow_provider_qwen.decorators.qwen import (
        qwen_agent_task,
        qwen_batch_task,
        qwen_task,
        qwen_tool_call_task,
    )

_EXPORTS = {
    "qwen_task": "airflow_provider_qwen.decorators.qwen",
    "qwen_tool_call_task": "airflow_provider_qwen.decorators.qwen",
    "qwen_batch_task": "airflow_provider_qwen.decorators.qwen",
    "qwen_agent_task": "airflow_provider_qwen.decorators.qwen",
    "ReturnedValueError": "airflow_provider_qwen.decorators.base",
}

__all__ = ["ReturnedValueError", "qwen_agent_task", "qwen_batch_task", "qwen_task", "qwen_tool_call_task"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
