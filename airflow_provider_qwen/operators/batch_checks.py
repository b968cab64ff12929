"""QwenBatchOperator's arguments, checked once: at DAG parse time when static, and at execute (after
rendering) before any request, so a bad value fails the task once, without retries, instead of
failing every item with a retryable error.

Also where the default ``max_input_tokens`` comes from: the model's context window, less room for
the answer and a margin (the prompt around an item's text is measured per item when it is split).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client.errors import InvalidRequestError

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.operators.batch import QwenBatchOperator

MIN_INPUT_TOKENS = 256
OUTPUT_RESERVE = 32_768  # tokens kept for the answer when neither max_completion_tokens nor max_tokens is set
WINDOW_MARGIN = 0.02  # of the window, kept free for the chat template and counting slack
MIN_WINDOW_MARGIN = 1024


class BatchArgumentError(InvalidRequestError, AirflowFailException):  # type: ignore[misc]
    """A batch argument (a rendered template) is invalid: every item would fail the same way, and so
    would a retry. The task fails once, before any request, without Airflow retries."""


def check_arguments(op: QwenBatchOperator) -> None:
    """The batch's own arguments, at DAG parse time (those Airflow renders are checked at execute)."""
    where = f"{type(op).__name__} {op.task_id!r}"

    def bad(name: str, allowed: str) -> InvalidRequestError:
        return InvalidRequestError(f"{where}: {name}={getattr(op, name)!r} is not allowed: {allowed}")

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    def is_number(value: Any) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    from airflow_provider_qwen.operators.templates import PROMPT_TEMPLATE_EXT

    for name in ("prompt", "reduce_prompt"):
        value = getattr(op, name)
        if value is None and name == "reduce_prompt":
            continue
        if not isinstance(value, str) or not value.strip():
            raise bad(name, "a Jinja template string or a .j2/.jinja2/.prompt file name")
        if not value.endswith(PROMPT_TEMPLATE_EXT):
            check_syntax(where, name, value)
    if op.output_model is not None and op.output_schema is not None:
        raise InvalidRequestError(f"{where}: give output_model or output_schema, not both")
    if not is_int(op.max_concurrency) or not 1 <= op.max_concurrency <= 1000:
        raise bad("max_concurrency", "an integer from 1 to 1000")
    rpm = op.requests_per_minute
    if rpm is not None and (not is_number(rpm) or rpm <= 0):
        raise bad("requests_per_minute", "None or a number > 0")
    failures = op.max_failures
    if not (is_int(failures) and failures >= 0) and not (isinstance(failures, float) and 0 <= failures <= 1):
        raise bad("max_failures", "a count (int >= 0) or a fraction of the items (float from 0 to 1)")
    if op.max_input_tokens is not None and (
        not is_int(op.max_input_tokens) or op.max_input_tokens < MIN_INPUT_TOKENS
    ):
        raise bad("max_input_tokens", f"None or an integer >= {MIN_INPUT_TOKENS}")
    if not isinstance(op.chunk_field, str) or not op.chunk_field:
        raise bad("chunk_field", "the name of the text field of dict items")
    threshold = op.output_size_threshold
    if threshold is not None and (not is_int(threshold) or threshold < 0):
        raise bad("output_size_threshold", "None or a number of bytes >= 0")
    for name in ("max_repairs", "max_rate_limit_retries"):
        if not is_int(getattr(op, name)) or getattr(op, name) < 0:
            raise bad(name, "an integer >= 0")
    if not is_number(op.progress_interval) or op.progress_interval <= 0:
        raise bad("progress_interval", "a number of seconds > 0")
    for name in ("checkpoint", "deduplicate", "fail_on_truncation"):
        if not isinstance(getattr(op, name), bool):
            raise bad(name, "True or False")
    check_files(op, where)
    from airflow_provider_qwen.batch.sources import is_input_value
    from airflow_provider_qwen.operators.templates import is_templated

    if is_input_value(op.items):
        if not is_templated(op.items):
            check_input(where, op.items, op.input_format)  # the format can be told at parse time
    elif not isinstance(op.items, str) and not _is_xcom_arg(op.items):
        from airflow_provider_qwen.batch.inputs import check_items

        check_items(where, op.items)  # a literal list: check it at parse time


