"""Tools from plain Python functions: the schema from the signature, typed arguments back.

``tool(func)`` reads the type hints and the docstring (first paragraph: the description;
``:param x: ...`` lines: the parameters' descriptions) into a pydantic model, sent as the tool's
JSON schema. A call's arguments are validated by that model and handed to the function as typed
values: a ``date`` parameter gets a ``datetime.date``, a pydantic-model parameter the model. A
parameter annotated ``ToolContext`` is left out of the schema and gets the call's context.
A definition the schema cannot express fails here, when the DAG is parsed, not at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import inspect
import json
import math
import re
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from airflow_provider_qwen.agent.errors import ToolArgumentsError
from airflow_provider_qwen.client.errors import InvalidRequestError, StructuredOutputError
from airflow_provider_qwen.client.request import MAX_TOOLS, TOOL_NAME_PATTERN
from airflow_provider_qwen.client.structured import (
    check_refs,
    normalize_schema,
    parse_arguments,
    pydantic_violations,
)

__all__ = ["Tool", "ToolContext", "as_tools", "tool"]

_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
_PARAM_DOC = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+):\s*(.*)$")


@dataclass(frozen=True)
class ToolContext:
    """What a tool learns about its call: which task, which turn, which call, and the Airflow context.

    A tool asks for it by declaring a parameter annotated ``ToolContext`` (any name); it is never
    part of the schema. ``try_number`` is there for logging; keys that must hold across retries
    leave it out (see ``idempotency_key``).
    """

    run_id: str | None
    task_id: str | None
    map_index: int | None
    try_number: int | None
    turn: int
    call_id: str
    airflow_context: Any = field(default=None, repr=False, compare=False)
    dag_id: str | None = None  # run ids repeat across DAGs (``manual__<time>``): part of the key

    @property
    def idempotency_key(self) -> str:
        """The same for every try of the task that runs this call (a retry replays the journaled
        answer, so the call id holds): 64 hex digits of DAG, run, task, map index, turn and call id."""
        parts = [self.run_id, self.task_id, self.map_index, self.turn, self.call_id]
        if self.dag_id is not None:
            parts.insert(0, self.dag_id)
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class Tool:
    """A Python function the model may call: what is sent (``to_wire``), how a call's arguments are
    checked (``parse``) and how it runs (``invoke``). Build one with ``tool()``."""

    name: str
    description: str | None
    parameters: dict[str, Any]
    function: Callable[..., Any] = field(repr=False)
    arguments_model: type[BaseModel] = field(repr=False)
    requires_approval: bool = False
    timeout: float | None = None
    context_parameter: str | None = field(default=None, repr=False)

    def to_wire(self) -> dict[str, Any]:
        """The request's ``tools[]`` entry."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def parse(self, arguments: str) -> dict[str, Any]:
        """A call's raw JSON arguments -> the function's keyword arguments, as typed values.

        Raises ToolArgumentsError with every violation listed, in words the model can act on.
        """
        try:
            data = parse_arguments(arguments)
        except StructuredOutputError as exc:
            raise self._refused(exc.errors) from None
        if not isinstance(data, dict):
            raise self._refused([f"arguments must be a JSON object, got {type(data).__name__}"])
        try:
            checked = self.arguments_model.model_validate(data)
        except ValidationError as exc:
            raise self._refused(pydantic_violations(exc)) from None
        return {info.alias or key: getattr(checked, key) for key, info in type(checked).model_fields.items()}

    async def invoke(self, kwargs: Mapping[str, Any], context: ToolContext) -> Any:
        """Run the function with ``kwargs`` (and the context, if it asks for it). A sync function runs
        in a thread of its own, so a hung one never holds the event loop or its shutdown."""
        call_kwargs = dict(kwargs)
        if self.context_parameter is not None:
            call_kwargs[self.context_parameter] = context
        if _is_async(self.function):
            return await self.function(**call_kwargs)
        return await _in_thread(functools.partial(self.function, **call_kwargs), f"qwen-tool-{self.name}")

    def _refused(self, errors: list[str]) -> ToolArgumentsError:
        listed = "".join(f"\n- {e}" for e in errors)
        return ToolArgumentsError(
            f"Invalid arguments for {self.name}:{listed}\nCall {self.name} again with arguments that "
            "match its JSON schema.",
            errors=errors,
        )


