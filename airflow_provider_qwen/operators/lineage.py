"""OpenLineage facets of the Qwen operators: what a try called, spent and read or wrote.

The OpenLineage provider calls ``get_openlineage_facets_on_start`` after the task's fields are
rendered, and ``get_openlineage_facets_on_complete`` / ``_on_failure`` in the task process after
``execute``; ``finish_cost`` has then set ``qwen_cost_record`` (the task's cost over its tries) and
``qwen_inference_ids`` (this try's first ids). The run facet ``qwen`` carries this try's model,
requests, tokens, credits, USD (and whether estimated) and inference ids; a batch over files adds
its input and results files as datasets. A try that failed before it was metered (a template that
did not render) reports a ``qwen`` facet of zeros: it sent nothing.

OpenLineage is imported only here, when the provider asks: ``import airflow_provider_qwen.operators``
stays light, and the provider stays optional. No secret reaches a facet or a dataset name: URL
credentials, connection ids, query strings and fragments are left out of names; an inference id the
server sent that is not id-shaped, or holds the connection's key, is not listed; and the facet's
text fields go through Airflow's secrets masker like the rest of the event.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_qwen import SOURCE_URL, __version__

INFERENCE_IDS_IN_FACET = 100  # a 100,000-item batch names its first ids and counts the rest
FACET_NAME = "qwen"
SCHEMA_URL = f"{SOURCE_URL}/blob/main/docs/lineage.md#the-qwen-run-facet"
PRODUCER = f"{SOURCE_URL}/tree/{__version__}"
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

log = logging.getLogger(__name__)


class QwenLineageMixin:
    """``get_openlineage_facets_on_start`` / ``_on_complete`` / ``_on_failure`` for every Qwen operator."""

    qwen_cost_record: Any = None
    qwen_inference_ids: list[str] = []
    qwen_ids_not_kept = 0  # requests made before a pause, in another process: their ids are gone

    def get_openlineage_facets_on_start(self) -> Any:
        """The batch's files as soon as the fields are rendered (no figures yet)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = _safely(lambda: lineage_datasets(self), ([], []), "datasets")
        return OperatorLineage(inputs=inputs, outputs=outputs)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        return self._qwen_lineage(task_instance)

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        return self._qwen_lineage(task_instance)

    def _qwen_lineage(self, task_instance: Any) -> Any:
        from airflow.providers.openlineage.extractors import OperatorLineage

        inputs, outputs = _safely(lambda: lineage_datasets(self), ([], []), "datasets")
        facet = _safely(lambda: self._qwen_facet(task_instance), None, "the qwen run facet")
        return OperatorLineage(
            inputs=inputs, outputs=outputs, run_facets={} if facet is None else {FACET_NAME: facet}
        )

    def _qwen_facet(self, task_instance: Any) -> Any:
        record = self.qwen_cost_record
        ids = list(self.qwen_inference_ids or [])
        if record is None:  # failed before it was metered: no model call was made
            return unmetered_facet(_text(getattr(self, "model", None)), _int(task_instance, "try_number"))
        not_kept = self.qwen_ids_not_kept
        return qwen_run_facet(record, ids, not_kept=not_kept, scrub=_scrubber(self) if ids else None)


def _safely(build: Any, fallback: Any, what: str) -> Any:
    """One part of the lineage; a failure costs that part only, never the event or the task."""
    try:
        return build()
    except Exception:
        log.warning("could not build the OpenLineage %s of this Qwen task", what, exc_info=True)
        return fallback


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and "{{" not in value else None


