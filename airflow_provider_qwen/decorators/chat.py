"""``@task.qwen``: QwenChatOperator behind a Python function.

The function returns the prompt (a str) or a list of messages; the task returns the answer text.
The shape all four decorators share is in ``airflow_provider_qwen.decorators.base``.
"""

from __future__ import annotations

from airflow_provider_qwen.decorators.base import QwenDecoratedOperator, operator_fields
from airflow_provider_qwen.operators.chat import QwenChatOperator

_FIELDS, _RENDERERS = operator_fields(QwenChatOperator)


class QwenChatDecoratedOperator(QwenDecoratedOperator, QwenChatOperator):
    """QwenChatOperator whose prompt or messages come from the decorated function; every parameter of
    QwenChatOperator applies."""

    custom_operator_name = "@task.qwen"
    template_fields = _FIELDS
    template_fields_renderers = _RENDERERS