@overload
def tool(
    func: Callable[..., Any],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
) -> Tool: ...


@overload
def tool(
    func: None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    requires_approval: bool = False,
    timeout: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """A Tool from a typed function: ``@tool``, ``@tool(requires_approval=True)`` or ``tool(f)``.

    ``timeout`` (seconds) overrides the loop's ``tool_timeout`` for this tool. Raises
    InvalidRequestError naming the function and what is wrong with it.
    """

    def build(function: Callable[..., Any]) -> Tool:
        return _build(function, name, description, requires_approval, timeout)

    return build if func is None else build(func)


def as_tools(items: Sequence[Callable[..., Any] | Tool]) -> dict[str, Tool]:
    """Tools by name, in order: each item a Tool or a function for ``tool()``. Names must be unique and
    valid, and there may be at most 128 (the service's limit)."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise InvalidRequestError(f"tools={items!r}: give a list of functions or Tool objects")
    if len(items) > MAX_TOOLS:
        raise InvalidRequestError(f"tools: {len(items)} tools given; the service takes at most {MAX_TOOLS}")
    tools: dict[str, Tool] = {}
    for item in items:
        if isinstance(item, Tool):
            _check_name(item.name, f"tool {item.name!r}")
            found = item
        elif callable(item) and not isinstance(item, type):
            found = tool(item)
        else:
            raise InvalidRequestError(
                f"tools: {item!r} is not a tool; give a typed Python function or a Tool (see tool())"
            )
        if found.name in tools:
            raise InvalidRequestError(f"tools: two tools are named {found.name!r}; tool names must be unique")
        tools[found.name] = found
    return tools


# -- building ---------------------------------------------------------------------------------


def _build(
    func: Callable[..., Any],
    name: str | None,
    description: str | None,
    requires_approval: bool,
    timeout: float | None,
) -> Tool:
    label = getattr(func, "__name__", None) or type(func).__name__
    where = f"tool function {label}"
    if not callable(func) or isinstance(func, type):
        raise InvalidRequestError(f"{func!r} cannot be a tool: give a Python function with type hints")
    if not isinstance(requires_approval, bool):
        raise InvalidRequestError(f"{where}: requires_approval={requires_approval!r} must be True or False")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout)
    ):
        raise InvalidRequestError(f"{where}: timeout={timeout!r} must be a number of seconds")
    if timeout is not None and timeout <= 0:
        raise InvalidRequestError(f"{where}: timeout={timeout!r} must be more than 0 seconds")
    tool_name = name or label
    _check_name(tool_name, where)
    signature, hints = _signature(func, where)
    summary, param_docs = _docstring(inspect.getdoc(func) or "")
    fields: dict[str, Any] = {}
    context_parameter = None
    for index, param in enumerate(signature.parameters.values()):
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise InvalidRequestError(f"{where}: {star}{param.name} is not allowed; name every parameter")
        if param.kind is param.POSITIONAL_ONLY:
            raise InvalidRequestError(
                f"{where}: parameter {param.name!r} is positional-only; tools are called by keyword"
            )
        if param.name not in hints:
            raise InvalidRequestError(f"{where}: parameter {param.name!r} needs a type hint")
        if hints[param.name] is ToolContext:
            if context_parameter is not None:
                raise InvalidRequestError(f"{where}: only one parameter may be a ToolContext")
            context_parameter = param.name
            continue
        default = ... if param.default is param.empty else param.default
        # Internal field names (p0, p1 ...) with the parameter as alias: any Python name is allowed,
        # even one pydantic reserves (model_*, json, schema ...).
        fields[f"p{index}"] = (
            hints[param.name],
            Field(default, alias=param.name, description=param_docs.pop(param.name, None)),
        )
    param_docs.pop(context_parameter or "", None)
    if param_docs:
        raise InvalidRequestError(
            f"{where}: the docstring describes :param {sorted(param_docs)[0]}: but there is no such parameter"
        )
    parameters, arguments_model = _schema(tool_name, fields, where)
    return Tool(
        name=tool_name,
        description=description or summary,
        parameters=parameters,
        function=func,
        arguments_model=arguments_model,
        requires_approval=requires_approval,
        timeout=float(timeout) if timeout is not None else None,
        context_parameter=context_parameter,
    )


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        raise InvalidRequestError(
            f"{where}: tool name {name!r} is not allowed: use 1-64 characters of a-z, A-Z, 0-9, _ and - "
            "(pass name=... to choose one)"
        )


def _signature(func: Callable[..., Any], where: str) -> tuple[inspect.Signature, dict[str, Any]]:
    # A partial: its function has the hints; a callable object: its __call__ (the signature of
    # either already leaves out what is bound).
    if isinstance(func, functools.partial):
        target: Any = func.func
    elif inspect.isfunction(func) or inspect.ismethod(func):
        target = func
    else:
        target = type(func).__call__
    try:
        signature = inspect.signature(func)
        # The return annotation is never used: one that cannot be resolved (a TYPE_CHECKING import)
        # must not fail the tool, so only the parameters' annotations are read.
        annotations = dict(getattr(inspect.unwrap(target), "__annotations__", None) or {})
        annotations.pop("return", None)
        shim = types.SimpleNamespace(__annotations__=annotations)
        globalns = getattr(inspect.unwrap(target), "__globals__", None)
        hints = typing.get_type_hints(shim, globalns=globalns, include_extras=True)
    except (NameError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"{where}: cannot read its signature ({exc})") from None
    return signature, hints


def _docstring(doc: str) -> tuple[str | None, dict[str, str]]:
    """The first paragraph (before any ``:field:`` line) and the ``:param name: text`` descriptions
    (indented continuation lines joined)."""
    summary_lines: list[str] = []
    params: dict[str, str] = {}
    current: str | None = None
    in_fields = False
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped.startswith(":"):
            in_fields = True
            match = _PARAM_DOC.match(stripped)
            current = match.group(1) if match else None
            if match:
                params[current or ""] = match.group(2).strip()
        elif in_fields:
            if current is not None and stripped and line[:1].isspace():
                params[current] = f"{params[current]} {stripped}".strip()
            else:
                current = None
        else:
            summary_lines.append(line)
    summary = "\n".join(summary_lines).strip().split("\n\n", 1)[0].strip()
    return summary or None, {k: v for k, v in params.items() if k}


def _schema(name: str, fields: dict[str, Any], where: str) -> tuple[dict[str, Any], type[BaseModel]]:
    """The arguments model (unknown arguments refused) and its JSON schema as the gateway takes it."""
    try:
        model = create_model(
            name, __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=False), **fields
        )
        schema = model.model_json_schema(by_alias=True)
    except Exception as exc:  # pydantic refuses a type it cannot validate or describe; say which
        raise InvalidRequestError(f"{where}: unsupported parameter type ({exc})") from None
    check_refs(schema, where)
    parameters, recursive = normalize_schema(schema)
    if recursive:
        raise InvalidRequestError(
            f"{where}: a parameter type is recursive; its schema cannot be inlined for the gateway"
        )
    parameters.pop("description", None)
    return parameters, model


# -- running ----------------------------------------------------------------------------------


def _is_async(func: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


async def _in_thread(call: Callable[[], Any], thread_name: str) -> Any:
    """``call()`` in a daemon thread (the caller's context variables copied). Unlike
    ``asyncio.to_thread``, a call that never returns holds neither the default executor nor
    the loop's shutdown: a timed-out sync tool is abandoned, its result discarded."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    run = contextvars.copy_context().run

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def target() -> None:
        try:
            result = run(call)
        except BaseException as exc:
            outcome: Callable[[], None] = functools.partial(future.set_exception, exc)
        else:
            outcome = functools.partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for the result
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=target, name=thread_name, daemon=True).start()
    return await future