def _int(obj: Any, name: str) -> int | None:
    value = getattr(obj, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _scrubber(operator: Any) -> Any:
    """What cuts the connection's key from text the server sent back (``None`` when no key is known)."""
    hook = vars(operator).get("hook")  # the try's hook, if it made one; never fetch a connection here
    config = getattr(hook, "_config", None)
    key = getattr(config, "api_key", None)
    if not isinstance(key, str) or not key:
        return None
    from airflow_provider_qwen.client.scrub import Scrubber

    return Scrubber(key)


# -- datasets -----------------------------------------------------------------------------------


def lineage_datasets(operator: Any) -> tuple[list[Any], list[Any]]:
    """Input and output datasets of a batch over files (``items`` a path or URL, ``results_path``),
    read from the rendered attributes."""
    from openlineage.client.event_v2 import InputDataset, OutputDataset

    inputs, outputs = [], []
    items = getattr(operator, "items", None)
    if isinstance(items, Mapping):  # a shard of shard_input: its input's URL
        from airflow_provider_qwen.batch.sources import SHARD_MARKER

        items = items.get("url") if SHARD_MARKER in items else None
    if _is_location(items) and (named := dataset_name(items)) is not None:
        inputs.append(InputDataset(namespace=named[0], name=named[1]))
    results = getattr(operator, "results_path", None)
    if _is_location(results, relative=True) and (named := dataset_name(results)) is not None:
        outputs.append(OutputDataset(namespace=named[0], name=named[1]))
    return inputs, outputs


def _is_location(value: Any, *, relative: bool = False) -> bool:
    """A path or URL (``items`` must be absolute or a URL to be one: see ``batch.sources``)."""
    if isinstance(value, os.PathLike) or any(c.__name__ == "ObjectStoragePath" for c in type(value).__mro__):
        return True
    if not isinstance(value, str):
        return False
    text = value.strip()
    return bool(text) and (relative or bool(_URL.match(text)) or text.startswith("/"))


def dataset_name(location: Any) -> tuple[str, str] | None:
    """OpenLineage's (namespace, name) for a path or URL: ``("file", "/abs/path")``,
    ``("s3://bucket", "key")``, ``("hdfs://host:8020", "path")``. Credentials and connection ids
    (``user:password@``, ``conn_id@``), query strings (a pre-signed URL's signature) and fragments
    are left out; a folder's trailing ``/`` too. ``None`` for what names no place (a template)."""
    from airflow_provider_qwen.client.scrub import scrub_generic

    text = str(location).strip()
    if not text or "{{" in text or "{%" in text:
        return None
    if not _URL.match(text):
        return "file", _folder(os.path.abspath(os.path.expanduser(text)))  # abspath normalises
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    host = parts.netloc.rpartition("@")[2]  # the last @ ends the userinfo (a password may hold one)
    path = scrub_generic(parts.path)
    if scheme in ("file", "local"):
        local = host if host not in ("", "localhost") else ""
        return (f"file://{local}" if local else "file"), _folder(os.path.normpath(path or "/"))
    if not host or not re.fullmatch(r"[A-Za-z0-9._~\-\[\]:]+", host):
        return None
    return f"{scheme}://{host}", _folder(path.lstrip("/")) or "/"


def _folder(path: str) -> str:
    return path.rstrip("/") or path[:1]


# -- the run facet ------------------------------------------------------------------------------


def qwen_run_facet(record: Any, inference_ids: list[str], *, not_kept: int = 0, scrub: Any = None) -> Any:
    """The ``qwen`` facet of this try, from the task's ``qwen_cost`` record (its last try is this one).

    ``inference_ids`` are this try's first ids as the ledger kept them (at most 1,000): the first
    ``INFERENCE_IDS_IN_FACET`` that look like ids and hold no secret (``scrub`` cuts the key) are
    listed; ``inferenceIdsNotListed`` counts the others, the ``not_kept`` requests made before a
    pause (in another process), and past the ledger's 1,000 the rest of the try's requests (an
    estimate from there on: a failed request has an id but is not a paid request).
    """
    from airflow_provider_qwen.cost.ledger import INFERENCE_IDS_KEPT

    this_try = record.each_try()[-1]
    fields = this_try.totals.fields()
    listed = [i for i in inference_ids if _is_id(i, scrub)][:INFERENCE_IDS_IN_FACET]
    known = len(inference_ids) + max(not_kept, 0)
    if known >= INFERENCE_IDS_KEPT:
        known = max(known, int(fields["requests"]))
    number = this_try.try_number if this_try.try_number is not None else record.try_number
    return facet_class()(
        model=this_try.model or record.model or None,
        requests=fields["requests"],
        promptTokens=fields["prompt_tokens"],
        completionTokens=fields["completion_tokens"],
        reasoningTokens=fields["reasoning_tokens"],
        totalTokens=fields["total_tokens"],
        creditsUsed=fields["credits_used"],
        usdSpent=fields["usd_spent"],
        usdUnsettled=fields["usd_unsettled"],
        estimated=fields["estimated"],
        tryNumber=number,
        inferenceIds=listed,
        inferenceIdsNotListed=known - len(listed),
        taskRequests=record.totals.requests,
        taskUsdSpent=record.totals.fields()["usd_spent"],
        taskEstimated=bool(record.totals.cost.estimated),
        producer=PRODUCER,
    )


def unmetered_facet(model: str | None, try_number: int | None) -> Any:
    """The facet of a try that failed before it was metered: it sent nothing, spent nothing. The
    task's earlier tries are not known here (``taskRequests`` / ``taskUsdSpent`` are null)."""
    return facet_class()(
        model=model,
        requests=0,
        promptTokens=0,
        completionTokens=0,
        reasoningTokens=0,
        totalTokens=0,
        creditsUsed=0,
        usdSpent="0",
        usdUnsettled="0",
        estimated=False,
        tryNumber=try_number,
        inferenceIds=[],
        inferenceIdsNotListed=0,
        taskRequests=None,
        taskUsdSpent=None,
        taskEstimated=None,
        producer=PRODUCER,
    )


def _is_id(value: Any, scrub: Any) -> bool:
    from airflow_provider_qwen.client.scrub import scrub_generic, server_id

    return server_id(value, scrub or scrub_generic) is not None


@cache
def facet_class() -> type:
    """``QwenRunFacet``, defined on first use (the OpenLineage client is an optional dependency);
    also importable as ``airflow_provider_qwen.operators.lineage.QwenRunFacet``."""
    import attrs
    from openlineage.client.facet_v2 import RunFacet

    @attrs.define
    class QwenRunFacet(RunFacet):
        """What one task try of a Qwen operator called and spent (USD as exact decimal strings)."""

        model: str | None
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
        inferenceIds: list[str]  # masked like the event's other text (a hostile server's echo)
        inferenceIdsNotListed: int
        taskRequests: int | None  # every try of the task so far
        taskUsdSpent: str | None
        taskEstimated: bool | None

        # our own decimal strings: never taken for a secret by the masker
        _additional_skip_redact = ["usdSpent", "usdUnsettled", "taskUsdSpent"]

        @staticmethod
        def _get_schema() -> str:
            return SCHEMA_URL

    QwenRunFacet.__qualname__ = "QwenRunFacet"  # picklable as this module's attribute
    QwenRunFacet.__module__ = __name__
    return QwenRunFacet


def __getattr__(name: str) -> Any:
    if name == "QwenRunFacet":
        return facet_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
