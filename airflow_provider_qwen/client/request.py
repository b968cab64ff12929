"""The chat-completions request: every parameter of the published schemas, validated once, here.

``build_request()`` is the single entry point: the client, the hook and the operators all go
through it, so a typo or an out-of-range value is refused before anything is sent, with a
message naming the field, the value and what is allowed. Which top-level fields a request may
carry is its model's profile (``client/profiles.py``): a field the model's published schema lacks
is refused, whatever its value; the shapes of the fields live in ``client/fields.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from airflow_provider_qwen import DEFAULT_MODEL
from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.fields import (
    NUMBER_NOT_BOOL,
    TOOL_NAME_PATTERN,
    AssistantMessage,
    Bool,
    Content,
    Float,
    FunctionDefinition,
    Int,
    Message,
    NamedToolChoice,
    Number,
    Prediction,
    Reasoning,
    ReasoningEffort,
    ResponseFormat,
    SearchOptions,
    StreamOptions,
    Strict,
    SystemMessage,
    TextPart,
    Tool,
    ToolCallParam,
    ToolChoice,
    ToolMessage,
    UserMessage,
    dedupe_union_errors,
    field_path,
    text_of,
    unencodable,
)
from airflow_provider_qwen.client.profiles import (
    GENERIC,
    KNOWN_FIELDS,
    ModelProfile,
    models_accepting,
    profile_for,
)

__all__ = [
    "MAX_STOP_SEQUENCES",
    "MAX_TOOLS",
    "PARAMETER_NAMES",
    "PROFILE_RANGES",
    "RANGES",
    "TOOL_NAME_PATTERN",
    "AssistantMessage",
    "ChatRequest",
    "Content",
    "FunctionDefinition",
    "Message",
    "NamedToolChoice",
    "StreamOptions",
    "SystemMessage",
    "TextPart",
    "Tool",
    "ToolCallParam",
    "ToolMessage",
    "UserMessage",
    "build_request",
]

MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4


class ChatRequest(Strict):
    """One chat-completions request body. Unknown fields are an error (the gateway would drop them)."""

    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: Int | None = Field(default=None, ge=1)
    max_tokens: Int | None = Field(default=None, ge=1)
    stream: Bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    normalize_tool_schemas: Bool | None = None
    parallel_tool_calls: Bool | None = None
    temperature: Float | None = Field(default=None, ge=0, le=2)
    top_p: Float | None = Field(default=None, ge=0.01, le=1)
    stop: str | list[str] | None = None
    logprobs: Bool | None = None
    top_logprobs: Int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, Annotated[Float, Field(ge=-100, le=100)]] | None = None
    reasoning_effort: ReasoningEffort | None = None
    reasoning: Reasoning | None = None
    # Fields only some models' schemas have: the model's profile decides whether a request may carry one.
    frequency_penalty: Float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: Float | None = Field(default=None, ge=-2, le=2)
    repetition_penalty: Float | None = None
    seed: Int | None = Field(default=None, ge=1)
    top_k: Number | None = None
    min_p: Float | None = Field(default=None, ge=0.001, le=0.999)
    top_a: Float | None = Field(default=None, ge=0, le=1)
    echo: Bool | None = None
    response_format: ResponseFormat | None = None
    prediction: Prediction | None = None
    enable_thinking: Bool | None = None
    thinking_budget: Int | None = Field(default=None, ge=1)
    enable_search: Bool | None = None
    search_options: SearchOptions | None = None
    provider: str | None = None
    extra_body: dict[str, Any] | None = Field(default=None, exclude=True)

    @model_validator(mode="before")
    @classmethod
    def _fields_of_its_model(cls, data: Any) -> Any:
        """Refuse a field the model's schema lacks, whatever its value: the gateway would drop it."""
        if not isinstance(data, Mapping) or not isinstance(data.get("model", DEFAULT_MODEL), str):
            return data
        model = data.get("model") or DEFAULT_MODEL
        profile = profile_for(model)
        for name in sorted(_CHECKED_FIELDS.intersection(data)):
            if data[name] is not None and not profile.accepts(name):
                raise ValueError(_not_accepted(model, profile, name, data[name]))
        extra = data.get("extra_body")
        for key, value in extra.items() if isinstance(extra, Mapping) else ():
            if key in _OWN_FIELDS or (key in _CHECKED_FIELDS and profile.accepts(key)):
                raise ValueError(f"extra_body key {key!r} is a regular parameter: pass it directly")
            if profile is not GENERIC and key in KNOWN_FIELDS and not profile.accepts(key):
                raise ValueError(_not_accepted(model, profile, key, value, in_extra_body=True))
        return data

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        """Refuse text that cannot be sent as UTF-8 (a lone surrogate), naming where it is."""
        problem = unencodable(data)
        if problem:
            raise ValueError(problem)
        return data

    @field_validator("extra_body")
    @classmethod
    def _json_values(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        """Refuse what JSON cannot carry (a Decimal, a date, NaN ...): it would fail at the send."""
        problem = _not_json(value, ("extra_body",)) if value else None
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("stop")
    @classmethod
    def _at_most_four_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > MAX_STOP_SEQUENCES:
            raise ValueError(
                f"stop={value!r} has {len(value)} sequences; at most {MAX_STOP_SEQUENCES} are allowed"
            )
        return value

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _known_choice(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in {"none", "auto", "required"}:
            raise ValueError(
                f"tool_choice={value!r} is not allowed: use 'none', 'auto', 'required' or "
                "{'type': 'function', 'function': {'name': ...}}"
            )
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for token in value or {}:
            if not str(token).isdigit():
                raise ValueError(f"logit_bias keys must be token ids (digits), got {token!r}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ChatRequest:
        if self.top_logprobs is not None and self.logprobs is not True:
            raise ValueError(f"top_logprobs={self.top_logprobs} requires logprobs=True (got {self.logprobs})")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options requires stream=True")
        names = [tool.function.name for tool in self.tools or []]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"tool names must be unique, repeated: {duplicates}")
        choice = self.tool_choice
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(
                f"tool_choice={choice.function.name!r} names a tool that is not in tools; defined: {names}"
            )
        if choice == "required" and not names:
            raise ValueError("tool_choice='required' needs at least one tool in tools")
        if self.thinking_budget is not None and self.enable_thinking is not True:
            raise ValueError(
                f"thinking_budget={self.thinking_budget} requires enable_thinking=True (got "
                f"{self.enable_thinking}): the budget is ignored without thinking"
            )
        return self

    @model_validator(mode="after")
    def _someone_asks(self) -> ChatRequest:
        """Every user message has text, and some user or tool message does: no empty question is paid for."""
        for index, message in enumerate(self.messages):
            if isinstance(message, UserMessage) and not text_of(message.content).strip():
                raise ValueError(
                    f"messages[{index}].content={_shown(message.content)}: a user message must have text "
                    "(it is empty or only whitespace); nothing was sent"
                )
        if not any(isinstance(m, (UserMessage, ToolMessage)) for m in self.messages):
            roles = ", ".join(m.role for m in self.messages)
            raise ValueError(
                f"messages (roles: {roles}) have no user or tool message: a request needs at least one "
                "user message with text (or a tool result) for the model to answer; nothing was sent"
            )
        return self

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: set fields only, ``extra_body`` merged on top."""
        body = self.model_dump(mode="json", exclude_none=True)
        body.update(self.extra_body or {})
        return body

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe, ``extra_body`` kept apart (a trigger's kwargs); ``from_dict`` validates it again."""
        data = self.model_dump(mode="json", exclude_none=True)
        if self.extra_body:
            data["extra_body"] = dict(self.extra_body)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatRequest:
        """The request ``to_dict`` described, validated as ``build_request`` does."""
        params = {k: v for k, v in data.items() if k != "messages"}
        return build_request(data.get("messages") or [], **params)

    @property
    def is_named_tool_call(self) -> bool:
        """Whether ``tool_choice`` forces one named function (structured output by tool call)."""
        return isinstance(self.tool_choice, NamedToolChoice)


_OWN_FIELDS = frozenset({"model", "messages", "extra_body"})
# The top-level fields a model's profile rules on: every declared parameter but the three above.
_CHECKED_FIELDS: frozenset[str] = frozenset(ChatRequest.model_fields) - _OWN_FIELDS

PARAMETER_NAMES: frozenset[str] = GENERIC.fields | {"extra_body"}
"""The parameters any model takes: the flagship schema's (a model without a profile's too) and extra_body."""

# Numeric bounds of the published schema, by field path (list indexes and dict keys left out), for messages.
RANGES: dict[str, tuple[float, float | None]] = {
    "temperature": (0, 2),
    "top_p": (0.01, 1),
    "top_logprobs": (0, 20),
    "logit_bias": (-100, 100),
    "max_tokens": (1, None),
    "max_completion_tokens": (1, None),
    "reasoning.max_tokens": (1, None),
}
# The same for the fields only some models take (their -plus, -flash and open-weight schemas).
PROFILE_RANGES: dict[str, tuple[float, float | None]] = {
    "frequency_penalty": (-2, 2),
    "presence_penalty": (-2, 2),
    "seed": (1, None),
    "min_p": (0.001, 0.999),
    "top_a": (0, 1),
    "thinking_budget": (1, None),
}
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}

# What a model that lacks a field takes in its place, when it does.
_INSTEAD: dict[str, tuple[str, ...]] = {
    "max_completion_tokens": ("max_tokens",),
    "enable_thinking": ("reasoning_effort", "reasoning"),
    "thinking_budget": ("reasoning",),
    "reasoning_effort": ("enable_thinking",),
    "reasoning": ("enable_thinking", "thinking_budget"),
}


def _not_json(value: Any, path: tuple[Any, ...]) -> str | None:
    """Where the first value JSON cannot carry is, with the value and what is allowed, or None."""
    if value is None or isinstance(value, (str, bool, int)):
        return None
    if isinstance(value, float) and math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return next((p for i, v in enumerate(value) if (p := _not_json(v, (*path, i)))), None)
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return (
                    f"{field_path(path)} has the key {_shown(key)}, which cannot be sent as JSON; "
                    "allowed: string keys; nothing was sent"
                )
            if problem := _not_json(item, (*path, key)):
                return problem
        return None
    return (
        f"{field_path(path)}={_shown(value)} cannot be sent as JSON; allowed: strings, finite numbers, "
        "booleans, None, and lists and objects of those (convert it first, e.g. str() or float()); "
        "nothing was sent"
    )


def _shown(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hint(profile: ModelProfile, name: str) -> str:
    if name == "response_format" and profile.structured_output == "tool_call":
        return (
            " (it has no JSON mode: use a forced tool call, tools=[...] with "
            "tool_choice={'type': 'function', 'function': {'name': ...}}, and validate its arguments)"
        )
    if name in ("tools", "tool_choice", "parallel_tool_calls") and not profile.accepts("tools"):
        if profile.accepts("response_format"):
            return (
                " (it has no tool calling: choose a model that has, or structure output with "
                "response_format={'type': 'json_schema', 'json_schema': {...}})"
            )
        return " (it has no tool calling: choose a model that has)"
    instead = [other for other in _INSTEAD.get(name, ()) if profile.accepts(other)]
    return f" (it takes {' / '.join(instead)} instead)" if instead else ""


def _not_accepted(
    model: str, profile: ModelProfile, name: str, value: Any, *, in_extra_body: bool = False
) -> str:
    """The refusal of a field ``model``'s profile lacks: field, value, what the model takes, who has it."""
    field = f"extra_body {name}={_shown(value)}" if in_extra_body else f"{name}={_shown(value)}"
    accepted = ", ".join(sorted(profile.fields))
    if profile is GENERIC:
        return (
            f"{field} is not checked for {model}, a model without a profile (its schema is not known): "
            f"pass it as extra_body={{{name!r}: ...}} to send it unchecked; checked for it: {accepted}"
        )
    owners = models_accepting(name)
    where = f"; {name} is a field of {', '.join(owners)}" if owners else ""
    return (
        f"{field} is not accepted by {model}{_hint(profile, name)}; it accepts: {accepted}{where}; "
        "a field outside the published schemas goes in extra_body"
    )


def _allowed_range(loc: str) -> str | None:
    key = loc.split(".", 1)[0] if loc.startswith("logit_bias.") else loc
    bounds = RANGES.get(key) or PROFILE_RANGES.get(key)
    if bounds is None:
        return None
    low, high = bounds
    return f"allowed: {low} to {high}" if high is not None else f"allowed: {low} or more"


def _describe(error: Mapping[str, Any], model: str) -> str:
    loc = field_path([part for part in error.get("loc", ()) if not str(part).startswith("function-")])
    value = error.get("input")
    kind = error.get("type")
    if kind == "extra_forbidden":
        if "." not in loc and "[" not in loc:
            profile = profile_for(model)
            allowed = ", ".join(sorted(profile.fields | {"extra_body"}))
            if profile is GENERIC:
                return (
                    f"unknown parameter {loc!r}: not sent; allowed: {allowed} "
                    "(or extra_body for other models)"
                )
            return (
                f"unknown parameter {loc!r}: not sent; {model} accepts: {allowed} "
                "(extra_body for a field outside the published schemas)"
            )
        hint = ""
        if loc.endswith("reasoning_content"):
            hint = " (reasoning_content is never sent back in history)"
        return f"unknown field {loc!r}: not in the request schema{hint}"
    message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    if kind == "missing":
        return f"{loc}: required field is missing"
    if not loc or kind == "value_error":
        return message  # our own validators name the field and value themselves
    shown = repr(value)
    if len(shown) > 120:
        shown = shown[:117] + "..."
    if kind == NUMBER_NOT_BOOL:
        kind_text = (error.get("ctx") or {}).get("kind", "a number")
        allowed = _allowed_range(loc) or f"allowed: {kind_text}"
        return f"{loc}={shown}: a boolean is not {kind_text}; {allowed}"
    if kind == "bool_type":
        return f"{loc}={shown}: must be a boolean; allowed: True or False (not strings or numbers)"
    bounds = _allowed_range(loc) if kind in _BOUND_ERRORS else None
    if bounds:
        return f"{loc}={shown} is out of range; {bounds}"
    if kind == "string_pattern_mismatch" and loc.endswith(("function.name", "json_schema.name")):
        what = "a tool name" if loc.endswith("function.name") else "a schema name"
        return f"{loc}={shown}: {what} is 1-64 characters of letters, digits, '_' and '-'"
    return f"{loc}={shown}: {message}"


def build_request(
    messages: Sequence[Mapping[str, Any] | BaseModel] | str,
    *,
    model: str | None = None,
    **params: Any,
) -> ChatRequest:
    """Validate ``messages`` and parameters into a ChatRequest or raise InvalidRequestError.

    A plain string is shorthand for one user message.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    data: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
    data["messages"] = [m.model_dump(exclude_none=True) if isinstance(m, BaseModel) else m for m in messages]
    if model:
        data["model"] = model
    try:
        return ChatRequest.model_validate(data)
    except ValidationError as exc:
        chosen = data["model"] if isinstance(data.get("model"), str) else DEFAULT_MODEL
        problems = "; ".join(_describe(e, chosen) for e in dedupe_union_errors(exc.errors()))
        raise InvalidRequestError(f"invalid chat request: {problems}") from None