def check_files(op: QwenBatchOperator, where: str) -> None:
    """``results_path``, ``results_format``, ``results_order`` and ``input_format``."""

    from airflow_provider_qwen.batch.results_file import RESULT_FORMATS, RESULT_ORDERS
    from airflow_provider_qwen.batch.sources import FORMATS, is_storage_path

    path = op.results_path
    if path is not None and not isinstance(path, str) and not is_storage_path(path):
        raise InvalidRequestError(
            f"{where}: results_path={path!r} is not allowed: None, or a URL or ObjectStoragePath of a "
            "file or of a folder (ending in '/')"
        )
    choices = (
        ("results_format", RESULT_FORMATS),
        ("results_order", RESULT_ORDERS),
        ("input_format", FORMATS),
    )
    for name, allowed in choices:
        value = getattr(op, name)
        if value is not None and value not in allowed:
            raise InvalidRequestError(
                f"{where}: {name}={value!r} is not allowed: one of {', '.join(map(repr, allowed))}"
            )


def check_input(where: str, value: Any, input_format: str | None) -> Any:
    """The ``InputSource`` of a path, URL or shard ``items``, or a ``BatchArgumentError`` saying why not."""
    from airflow_provider_qwen.batch.readers import InputFormatError
    from airflow_provider_qwen.batch.sources import input_source

    try:
        return input_source(where, value, format=input_format)
    except InputFormatError as exc:
        raise BatchArgumentError(str(exc)) from None


def check_syntax(where: str, name: str, source: str) -> None:
    """A template syntax error at DAG parse time, not after the first paid request."""
    import jinja2

    try:
        jinja2.Environment().parse(source)
    except jinja2.TemplateSyntaxError as exc:
        raise InvalidRequestError(f"{where}: {name} is not a valid Jinja template: {exc}") from None


def input_limit(where: str, requested: int | None, request: ChatRequest) -> int | None:
    """The ``max_input_tokens`` a batch splits at, for ``request`` (one of its requests, any prompt).

    The user's value, refused when over the model's window (with the output cap: over what the window
    leaves for the prompt); by default the window less the output cap (``OUTPUT_RESERVE`` when there
    is none) and a margin. None for a model whose window is unknown and no value given: never split.
    """
    from airflow_provider_qwen.client.profiles import profile_for
    from airflow_provider_qwen.client.tokens import output_cap

    window = profile_for(request.model).context_window
    if window is None:
        return requested
    cap = output_cap(request)
    cap_field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
    model = f"the {window}-token context window of model={request.model!r}"
    if cap >= window - MIN_INPUT_TOKENS:
        raise BatchArgumentError(
            f"{where}: {cap_field}={cap} leaves no room for a prompt in {model}; lower it below "
            f"{window - MIN_INPUT_TOKENS}"
        )
    if requested is not None:
        if requested > window:
            raise BatchArgumentError(
                f"{where}: max_input_tokens={requested} is over {model}; give at most {window - cap}"
                + (f" (the window less {cap_field}={cap})" if cap else "")
                + ", or leave it unset to use the window"
            )
        if requested + cap > window:
            raise BatchArgumentError(
                f"{where}: max_input_tokens={requested} plus {cap_field}={cap} is over {model}; "
                f"give at most {window - cap}, or leave it unset to use the window"
            )
        return requested
    margin = max(MIN_WINDOW_MARGIN, int(window * WINDOW_MARGIN))
    return max(MIN_INPUT_TOKENS, window - (cap or OUTPUT_RESERVE) - margin)


def probe_request(op: QwenBatchOperator, where: str) -> ChatRequest:
    """One request with the task's rendered parameters: a bad one fails the task here, once."""
    try:
        return op.request_builder().build([*op.history_messages(), {"role": "user", "content": "check"}])
    except InvalidRequestError as exc:
        raise BatchArgumentError(
            f"{where}: {exc} (checked once before any request: every item would be refused)"
        ) from None


def _is_xcom_arg(value: Any) -> bool:
    from airflow_provider_qwen.batch.sources import is_storage_path

    return hasattr(value, "resolve") and not is_storage_path(value)
