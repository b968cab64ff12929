"""Structured output through tool calls: a pydantic model, JSON schema or typed function -> a tool;
a tool call -> a validated, JSON-safe value; and the follow-up turn that asks the model to repair
invalid arguments.

qwen3.7-max has no ``response_format``: structure comes from a forced tool call whose arguments
are checked here, with pydantic for models and functions and ``jsonschema`` for schema dicts.
Schemas are sent the way the gateway accepts them (no ``title``, ``$defs`` inlined, no ``strict``);
a recursive schema cannot be inlined and is sent with ``normalize_tool_schemas`` instead.
No Airflow import here: the operators and the batch engine share this module.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field, ValidationError, create_model

from airflow_provider_qwen.client.errors import InvalidRequestError, StructuredOutputError
from airflow_provider_qwen.client.fields import SCHEMA_LISTS, SCHEMA_MAPS, SCHEMA_ONE, dangling_ref
from airflow_provider_qwen.client.request import TOOL_NAME_PATTERN

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion

_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
_SHOWN = 200  # characters of a value quoted in an error

# Dropped for the gateway: titles, dialect markers, and OpenAPI's discriminator (its mapping
# points into $defs, which are inlined away).
_DROPPED = frozenset({"title", "$schema", "discriminator"})


@dataclass(frozen=True, eq=False)
class ToolSpec:
    """One function tool: what is sent (``parameters``, normalised) and how its arguments are checked.

    ``needs_gateway_normalization`` is set for a recursive schema, sent with ``$defs`` kept.
    """

    name: str
    description: str | None
    parameters: dict[str, Any]
    validate: Callable[[Any], Any] = field(repr=False)
    needs_gateway_normalization: bool = False

    def to_tool(self) -> dict[str, Any]:
        """The ``tools[]`` entry of the request."""
        function: dict[str, Any] = {"name": self.name, "parameters": self.parameters}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def forced_choice(self) -> dict[str, Any]:
        """The ``tool_choice`` that forces a call of this tool."""
        return {"type": "function", "function": {"name": self.name}}

    def forced_request_params(self, *, user_params: Mapping[str, Any]) -> dict[str, Any]:
        """The request parameters that force one call of this tool; ``normalize_tool_schemas`` is
        added for a recursive schema unless the user set it in ``user_params``."""
        params: dict[str, Any] = {
            "tools": [self.to_tool()],
            "tool_choice": self.forced_choice(),
            "parallel_tool_calls": False,
        }
        if self.needs_gateway_normalization and "normalize_tool_schemas" not in user_params:
            params["normalize_tool_schemas"] = True
        return params

    def check_arguments(self, arguments: str) -> Any:
        """Parse and validate a call's ``arguments`` string: the JSON-safe value, or StructuredOutputError."""
        data = parse_arguments(arguments)
        return self.validate(data)


@dataclass
class CheckedCall:
    """One tool call of a response with its validated arguments, or the reasons they were refused."""

    id: str
    name: str
    arguments: str
    value: Any = None
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def result(self) -> dict[str, Any]:
        """The call as the operators return it: ``{"name", "arguments", "id"}``."""
        return {"name": self.name, "arguments": self.value, "id": self.id}


# -- building tools ----------------------------------------------------------------------------


def tool_spec(source: Any, *, name: str | None = None, description: str | None = None) -> ToolSpec:
    """A tool from a pydantic model class, a JSON schema (or tool/function definition) dict, or a
    typed Python function. Raises InvalidRequestError saying what is wrong and what is allowed."""
    if isinstance(source, type) and issubclass(source, BaseModel):
        return _model_spec(source, name or source.__name__, description)
    if isinstance(source, Mapping):
        return _schema_spec(source, name, description)
    if callable(source) and not isinstance(source, type):
        return _function_spec(source, name, description)
    raise InvalidRequestError(
        f"{source!r} cannot be a tool: give a pydantic model class, a JSON schema dict or a Python "
        "function with type hints"
    )


def tool_specs(sources: Sequence[Any]) -> dict[str, ToolSpec]:
    """Tools by name, in order; names must be unique."""
    specs: dict[str, ToolSpec] = {}
    for source in sources:
        spec = tool_spec(source)
        if spec.name in specs:
            raise InvalidRequestError(f"tools: two tools are named {spec.name!r}; tool names must be unique")
        specs[spec.name] = spec
    return specs


def _model_spec(model: type[BaseModel], name: str, description: str | None) -> ToolSpec:
    try:
        schema = model.model_json_schema()
    except Exception as exc:  # a type with no JSON schema (an arbitrary class, a callable ...)
        raise InvalidRequestError(f"{model.__name__} has no JSON schema: {exc}") from None

    def validate(data: Any) -> Any:
        try:
            return model.model_validate(data).model_dump(mode="json")
        except ValidationError as exc:
            raise StructuredOutputError(
                f"arguments do not match {model.__name__}", errors=pydantic_violations(exc)
            ) from None

    return _spec(name, description, schema, validate, origin=f"output model {model.__name__}")


