"""The one shape of the four Qwen TaskFlow decorators.

A decorated task is its operator with a Python function in front: in ``execute`` the function runs
(with its arguments, which Airflow rendered like any task's arguments), what it returns is checked
and becomes the prompt, the messages or the batch's items, and then the operator's own path runs
unchanged (request validation, budgets, the ``qwen_cost`` XCom, the return value).

What the function returns is data: it is set after Airflow rendered the template fields and goes
through no Jinja, no template file lookup and no check against the templates written in the DAG.
When the task pauses (a deferred call, a person's approval) the returned value travels in the
resume kwargs, so the function runs once per try and its value is never rendered on resume either.
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator

from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.operators.base import QwenBaseOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

# The key of the function's checked return value in a paused task's resume kwargs.
RETURNED_KWARG = "qwen_decorated_return"
# The prompt the parameters are checked with at DAG parse time, before the function has run.
PARSE_CHECK_PROMPT = "parameter check"
ROLES = ("system", "user", "assistant", "tool")
MAX_DEPTH = 32  # nesting of returned data (a message's content parts, an item's fields)
_WORD = re.compile(r"[A-Za-z_]{1,20}")  # a role shown in an error (anything else could be a secret)
PROMPT_ALLOWED = 'the prompt (a non-empty str) or a list of messages ({"role", "content"} dicts)'
ITEMS_ALLOWED = (
    "the items (a list of str or dict), or one input: the URL or ObjectStoragePath of a file or folder, "
    "or a shard from airflow_provider_qwen.batch.shard_input"
)


class ReturnedValueError(InvalidRequestError, TypeError):
    """The decorated function returned something its task cannot send; raised before any request."""


class QwenDecoratedOperator(DecoratedOperator, QwenBaseOperator):
    """The decorated form of a Qwen operator (mixed in front of it).

    ``returns`` says what the function's return value is: ``"prompt"`` (a str, the last user
    message, or a list of messages appended after ``messages=``) or ``"items"`` (QwenBatchOperator's
    ``items``). Every other keyword goes to the operator unchanged.
    """

    returns: ClassVar[str] = "prompt"
    custom_operator_name: str = "@task.qwen"
    # After the run the "Rendered Templates" view shows the prompt as sent (the function's return).
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        where = f"{self.custom_operator_name} {kwargs.get('task_id')!r}"
        if self.returns == "items":
            if kwargs.get("items") is not None:
                raise InvalidRequestError(
                    f"{where}: items= is what the function returns; return the items (or the input's "
                    "URL) from the function instead of passing items="
                )
            if kwargs.get("prompt") is None:
                raise InvalidRequestError(
                    f"{where}: needs prompt=, the template rendered for each item the function returns "
                    "(with {{ item }}, {{ index }}); the function returns the items"
                )
            kwargs["items"] = []  # replaced by the function's return value in execute
        elif kwargs.get("prompt") is not None:
            raise InvalidRequestError(
                f"{where}: prompt= is what the function returns; give fixed text as system_prompt= "
                "or messages= (sent before the returned prompt), or return it from the function"
            )
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs, **kwargs)

    @property
    def task_label(self) -> str:
        """How errors and logs name the task: ``@task.qwen 'summarise'``."""
        return f"{self.custom_operator_name} {self.task_id!r}"

    def validate_static_parameters(self) -> None:
        """The operator's parse-time checks, with a stand-in for the prompt the function will return."""
        if self.returns == "items" or self.prompt is not None:
            super().validate_static_parameters()
            return
        self.prompt = PARSE_CHECK_PROMPT
        try:
            super().validate_static_parameters()
        finally:
            self.prompt = None

    # -- execution ----------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        value = self.call_function(context)
        self.use_returned(value)
        with self._carried_on_pause(value):
            return super().execute(context)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume a paused try with the value the function returned before the pause (it is not run
        again, except under ``dag.test()``, which drops a deferred task's resume kwargs)."""
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

        kwargs = dict(next_kwargs or {})
        value = kwargs.pop(RETURNED_KWARG, None)
        if value is None and next_method != TRIGGER_FAIL_REPR:
            self.log.info("the resume kwargs do not hold the function's return value: running it again")
            value = self.call_function(context)
        if value is not None:
            self.use_returned(value)
        with self._carried_on_pause(value):
            return super().resume_execution(next_method, kwargs, context)

    def call_function(self, context: Context) -> Any:
        """Run the function with its arguments (and the context values it names); its checked return."""
        call_context: dict[str, Any] = {**context, **self.op_kwargs}  # the task's context stays as it is
        kwargs = self.determine_kwargs(call_context)
        value = self.python_callable(*self.op_args, **kwargs)
        if inspect.isawaitable(value):  # an async def function
            value = asyncio.run(_awaited(value))
        label = self.task_label
        checked = check_items(label, value) if self.returns == "items" else check_prompt(label, value)
        self.log.info("%s; it is sent as data, never rendered as a template", describe(checked, self.returns))
        return checked

    def use_returned(self, value: Any) -> None:
        """Put the checked return value where the operator reads it (after Airflow's rendering)."""
        if self.returns == "items":
            setattr(self, "items", value)  # noqa: B010 - QwenBatchOperator's attribute
        elif isinstance(value, str):
            self.prompt = value
        else:
            self.messages = [*(self.messages or []), *value]

    @contextmanager
    def _carried_on_pause(self, value: Any) -> Iterator[None]:
        """A pause (deferral, awaiting a person) keeps the returned value in its resume kwargs."""
        from airflow.sdk.exceptions import TaskAwaitingInput, TaskDeferred

        try:
            yield
        except (TaskDeferred, TaskAwaitingInput) as pause:
            if value is not None:
                pause.kwargs = {**(pause.kwargs or {}), RETURNED_KWARG: value}
            raise


async def _awaited(value: Any) -> Any:
    return await value


# -- what the function may return -------------------------------------------------------------


def check_prompt(where: str, value: Any) -> str | list[dict[str, Any]]:
    """A returned prompt (str with text) or message list, as sent; else ReturnedValueError."""
    if isinstance(value, str):
        if not str.strip(value):
            shown = "an empty string" if not value else f"{len(value)} whitespace character(s) {value[:20]!r}"
            raise ReturnedValueError(
                f"{where}: the function returned a prompt with no text ({shown}); return {PROMPT_ALLOWED}; "
                "nothing was sent"
            )
        return plain_data(where, value, "the prompt")
    if not isinstance(value, (list, tuple)):
        raise _refused(where, value, PROMPT_ALLOWED)
    if not value:
        raise ReturnedValueError(
            f"{where}: the function returned an empty list of messages; return {PROMPT_ALLOWED}; "
            "nothing was sent"
        )
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise ReturnedValueError(
                f"{where}: the function returned a list whose element [{index}] is {kind_of(message)}; "
                f'each message must be a dict with "role" and "content"{_hint(message)}; nothing was sent'
            )
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = repr(role) if isinstance(role, str) and _WORD.fullmatch(role) else kind_of(role)
            raise ReturnedValueError(
                f"{where}: message [{index}] returned by the function has role {shown}; allowed: "
                f"{', '.join(ROLES)}; nothing was sent"
            )
        if "content" not in message and not message.get("tool_calls"):
            raise ReturnedValueError(
                f'{where}: message [{index}] returned by the function has no "content"; nothing was sent'
            )
        messages.append(plain_data(where, message, f"message [{index}]"))
    return messages


def plain_data(where: str, value: Any, path: str, depth: int = 0) -> Any:
    """A copy of returned data as plain ``dict`` / ``list`` / ``str`` (a str subclass such as
    ``Markup`` becomes a str), so nothing the function keeps can change it later and a pause can
    store it; a cycle or a nesting past ``MAX_DEPTH`` is refused."""
    if depth > MAX_DEPTH:
        raise ReturnedValueError(
            f"{where}: {path} returned by the function is nested more than {MAX_DEPTH} levels deep "
            "(or holds itself); nothing was sent"
        )
    if isinstance(value, str):
        return str.__getitem__(value, slice(None)) if type(value) is not str else value
    if isinstance(value, Mapping):
        return {
            plain_data(where, k, path, depth + 1): plain_data(where, v, path, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [plain_data(where, v, path, depth + 1) for v in value]
    return value


def check_items(where: str, value: Any) -> Any:
    """Returned batch items (a list of str/dict, or one input on storage); else ReturnedValueError."""
    from airflow_provider_qwen.batch.sources import SHARD_MARKER, is_input_value, is_storage_path

    if isinstance(value, str):
        if is_input_value(value):
            return plain_data(where, value.strip(), "the input")
        raise ReturnedValueError(
            f"{where}: the function returned a str of {len(value)} character(s) that is not the URL or "
            f"absolute path of an input; return {ITEMS_ALLOWED} (a list, even of one item); nothing was sent"
        )
    if is_storage_path(value) or (isinstance(value, Mapping) and SHARD_MARKER in value):
        return value
    if not isinstance(value, (list, tuple)):
        raise _refused(where, value, ITEMS_ALLOWED)
    for index, item in enumerate(value):
        if not isinstance(item, (str, Mapping)):
            raise ReturnedValueError(
                f"{where}: the function returned items whose element [{index}] is {kind_of(item)}; each "
                f"item must be a str or a dict{_hint(item)}; nothing was sent"
            )
    return list(value)  # each item as returned: the per-item template sees exactly what was given


def describe(value: Any, returns: str) -> str:
    """What the function returned, by size only (never its text: it may hold anything)."""
    if isinstance(value, str):
        what = "an input" if returns == "items" else "a prompt"
        return f"the function returned {what} of {len(value)} character(s)"
    if isinstance(value, list):
        return f"the function returned {len(value)} {'item' if returns == 'items' else 'message'}(s)"
    return f"the function returned an input ({type(value).__name__})"


def kind_of(value: Any) -> str:
    """A value's type in words, without its content."""
    if value is None:
        return "None"
    if isinstance(value, (bytes, bytearray)):
        return f"{type(value).__name__} ({len(value)} bytes)"
    name = type(value).__name__
    return f"an {name}" if name[:1].lower() in "aeiou" else f"a {name}"


def _hint(value: Any) -> str:
    if value is None:
        return " (does the function end without a return?)"
    if isinstance(value, (bytes, bytearray)):
        return " (decode it to a str first)"
    if hasattr(value, "model_dump") and not isinstance(value, type):
        return " (a pydantic model: return model.model_dump() or model.model_dump_json())"
    if inspect.isgenerator(value) or isinstance(value, Iterator):
        return " (a generator or iterator: return a list)"
    return ""


def _refused(where: str, value: Any, allowed: str) -> ReturnedValueError:
    hint = _hint(value)
    if isinstance(value, Mapping) and not hint:
        hint = " (a single dict: return a list of one, [value])"
    return ReturnedValueError(
        f"{where}: the function returned {kind_of(value)}{hint}; return {allowed}; nothing was sent"
    )


def operator_fields(operator: type[QwenBaseOperator]) -> tuple[Sequence[str], dict[str, str]]:
    """``template_fields`` and their renderers of a decorated ``operator``: the function's arguments,
    then the operator's own fields."""
    fields = (*DecoratedOperator.template_fields, *operator.template_fields)
    renderers = {**DecoratedOperator.template_fields_renderers, **operator.template_fields_renderers}
    return fields, renderers
