"""Qwen operators. Imported lazily so that DAG files importing this package stay cheap to parse."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.operators.agent import QwenAgentOperator
    from airflow_provider_qwen.operators.batch import QwenBatchOperator
    from airflow_provider_qwen.operators.chat import QwenChatOperator
    from airflow_provider_qwen.operators.cost_report import QwenCostReportOperator
    from airflow_provider_qwen.operators.tool_call import QwenToolCallOperator

_EXPORTS = {
    "QwenAgentOperator": "airflow_provider_qwen.operators.agent",
    "QwenChatOperator": "airflow_provider_qwen.operators.chat",
    "QwenToolCallOperator": "airflow_provider_qwen.operators.tool_call",
    "QwenBatchOperator": "airflow_provider_qwen.operators.batch",
    "QwenCostReportOperator": "airflow_provider_qwen.operators.cost_report",
}

__all__ = [
    "QwenAgentOperator",
    "QwenBatchOperator",
    "QwenChatOperator",
    "QwenCostReportOperator",
    "QwenToolCallOperator",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(module), name)