def _function_spec(func: Callable[..., Any], name: str | None, description: str | None) -> ToolSpec:
    """A function's parameters as a pydantic model; its docstring gives the descriptions."""
    label = getattr(func, "__name__", repr(func))
    try:
        hints = typing.get_type_hints(func, include_extras=True)
        signature = inspect.signature(func)
    except (NameError, TypeError, ValueError) as exc:
        raise InvalidRequestError(f"tool function {label}: cannot read its signature ({exc})") from None
    doc = inspect.getdoc(func) or ""
    param_docs = dict(re.findall(r"^:param\s+(?:\S+\s+)?(\w+):\s*(.+)$", doc, flags=re.MULTILINE))
    fields: dict[str, Any] = {}
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise InvalidRequestError(
                f"tool function {label}: *{param.name} is not allowed; name every parameter"
            )
        if param.name not in hints:
            raise InvalidRequestError(f"tool function {label}: parameter {param.name!r} needs a type hint")
        default = ... if param.default is param.empty else param.default
        text = param_docs.get(param.name)
        fields[param.name] = (hints[param.name], Field(default, description=text) if text else default)
    try:
        model = create_model(label, **fields)
    except Exception as exc:  # pydantic refuses some names and types; say which
        raise InvalidRequestError(f"tool function {label}: unsupported parameters ({exc})") from None
    summary = doc.split("\n\n", 1)[0].strip() if doc and not doc.startswith(":") else None
    return _model_spec(model, name or label, description or summary)


def _schema_spec(source: Mapping[str, Any], name: str | None, description: str | None) -> ToolSpec:
    """A JSON schema, a function definition ``{"name", "description", "parameters"}``, or a tool
    ``{"type": "function", "function": {...}}``."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    definition = source.get("function") if source.get("type") == "function" else source
    if not isinstance(definition, Mapping):
        raise InvalidRequestError(
            f"tool {dict(source)!r}: 'function' must be an object with name and parameters"
        )
    if "name" in definition and "type" not in definition and "properties" not in definition:
        schema = definition.get("parameters") or {"type": "object", "properties": {}}
        name = name or definition["name"]
        description = description or definition.get("description")
    else:
        schema = definition
        name = name or definition.get("title") or "structured_output"
    if not isinstance(schema, Mapping):
        raise InvalidRequestError(f"tool {name!r}: parameters must be a JSON schema object, got {schema!r}")
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequestError(f"tool {name!r}: not a valid JSON schema: {exc.message}") from None
    validator = cls(dict(schema), format_checker=cls.FORMAT_CHECKER)

    def validate(data: Any) -> Any:
        problems = jsonschema_violations(validator, data)
        if problems:
            raise StructuredOutputError(f"arguments do not match the schema of {name}", errors=problems)
        return data

    return _spec(str(name), description, dict(schema), validate, origin=f"tool {name!r}")


def _spec(
    name: str, description: str | None, schema: dict[str, Any], validate: Callable[[Any], Any], *, origin: str
) -> ToolSpec:
    if not _TOOL_NAME.match(name):
        raise InvalidRequestError(
            f"{origin}: tool name {name!r} is not allowed: use 1-64 characters of a-z, A-Z, 0-9, _ and - "
            "(pass tool_name=... to choose one)"
        )
    check_refs(schema, origin)
    parameters, recursive = normalize_schema(schema)
    if parameters.get("type", "object") != "object":
        raise InvalidRequestError(
            f"{origin}: tool parameters must be a JSON object schema, got type {parameters.get('type')!r}; "
            "wrap the value in a model with one field"
        )
    if not description:  # a model's docstring describes the tool, not its one argument object
        description = parameters.pop("description", None)
    return ToolSpec(name, description, parameters, validate, recursive)


# -- schema normalisation ---------------------------------------------------------------------


def check_refs(schema: Mapping[str, Any], origin: str) -> None:
    """Refuse a schema with a ``$ref`` that does not resolve, before anything is sent."""
    problem = dangling_ref(schema)
    if problem:
        raise InvalidRequestError(f"{origin}: {problem}; nothing was sent")


class _CannotInline(Exception):
    pass


def normalize_schema(schema: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """The schema as the gateway accepts it, and whether it needs ``normalize_tool_schemas``.

    Local ``$ref``s are inlined and ``$defs`` dropped; ``title``/``$schema``/``discriminator`` go;
    descriptions stay. A recursive schema keeps its ``$defs`` (returned with ``True``).
    """
    defs = {**schema.get("definitions", {}), **schema.get("$defs", {})}
    try:
        return _walk(schema, defs, (), inline=True), False
    except _CannotInline:
        root = dict(schema)
        ref = root.pop("$ref", None)  # a recursive model's root is a bare $ref into $defs
        if isinstance(ref, str) and _ref_name(ref) in defs:
            root = {**defs[_ref_name(ref)], **root}
        return _walk(root, defs, (), inline=False), True


def _ref_name(ref: str) -> str | None:
    for prefix in ("#/$defs/", "#/definitions/"):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return None


def _walk(node: Any, defs: Mapping[str, Any], seen: tuple[str, ...], *, inline: bool) -> Any:
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    if inline and "$ref" in node:
        name = _ref_name(str(node["$ref"]))
        if name is None or name not in defs or name in seen:
            raise _CannotInline(node["$ref"])
        out.update(_walk(defs[name], defs, (*seen, name), inline=True))
    for key, value in node.items():
        if key in _DROPPED or (inline and key in {"$ref", "$defs", "definitions"}):
            continue
        if key in SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _walk(v, defs, seen, inline=inline) for k, v in value.items()}
        elif key in SCHEMA_LISTS and isinstance(value, list):  # incl. draft-4 tuple "items"
            out[key] = [_walk(v, defs, seen, inline=inline) for v in value]
        elif key in SCHEMA_ONE:
            out[key] = _walk(value, defs, seen, inline=inline)
        else:
            out[key] = value
    return out


# -- checking calls ---------------------------------------------------------------------------


def parse_arguments(arguments: str) -> Any:
    """A call's arguments string as JSON (empty means no arguments; a JSON string holding an object
    is decoded once more, a quirk of some backends)."""
    if not arguments or not arguments.strip():
        return {}
    try:
        data = json.loads(arguments)
        if isinstance(data, str) and data.lstrip().startswith("{"):
            data = json.loads(data)
    except json.JSONDecodeError as exc:
        raise StructuredOutputError(
            "arguments are not valid JSON",
            errors=[f"arguments are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"],
        ) from None
    return data


def pydantic_violations(exc: ValidationError) -> list[str]:
    """One line per pydantic error: ``where: what (got value)``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(root)"
        got = "" if error["type"] == "missing" else f" (got {_short(error.get('input'))})"
        lines.append(f"{where}: {error['msg']}{got}")
    return lines


