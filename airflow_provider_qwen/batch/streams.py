"""Where a batch's items come from and where its results go.

Items are a list (literal, XCom) or an input on storage (``sources``: a file, a folder, a glob, a
shard), read as a stream. Results are the aligned list returned through XCom, or with
``results_path`` a ``ResultsFile`` written as items finish; XCom then carries a manifest (where,
how many, what it cost) instead of the results.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.batch.feed import ItemFeed
from airflow_provider_qwen.batch.sources import GLOB, display_url
from airflow_provider_qwen.client.errors import InvalidRequestError

if TYPE_CHECKING:
    from airflow.sdk import Asset, ObjectStoragePath

    from airflow_provider_qwen.batch.results_file import ResultsFile
    from airflow_provider_qwen.batch.runner import BatchReport
    from airflow_provider_qwen.batch.sources import InputSource


class GrowingResults:
    """The results of an input whose length is known only once read (a file without results_path),
    aligned with its items from ``first`` (a shard's first global index)."""

    def __init__(self, first: int = 0, total: int | None = None) -> None:
        self.first = first
        self.results: list[Any] = [None] * (total or 0)

    async def add(
        self, index: int, status: str, result: Any, error: str | None, path: str | None = None
    ) -> None:
        place = index - self.first
        if place >= len(self.results):
            self.results.extend([None] * (place + 1 - len(self.results)))
        self.results[place] = result if status == "ok" else None


@dataclass
class BatchStreams:
    """The feed of items and the sink of results of one batch run."""

    feed: ItemFeed
    sink: GrowingResults | ResultsFile
    source: InputSource | None = None

    def describe(self) -> str:
        items = f"{self.feed.total} item(s)" if self.source is None else self.source.describe()
        path = getattr(self.sink, "path", None)
        return items if path is None else f"{items}, results to {display_url(str(path))}"

    def open(self, where: str) -> None:
        """Create the results file (not visible until closed); an unwritable path is refused here."""
        from airflow_provider_qwen.batch.results_file import ResultsFile

        if isinstance(self.sink, ResultsFile):
            try:
                self.sink.open_now()
            except OSError as exc:
                raise InvalidRequestError(
                    f"{where}: results_path {display_url(str(self.sink.path))!r} cannot be written "
                    f"({type(exc).__name__}: {exc}); give a writable file or folder"
                ) from None

    def abort(self) -> None:
        """Drop an unfinished results file (idempotent: nothing to do once closed)."""
        from airflow_provider_qwen.batch.results_file import ResultsFile

        if isinstance(self.sink, ResultsFile):
            self.sink.abort()

    async def close(self, failed: bool) -> dict[str, Any] | None:
        """Finish the results file (kept when the batch ran, even with failed items); its manifest part."""
        from airflow_provider_qwen.batch.results_file import ResultsFile

        if not isinstance(self.sink, ResultsFile):
            return None
        if failed:
            self.sink.abort()
            return None
        return await self.sink.close()

    def returned(
        self, report: BatchReport, written: dict[str, Any] | None, usd_spent: str, usd_this_try: str
    ) -> Any:
        """The task's return value: the results list, or the manifest of the results file (with the
        task instance's spend over every try, as ``qwen_cost`` has it, and this try's)."""
        if written is None:
            assert isinstance(self.sink, GrowingResults)
            return self.sink.results
        return {
            **written,
            "input": None if self.source is None else self.source.describe(),
            "total": report.total,
            "succeeded": report.succeeded,
            "failed": report.failed,
            "unstarted": report.unstarted,
            "usd_spent": usd_spent,
            "usd_spent_this_try": usd_this_try,
        }


def open_streams(
    where: str,
    items: Any,
    *,
    input_format: str | None,
    results_path: str | os.PathLike[str] | None,
    results_format: str | None,
    results_order: str,
    task_id: str,
    map_index: int,
    structured: bool,
) -> BatchStreams:
    """The feed and sink for rendered ``items`` and ``results_path``, checked: the input opened and
    its first item read (what cannot be read fails here, before any request); nothing is written."""
    from airflow_provider_qwen.batch.inputs import items_list
    from airflow_provider_qwen.batch.sources import is_input_value, iter_source, probe
    from airflow_provider_qwen.operators.batch_checks import check_input

    source: InputSource | None = None
    if is_input_value(items):
        source = check_input(where, items, input_format)
        if source.format == "parquet":
            needs_pyarrow(where, f"the Parquet input {display_url(source.url)}")
        probe(where, source)
        feed = ItemFeed(iter_source(source), total=source.total, threaded=True, label=item_path(source))
        first = source.start
    else:
        listed = items_list(where, items)
        feed = ItemFeed(enumerate(listed), total=len(listed), threaded=False)
        first = 0
    if results_path is None:
        return BatchStreams(feed, GrowingResults(first, feed.total), source)
    from airflow_provider_qwen.batch.results_file import ResultsFile

    base = results_base(results_path)
    format = results_format or _format_from_name(str(base))
    if format == "parquet":
        needs_pyarrow(where, "results_format='parquet'")
    path = base
    if is_folder(results_path, base):
        name = task_id if map_index < 0 else f"{task_id}-{map_index:05d}"
        path = base / f"{name}.{format}"
    elif map_index >= 0:
        raise InvalidRequestError(
            f"{where}: results_path={display_url(str(results_path))!r} names one file, but this task is "
            "mapped: every map index would write it. Give a folder (a path ending in '/'): each map "
            f"index writes {task_id}-<map_index>.{format} in it"
        )
    if source is not None:
        refuse_overlap(where, source, path)
    sink = ResultsFile(path, format=format, order=results_order, first_index=first, structured=structured)
    return BatchStreams(feed, sink, source)


def item_path(source: InputSource) -> Callable[[Any], str | None] | None:
    """For a folder or glob input, the file an item came from (kept in its results row)."""
    if source.format != "text":
        return None
    return lambda item: item.get("path") if isinstance(item, dict) else None


def refuse_overlap(where: str, source: InputSource, results: ObjectStoragePath) -> None:
    """Refuse results written over the input, or into the folder the input lists."""
    target = f"{results.protocol or 'file'}://{results.path}"
    input_path = source.path()
    read = f"{input_path.protocol or 'file'}://{input_path.path}".rstrip("/")
    if source.format == "text":
        wildcard = GLOB.search(read)
        root = read[: wildcard.start()].rsplit("/", 1)[0] if wildcard else read
        clash = target.startswith(root + "/")
    else:
        clash = target == read
    if clash:
        raise InvalidRequestError(
            f"{where}: results_path={display_url(target)!r} is "
            + ("inside the folder the input lists" if source.format == "text" else "the input file itself")
            + f" ({display_url(source.url)}): the batch would read or destroy its own results; "
            "write them elsewhere"
        )


def needs_pyarrow(where: str, what: str) -> None:
    """Refuse Parquet before any request when pyarrow is not installed."""
    import importlib.util

    if importlib.util.find_spec("pyarrow") is None:
        raise InvalidRequestError(
            f"{where}: {what} needs pyarrow, which is not installed: "
            "pip install 'airflow-provider-qwen[parquet]'"
        )


def results_base(results_path: str | os.PathLike[str]) -> ObjectStoragePath:
    from airflow.sdk import ObjectStoragePath

    if isinstance(results_path, ObjectStoragePath):
        return results_path
    text = str(results_path)
    if "://" not in text:  # a plain local path
        folder = text.endswith("/")
        text = "file://" + os.path.abspath(os.path.expanduser(text)) + ("/" if folder else "")
    return ObjectStoragePath(text)


def is_folder(results_path: str | os.PathLike[str], base: ObjectStoragePath) -> bool:
    """Whether ``results_path`` names a folder (ends in ``/``, or is one): each task of a mapped
    batch then writes ``part-<map_index>.<format>`` in it, an unmapped one ``results.<format>``."""
    return (isinstance(results_path, str) and results_path.endswith("/")) or base.is_dir()


def _format_from_name(name: str) -> str:
    return "parquet" if name.lower().endswith((".parquet", ".pq")) else "jsonl"


def results_asset(results_path: str | os.PathLike[str]) -> Asset:
    """The Airflow Asset of a batch's results (a file, or the folder of a mapped batch's parts):
    the operator's outlet, so a downstream DAG can be scheduled on it. Pass it in ``outlets`` of a
    mapped ``.partial(...)``, which Airflow cannot ask the operator for at parse time."""
    from airflow.sdk import Asset

    base = results_base(results_path)
    return Asset(f"{base.protocol or 'file'}://{base.path}")
