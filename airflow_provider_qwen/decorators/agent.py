"""``@task.qwen_agent``: QwenAgentOperator behind a Python function.

The function returns the prompt or the messages; the model calls ``tools=`` over several turns and
the task returns its final answer. The shape all four decorators share is in
``airflow_provider_qwen.decorators.base``.
"""

from __future__ import annotations

from airflow_provider_qwen.decorators.base import QwenDecoratedOperator, operator_fields
from airflow_provider_qwen.operators.agent import QwenAgentOperator

_FIELDS, _RENDERERS = operator_fields(QwenAgentOperator)


class QwenAgentDecoratedOperator(QwenDecoratedOperator, QwenAgentOperator):
    """QwenAgentOperator whose prompt or messages come from the decorated function; every parameter of
    QwenAgentOperator applies."""

    custom_operator_name = "@task.qwen_agent"
    template_fields = _FIELDS
    template_fields_renderers = _RENDERERS