def jsonschema_violations(validator: Any, data: Any) -> list[str]:
    """One line per JSON-schema error, in document order; a failed anyOf/oneOf names its closest branch."""
    from jsonschema.exceptions import best_match

    lines = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        where = ".".join(str(part) for part in error.absolute_path) or "(root)"
        message = error.message
        if error.context:
            message += f"; closest: {best_match(error.context).message}"
        lines.append(f"{where}: {_short(message, 2 * _SHOWN, as_repr=False)}")
    return lines


def _short(value: Any, limit: int = _SHOWN, *, as_repr: bool = True) -> str:
    text = repr(value) if as_repr else str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def response_calls(completion: ChatCompletion) -> list[CheckedCall]:
    """The response's tool calls, unchecked; a missing id gets a stable stand-in (a reply needs one)."""
    return [
        CheckedCall(id=call.id or f"call_{index}", name=call.function.name, arguments=call.function.arguments)
        for index, call in enumerate(completion.tool_calls)
    ]


def check_tool_calls(completion: ChatCompletion, specs: Mapping[str, ToolSpec]) -> list[CheckedCall]:
    """Every tool call of the response, parsed and validated against its tool."""
    calls = response_calls(completion)
    for call in calls:
        spec = specs.get(call.name)
        if spec is None:
            call.errors = [f"there is no tool named {call.name!r}; the tools are {sorted(specs)}"]
            continue
        try:
            call.value = spec.check_arguments(call.arguments)
        except StructuredOutputError as exc:
            call.errors = exc.errors
    return calls


def truncation_hint(completion: ChatCompletion) -> list[str]:
    """A violation line explaining broken arguments by truncation, when the answer was cut."""
    if completion.finish_reason != "length":
        return []
    return ["the answer was cut at the token limit (finish_reason='length'): raise max_completion_tokens"]


def structured_value(completion: ChatCompletion, spec: ToolSpec) -> Any:
    """The validated value of the forced call of ``spec`` (its first call), or StructuredOutputError
    listing the violations."""
    calls = check_tool_calls(completion, {spec.name: spec})
    if not calls:
        said = f": it answered {_short(completion.content)}" if completion.content else ""
        raise StructuredOutputError(
            f"the model did not call {spec.name}",
            errors=[f"no call of {spec.name}{said}", *truncation_hint(completion)],
            inference_id=completion.inference_id,
        )
    call = next((c for c in calls if c.name == spec.name), calls[0])
    if call.errors:
        raise StructuredOutputError(
            f"the arguments of {spec.name} are invalid: " + "; ".join(call.errors),
            errors=[*call.errors, *truncation_hint(completion)],
            inference_id=completion.inference_id,
        )
    return call.value


# -- the repair turn --------------------------------------------------------------------------
