"""OpenLineage facets of the Qwen operators: what a try called, spent and read or wrote.

The OpenLineage provider calls ``get_openlineage_facets_on_complete`` / ``_on_failure`` in the task
process after ``execute``; ``finish_cost`` has then set ``qwen_cost_record`` (the task's cost over
its tries) and ``qwen_inference_ids``. The run facet ``qwen`` carries this try's model, requests,
tokens, credits, USD (and whether estimated) and inference ids; a batch over files adds its input
and results files as datasets. OpenLineage is imported only here, when the provider asks.
"""

from __future__ import annotations

from functools import cache
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_qwen import SOURCE_URL, __version__

INFERENCE_IDS_IN_FACET = 100  # a 100,000-item batch names its first ids and counts the rest
FACET_NAME = "qwen"
SCHEMA_URL = f"{SOURCE_URL}/blob/main/docs/lineage.md#the-qwen-run-facet"


class QwenLineageMixin:
    """``get_openlineage_facets_on_complete`` / ``_on_failure`` for every Qwen operator."""

    qwen_cost_record: Any = None
    qwen_inference_ids: list[str] = []

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._qwen_lineage()

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._qwen_lineage()

    def _qwen_lineage(self) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = lineage_datasets(self)
        run_facets = {}
        if self.qwen_cost_record is not None:
            run_facets[FACET_NAME] = qwen_run_facet(self.qwen_cost_record, list(self.qwen_inference_ids))
        return OperatorLineage(inputs=inputs, outputs=outputs, run_facets=run_facets)


def lineage_datasets(operator: Any) -> tuple[list[Any], list[Any]]:
    """Input and output datasets of a batch over files (``items`` a path or URL, ``results_path``)."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    from airflow_provider_qwen.batch.sources import is_input_value

    inputs, outputs = [], []
    items = getattr(operator, "items", None)
    if items is not None and not isinstance(items, (list, tuple)) and is_input_value(items):
        if isinstance(items, dict):
            items = items.get("url")
        if (named := dataset_name(items)) is not None:
            inputs.append(InputDataset(namespace=named[0], name=named[1]))
    results = getattr(operator, "results_path", None)
    if results is not None and (named := dataset_name(results)) is not None:
        outputs.append(OutputDataset(namespace=named[0], name=named[1]))
    return inputs, outputs


def dataset_name(location: Any) -> tuple[str, str] | None:
    """OpenLineage's (namespace, name) for a path or URL: ``("file", "/abs/path")``,
    ``("s3://bucket", "key")``; credentials and connection ids in the URL are left out."""
    text = str(location).strip()
    if not text or "{{" in text:
        return None
    if "://" not in text:
        import os

        return "file", os.path.abspath(os.path.expanduser(text))
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""  # hostname drops user:password@ and the port
    if scheme in ("file", "local"):
        return "file", parts.path or "/"
    if not host:
        return None
    return f"{scheme}://{host}", parts.path.lstrip("/") or "/"


def qwen_run_facet(record: Any, inference_ids: list[str]) -> Any:
    """The ``qwen`` facet of this try, from the task's ``qwen_cost`` record (its last try is this one)."""
    this_try = record.each_try()[-1]
    fields = this_try.totals.fields()
    return facet_class()(
        model=this_try.model or record.model,
        requests=fields["requests"],
        promptTokens=fields["prompt_tokens"],
        completionTokens=fields["completion_tokens"],
        reasoningTokens=fields["reasoning_tokens"],
        totalTokens=fields["total_tokens"],
        creditsUsed=fields["credits_used"],
        usdSpent=fields["usd_spent"],
        usdUnsettled=fields["usd_unsettled"],
        estimated=fields["estimated"],
        tryNumber=this_try.try_number if this_try.try_number is not None else record.try_number,
        inferenceIds=inference_ids[:INFERENCE_IDS_IN_FACET],
        inferenceIdsNotListed=max(0, len(inference_ids) - INFERENCE_IDS_IN_FACET),
        taskRequests=record.totals.requests,
        taskUsdSpent=record.totals.fields()["usd_spent"],
        producer=f"{SOURCE_URL}/tree/{__version__}",
    )


@cache
def facet_class() -> type:
    """``QwenRunFacet``, defined on first use (the OpenLineage client is an optional dependency)."""
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class QwenRunFacet(RunFacet):
        """What one task try of a Qwen operator called and spent (USD as exact decimal strings)."""

        model: str
        requests: int
        promptTokens: int  # OpenLineage facets are camelCase
        completionTokens: int
        reasoningTokens: int
        totalTokens: int
        creditsUsed: int
        usdSpent: str
        usdUnsettled: str
        estimated: bool
        tryNumber: int | None
        inferenceIds: list[str]
        inferenceIdsNotListed: int
        taskRequests: int  # every try of the task so far
        taskUsdSpent: str

        _additional_skip_redact = ["model", "inferenceIds", "usdSpent", "usdUnsettled", "taskUsdSpent"]

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    return QwenRunFacet
