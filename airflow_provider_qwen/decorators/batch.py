"""``@task.qwen_batch``: QwenBatchOperator behind a Python function.

The function returns the items (or one input on storage); ``prompt=`` is the per-item template; the
task returns the results aligned with the items (or the manifest, with ``results_path=``). The
shape all four decorators share is in ``airflow_provider_qwen.decorators.base``.
"""

from __future__ import annotations

from airflow_provider_qwen.decorators.base import QwenDecoratedOperator, operator_fields
from airflow_provider_qwen.operators.batch import QwenBatchOperator

_FIELDS, _RENDERERS = operator_fields(QwenBatchOperator)


class QwenBatchDecoratedOperator(QwenDecoratedOperator, QwenBatchOperator):
    """QwenBatchOperator whose items come from the decorated function; every parameter of
    QwenBatchOperator applies."""

    custom_operator_name = "@task.qwen_batch"
    returns = "items"
    overwrite_rtif_after_execution = False  # the items may be many: not copied to the UI
    template_fields = _FIELDS
    template_fields_renderers = _RENDERERS
