"""QwenBatchOperator: one templated prompt over many items, concurrently, in one task.

The operator is glue: it checks its arguments, compiles the prompt template once, and hands the
work to ``airflow_provider_qwen.batch`` (scheduler, checkpoints, chunking, progress). Past one
worker, shard the items with ``.expand(items=...)`` and cap the total with an Airflow pool; see
``dags/batch_summarize.py``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.batch.runner import BatchFailedError
from airflow_provider_qwen.client.pricing import usd_text
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.templates import PROMPT_TEMPLATE_EXT

if TYPE_CHECKING:
    from airflow.sdk import Context
    from pydantic import BaseModel

    from airflow_provider_qwen.batch.checkpoint import Journal
    from airflow_provider_qwen.batch.items import ItemPlan, Render
    from airflow_provider_qwen.batch.outputs import OutputStore
    from airflow_provider_qwen.batch.runner import BatchReport
    from airflow_provider_qwen.batch.streams import BatchStreams
    from airflow_provider_qwen.calls import Calls
    from airflow_provider_qwen.client.client import AsyncQwenClient
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.client.structured import ToolSpec

CHECKPOINT_DIR = "batch"


class BatchStoppedError(BatchFailedError, AirflowFailException):  # type: ignore[misc]
    """The batch stopped for a reason a retry would meet again (a spent budget): fail without retries."""


def _retryable(stop_error: BaseException | None) -> bool:
    return not isinstance(stop_error, AirflowFailException)


class QwenBatchOperator(QwenBaseOperator):
    """Run one prompt template over many items with bounded, adaptive concurrency.

    :param items: a list of strings or dicts (literal, ``task.output``, or ``.expand(items=...)``),
        or an input on storage read as a stream: the URL or ``ObjectStoragePath`` of a JSON-lines,
        CSV or Parquet file, of a folder or glob of text files (each file the item ``{"path",
        "text"}``), or one shard from ``airflow_provider_qwen.batch.shard_input``. Items are data:
        they are never rendered as templates (a URL string is, like any template field).
    :param input_format: ``jsonl``, ``csv``, ``parquet`` or ``text`` when the input's name does not say.
    :param results_path: write the results as items finish to this file (or, for a path ending in
        ``/``, to ``part-<map_index>.<format>`` in this folder), one row per item ``{"index", "status",
        "result", "error"}``; the task then returns a manifest (path, counts, cost), not the results,
        and the path is the task's Asset outlet (``batch.results_asset`` for a mapped task's outlets).
    :param results_format: ``jsonl`` (default) or ``parquet`` (needs the ``parquet`` extra).
    :param results_order: ``index`` (rows as they finish, default) or ``item`` (in item order).
    :param prompt: the per-item user message, inline Jinja or a ``.j2``/``.jinja2``/``.prompt`` file,
        rendered for each item with ``item``, ``index`` and ``chunk`` (None, or ``{"index", "count"}``
        for a part of a long item) plus the task context. It is not rendered by Airflow before ``execute``.
    :param output_model: a pydantic model (or ``output_schema``, a JSON schema dict): each result
        is a validated value from a forced tool call, repaired up to ``max_repairs`` times.
    :param max_concurrency: requests in flight at most; below it, the limits learned from 429s.
    :param requests_per_minute: optional cap on request starts.
    :param max_rate_limit_retries: 429s one request may meet before its item fails. A 429 whose
        Retry-After is over 120 s is not waited for: its item fails and no new item starts.
    :param max_failures: items allowed to fail (or not start) before the task fails: a count
        (int) or a fraction of the items (float in [0, 1]). Default 0: any failure fails the task,
        after every other item has finished.
    :param max_input_tokens: split an item whose request is over this many (exact) tokens into
        parts on paragraph/sentence boundaries, process each part, then combine the partial results
        with ``reduce_prompt`` (variables ``summaries``, ``instructions``, ``item``, ``index``).
        Default: the model's context window less the output cap and a margin; at most the window.
    :param chunk_field: the key holding the text to split when items are dicts.
    :param output_size_threshold: results larger than this many bytes go to storage and the result
        list holds a reference (``airflow_provider_qwen.batch.load_result`` reads it); None: never.
    :param checkpoint: journal finished items under ``[qwen] storage_base`` so a retry (or a rerun
        after the worker was killed) sends only the unfinished ones.
    :param deduplicate: send identical requests (identical items) once; the copies take the answer
        and are reported as ``deduplicated``. Default False: every item is its own request.
    :param fail_on_truncation: fail an item whose answer was cut at the token limit.
    :param progress_interval: seconds between progress lines in the task log.

    Returns the results aligned with ``items`` (None for an item that failed), or with
    ``results_path`` the manifest; pushes ``qwen_batch`` (counts, errors, limits learned) and
    ``qwen_cost`` (every request, exactly). See docs/batch.md.
    """

    template_fields: Sequence[str] = (
        "items",
        "results_path",
        "system_prompt",
        "messages",
        "model",
        "generation_params",
        "max_cost_usd",
        "dag_run_budget_usd",
    )
    template_fields_renderers = {
        **{k: v for k, v in QwenBaseOperator.template_fields_renderers.items() if k != "prompt"},
        "items": "json",
    }

    def __init__(
        self,
        *,
        items: Any,
        prompt: str,
        output_model: type[BaseModel] | None = None,
        output_schema: Mapping[str, Any] | None = None,
        tool_name: str | None = None,
        tool_description: str | None = None,
        max_repairs: int = 2,
        max_concurrency: int = 16,
        requests_per_minute: float | None = None,
        max_failures: int | float = 0,
        max_input_tokens: int | None = None,
        chunk_field: str = "text",
        reduce_prompt: str | None = None,
        output_size_threshold: int | None = 64 * 1024,
        checkpoint: bool = True,
        deduplicate: bool = False,
        fail_on_truncation: bool = False,
        max_rate_limit_retries: int = 8,
        progress_interval: float = 5.0,
        input_format: str | None = None,
        results_path: str | os.PathLike[str] | None = None,
        results_format: str | None = None,
        results_order: str = "index",
        **kwargs: Any,
    ) -> None:
        super().__init__(prompt=prompt, **kwargs)
        self.items = items
        self.input_format = input_format
        self.results_path = results_path
        self.results_format = results_format
        self.results_order = results_order
        self.output_model = output_model
        self.output_schema = output_schema
        self.tool_name = tool_name
        self.tool_description = tool_description
        self.max_repairs = max_repairs
        self.max_concurrency = max_concurrency
        self.requests_per_minute = requests_per_minute
        self.max_failures = max_failures
        self.max_input_tokens = max_input_tokens
        self.chunk_field = chunk_field
        self.reduce_prompt = reduce_prompt
        self.output_size_threshold = output_size_threshold
        self.checkpoint = checkpoint
        self.deduplicate = deduplicate
        self.fail_on_truncation = fail_on_truncation
        self.max_rate_limit_retries = max_rate_limit_retries
        self.progress_interval = progress_interval
        from airflow_provider_qwen.operators.batch_checks import check_arguments, input_limit
        from airflow_provider_qwen.operators.templates import is_templated

        check_arguments(self)
        self.validate_static_parameters()
        if results_path is not None and not is_templated(str(results_path)):
            from airflow_provider_qwen.batch.streams import results_asset

            self.outlets = [*self.outlets, results_asset(results_path)]
        if (
            self.max_input_tokens is not None
            and isinstance(self.model, str)
            and not is_templated([self.model, self.generation_params])
        ):  # over the model's window: say so when the DAG is parsed
            input_limit(
                self._where, self.max_input_tokens, self.build_request([{"role": "user", "content": "x"}])
            )

    @property
    def _where(self) -> str:
        return f"{type(self).__name__} {self.task_id!r}"

    # -- arguments ------------------------------------------------------------------------

    @cached_property
    def spec(self) -> ToolSpec | None:
        """The output tool when results are structured."""
        source = self.output_model if self.output_model is not None else self.output_schema
        if source is None:
            return None
        from airflow_provider_qwen.client.structured import tool_spec

        return tool_spec(source, name=self.tool_name, description=self.tool_description)

    def extra_request_params(self) -> dict[str, Any]:
        spec = self.spec
        return {} if spec is None else spec.forced_request_params(user_params=self.generation_params)

    # -- rendering ------------------------------------------------------------------------

    def render_template(
        self,
        content: Any,
        context: Context,
        jinja_env: Any = None,
        seen_oids: set[int] | None = None,
    ) -> Any:
        """Airflow renders template fields through here: ``items`` is data, so only its XComArgs are
        resolved; a string ``items`` is the DAG author's template and renders to the list."""
        if content is self.items and not isinstance(content, str):
            from airflow_provider_qwen.batch.inputs import resolve_items

            return resolve_items(content, context)
        return super().render_template(content, context, jinja_env, seen_oids)

    def _renderer(self, source: str, context: Context) -> Render:
        """Compile ``source`` once with the task's Jinja environment; render it per item, as a string."""
        env = self.get_template_env()
        template = (
            env.get_template(source) if source.endswith(PROMPT_TEMPLATE_EXT) else env.from_string(source)
        )
        base = dict(context)

        def render(variables: Mapping[str, Any]) -> str:
            return "".join(template.root_render_func(template.new_context({**base, **variables})))

        return render

    # -- execution ------------------------------------------------------------------------

    def run(self, context: Context, calls: Calls) -> Any:
        from airflow_provider_qwen.batch.checkpoint import Journal
        from airflow_provider_qwen.batch.event_loop import run_coroutine
        from airflow_provider_qwen.batch.items import DEFAULT_REDUCE_PROMPT, ItemPlan
        from airflow_provider_qwen.batch.outputs import OutputStore
        from airflow_provider_qwen.client.errors import InvalidRequestError
        from airflow_provider_qwen.operators.batch_checks import (
            BatchArgumentError,
            input_limit,
            probe_request,
        )
        from airflow_provider_qwen.storage import task_folder

        where = self._where
        streams = self._streams(context)  # what every item shares is checked once, not per item
        limit = input_limit(where, self.max_input_tokens, probe_request(self, where))
        try:
            self.check_rendered_text(context)  # a system prompt or history message left at None
        except InvalidRequestError as exc:
            raise BatchArgumentError(str(exc)) from None
        base_messages = self.history_messages()
        plan = ItemPlan(
            render_prompt=self._renderer(self.prompt or "", context),
            requests=self.request_builder(),
            base_messages=base_messages,
            spec=self.spec,
            max_repairs=self.max_repairs,
            max_input_tokens=limit,
            chunk_field=self.chunk_field,
            render_reduce=(
                self._renderer(self.reduce_prompt or DEFAULT_REDUCE_PROMPT, context) if limit else None
            ),
            deduplicate=self.deduplicate,
            base_chars=len(str(base_messages)),
        )
        if calls.cost.budget.limited:
            from airflow_provider_qwen.client import tokens

            tokens.load()  # budgets count every request: load the vocabulary before the loop, not on it
        journal = self._journal(context) if self.checkpoint and streams.feed.total != 0 else Journal()
        threshold = None if self.results_path is not None else self.output_size_threshold  # no XCom limit
        outputs = OutputStore(lambda: task_folder(context), threshold)
        self.log.info(
            "batch: %s, max_concurrency %d, max_input_tokens %s",
            streams.describe(),
            self.max_concurrency,
            limit,
        )
        try:
            streams.open(where)
        except InvalidRequestError as exc:
            raise BatchArgumentError(str(exc)) from None
        try:
            report, written = run_coroutine(lambda: self._arun(plan, journal, outputs, calls, streams))
        except BaseException:
            streams.abort()  # nothing half-written is left visible (the results file of a failed run)
            raise
        finally:
            journal.close()
        every_try = usd_text(calls.cost.record().usd_spent)
        returned = streams.returned(report, written, every_try, usd_text(calls.cost.spent_usd))
        if written is not None:
            self.log.info("batch results: %s (%d rows)", written["results_path"], written["rows"])
        self._finish(context, report, calls, outputs)
        return returned

    def _streams(self, context: Context) -> BatchStreams:
        """The feed of the rendered ``items`` and the sink of the results, or a ``BatchArgumentError``."""
        from airflow_provider_qwen.batch.streams import open_streams
        from airflow_provider_qwen.client.errors import InvalidRequestError
        from airflow_provider_qwen.operators.batch_checks import BatchArgumentError, check_files
        from airflow_provider_qwen.storage import task_ids

        try:
            check_files(self, self._where)  # results_path may have been a template
            return open_streams(
                self._where,
                self.items,
                input_format=self.input_format,
                results_path=self.results_path,
                results_format=self.results_format,
                results_order=self.results_order,
                task_id=task_ids(context)[2],
                map_index=task_ids(context)[3],
                structured=self.spec is not None,
            )
        except InvalidRequestError as exc:
            raise BatchArgumentError(str(exc)) from None

    def _journal(self, context: Context) -> Journal:
        """The checkpoint journal of this task instance, under ``[qwen] storage_base``."""
        from airflow_provider_qwen.batch.checkpoint import open_task_journal
        from airflow_provider_qwen.storage import task_folder

        try_number = getattr(context["ti"], "try_number", None)
        journal = open_task_journal(self._where, lambda: task_folder(context) / CHECKPOINT_DIR, try_number)
        self.log.info(
            "batch checkpoint: %s (%d finished record(s) from earlier tries, not sent again)",
            journal.location,
            journal.loaded,
        )
        return journal

    async def _arun(
        self, plan: ItemPlan, journal: Journal, outputs: OutputStore, calls: Calls, streams: BatchStreams
    ) -> tuple[BatchReport, dict[str, Any] | None]:
        from airflow_provider_qwen.batch.items import ItemProcessor
        from airflow_provider_qwen.batch.runner import BatchOptions, BatchRunner
        from airflow_provider_qwen.batch.sender import RateLimitedSender

        options = BatchOptions(max_concurrency=self.max_concurrency, progress_interval=self.progress_interval)
        self.attach_loop()  # a kill or a timeout cancels this task: every item unwinds as cancelled

        async with self.batch_client() as client:

            async def send_once(request: ChatRequest) -> ChatCompletion:
                runner.check_running()
                return await calls.asend(
                    request, client, fail_on_truncation=self.fail_on_truncation, warn=False
                )

            sender = RateLimitedSender(
                send_once,
                max_concurrency=self.max_concurrency,
                requests_per_minute=self.requests_per_minute,
                max_rate_limit_retries=self.max_rate_limit_retries,
            )
            runner = BatchRunner(sender, options=options, log=self.log, spent=lambda: calls.cost.spent_usd)
            processor = ItemProcessor(plan, sender.send, journal, outputs, log=self.log)
            ran = False
            try:
                report = await runner.run(processor.process, streams.feed, streams.sink)
                ran = True
            finally:
                written = await streams.close(failed=not ran)
            report.extra["checkpoint_rejected"] = processor.rejected
            return report, written

    def batch_client(self) -> AbstractAsyncContextManager[AsyncQwenClient]:
        """A client of the hook's connection for this batch alone, closed after it: 429s are not
        retried inside it but reach the limiter, and it has connections for ``max_concurrency``."""
        from airflow_provider_qwen.batch.retry_policy import LimiterRetryPolicy, connections_for

        return self.hook.async_client(
            retry=LimiterRetryPolicy(), max_connections=connections_for(self.max_concurrency)
        )

    def _finish(self, context: Context, report: BatchReport, calls: Calls, outputs: OutputStore) -> None:
        """Push ``qwen_batch``, log the summary, and fail when more than ``max_failures`` did not succeed."""
        from airflow_provider_qwen.batch.runner import BATCH_XCOM_KEY, allowed_failures

        record = report.record()
        record["stored_outputs"] = outputs.stored
        record["usd_spent"] = usd_text(calls.cost.spent_usd)  # this try; qwen_cost covers every try
        if self.do_xcom_push:
            context["ti"].xcom_push(key=BATCH_XCOM_KEY, value=record)
        self.log.info(
            "batch finished: %d/%d succeeded, %d failed, %d not started, %d chunked, %d deduplicated, %d "
            "resumed from the checkpoint (work paid by earlier tries: %s USD), %d request(s), %d "
            "rate-limited, in %.1f s; this try spent %s USD",
            report.succeeded,
            report.total,
            report.failed,
            report.unstarted,
            report.chunked,
            report.deduplicated,
            report.resumed,
            record["reused"]["usd_spent"],
            record["requests"],
            record["rate_limited"],
            record["elapsed_s"],
            record["usd_spent"],
        )
        not_ok = report.failed + report.unstarted
        allowed = allowed_failures(self.max_failures, report.total)
        if not_ok > allowed:
            first = "; ".join(f"item {e['index']}: {e['error']}" for e in report.errors[:3])
            stopped = f"; stopped early: {report.stopped}" if report.stopped else ""
            error = BatchFailedError if _retryable(report.stop_error) else BatchStoppedError
            raise error(
                f"{type(self).__name__} {self.task_id!r}: {not_ok} of {report.total} item(s) did not succeed "
                f"({report.failed} failed, {report.unstarted} not started{stopped}); max_failures="
                f"{self.max_failures!r} allows {allowed}. First errors: {first}. Finished items are "
                "checkpointed: a retry sends only the others."
            ) from report.stop_error  # what stopped the batch (a wrong key, a long 429) decides retries
