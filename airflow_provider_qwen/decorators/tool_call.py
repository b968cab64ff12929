"""``@task.qwen_tool_call``: QwenToolCallOperator behind a Python function.

The function returns the prompt or the messages; the task returns the validated value (with
``output_model=`` / ``output_schema=``) or the validated calls (with ``tools=``). The shape all
four decorators share is in ``airflow_provider_qwen.decorators.base``.
"""

from __future__ import annotations

from airflow_provider_qwen.decorators.base import QwenDecoratedOperator, operator_fields
from airflow_provider_qwen.operators.tool_call import QwenToolCallOperator

_FIELDS, _RENDERERS = operator_fields(QwenToolCallOperator)


class QwenToolCallDecoratedOperator(QwenDecoratedOperator, QwenToolCallOperator):
    """QwenToolCallOperator whose prompt or messages come from the decorated function; every parameter of
    QwenToolCallOperator applies."""

    custom_operator_name = "@task.qwen_tool_call"
    template_fields = _FIELDS
    template_fields_renderers = _RENDERERS
