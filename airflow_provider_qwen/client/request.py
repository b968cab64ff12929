"""The chat-completions request: every parameter of the published schema, validated once, here.

``build_request()`` is the single entry point: the client, the hook and the operators all go
through it, so a typo or an out-of-range value is refused before anything is sent, with a
message naming the field, the value and what is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from airflow_provider_qwen import DEFAULT_MODEL
from airflow_provider_qwen.client.errors import InvalidRequestError
from airflow_provider_qwen.client.profiles import GENERIC, KNOWN_FIELDS, profile_for

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"
MAX_TOOLS = 128
MAX_STOP_SEQUENCES = 4

ReasoningEffort = Literal["low", "medium", "high"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    type: Literal["text"] = "text"
    text: str


Content = str | list[TextPart]


class SystemMessage(_Strict):
    role: Literal["system"] = "system"
    content: Content
    name: str | None = None


class UserMessage(_Strict):
    role: Literal["user"] = "user"
    content: Content
    name: str | None = None


class FunctionCall(_Strict):
    name: str
    arguments: str


class ToolCallParam(_Strict):
    """A tool call in assistant history (what the model asked for in an earlier turn)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(_Strict):
    role: Literal["assistant"] = "assistant"
    content: Content | None = None
    name: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCallParam] | None = None

    @model_validator(mode="after")
    def _content_or_calls(self) -> AssistantMessage:
        if self.content is None and not self.tool_calls:
            raise ValueError("an assistant message needs content or tool_calls")
        return self


class ToolMessage(_Strict):
    role: Literal["tool"] = "tool"
    content: Content
    tool_call_id: str = Field(min_length=1)
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(_Strict):
    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(_Strict):
    name: str


class NamedToolChoice(_Strict):
    type: Literal["function"] = "function"
    function: NamedFunction


class AllowedTools(_Strict):
    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(_Strict):
    type: Literal["allowed_tools"] = "allowed_tools"
    allowed_tools: AllowedTools


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice


class StreamOptions(_Strict):
    include_usage: bool


class Reasoning(_Strict):
    effort: ReasoningEffort | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    exclude: bool | None = None

    @model_validator(mode="after")
    def _effort_xor_budget(self) -> Reasoning:
        if self.effort is not None and self.max_tokens is not None:
            raise ValueError(
                f"reasoning.effort={self.effort!r} and reasoning.max_tokens={self.max_tokens} "
                "cannot be used together: set one"
            )
        return self


class ChatRequest(_Strict):
    """One chat-completions request body. Unknown fields are an error (the gateway would drop them)."""

    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: ToolChoice | None = None
    normalize_tool_schemas: bool | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0.01, le=1)
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    reasoning_effort: ReasoningEffort | None = None
    reasoning: Reasoning | None = None
    extra_body: dict[str, Any] | None = Field(default=None, exclude=True)

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
        for key in self.extra_body or {}:
            if key in type(self).model_fields:
                raise ValueError(f"extra_body key {key!r} is a regular parameter: pass it directly")
        self._check_profile()
        return self

    def _check_profile(self) -> None:
        """Refuse a field the model's published schema does not have (the gateway would drop it)."""
        profile = profile_for(self.model)
        for name in sorted(type(self).model_fields.keys() - {"model", "messages", "extra_body"}):
            value = getattr(self, name)
            if value is not None and not profile.accepts(name):
                hint = ""
                if name in ("tools", "tool_choice", "parallel_tool_calls"):
                    hint = (
                        " (it has no tool calling: choose a model that has, or structure output with "
                        "extra_body={'response_format': ...})"
                    )
                accepted = ", ".join(sorted(profile.fields))
                shown = repr(value) if len(repr(value)) <= 80 else repr(value)[:77] + "..."
                raise ValueError(
                    f"{name}={shown} is not accepted by {self.model}{hint}; it accepts: {accepted}"
                )
        for key, value in (self.extra_body or {}).items():
            if profile is not GENERIC and key in KNOWN_FIELDS and not profile.accepts(key):
                hint = ""
                if key == "response_format" and profile.structured_output == "tool_call":
                    hint = " (it has no JSON mode: structured output comes from a forced tool call)"
                raise ValueError(f"extra_body {key}={value!r} is not accepted by {self.model}{hint}")

    def to_body(self) -> dict[str, Any]:
        """The JSON body to send: set fields only, ``extra_body`` merged on top."""
        body = self.model_dump(mode="json", exclude_none=True)
        body.update(self.extra_body or {})
        return body

    @property
    def is_named_tool_call(self) -> bool:
        return isinstance(self.tool_choice, NamedToolChoice)


PARAMETER_NAMES: frozenset[str] = frozenset(ChatRequest.model_fields) - {"model", "messages"}

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
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}


def _allowed_range(loc: str) -> str | None:
    key = loc.split(".", 1)[0] if loc.startswith("logit_bias.") else loc
    bounds = RANGES.get(key)
    if bounds is None:
        return None
    low, high = bounds
    return f"allowed: {low} to {high}" if high is not None else f"allowed: {low} or more"


def _describe(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ()) if not str(part).startswith("function-"))
    value = error.get("input")
    kind = error.get("type")
    if kind == "extra_forbidden":
        if "." not in loc:
            allowed = ", ".join(sorted(PARAMETER_NAMES))
            return f"unknown parameter {loc!r}: not sent; allowed: {allowed} (or extra_body for other models)"
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
    bounds = _allowed_range(loc) if kind in _BOUND_ERRORS else None
    if bounds:
        return f"{loc}={shown} is out of range; {bounds}"
    if kind == "string_pattern_mismatch" and loc.endswith("function.name"):
        return f"{loc}={shown}: a tool name is 1-64 characters of letters, digits, '_' and '-'"
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
        problems = "; ".join(_describe(e) for e in _dedupe_union_errors(exc.errors()))
        raise InvalidRequestError(f"invalid chat request: {problems}") from None


def _dedupe_union_errors(errors: list[Any]) -> list[Any]:
    """Pydantic reports one error per union branch; keep the most specific per location."""
    best: dict[tuple[Any, ...], Any] = {}
    for error in errors:
        loc = tuple(p for p in error["loc"] if not isinstance(p, str) or not _is_branch_tag(p))
        current = best.get(loc)
        if current is None or (
            current["type"] in {"literal_error", "string_type"}
            and error["type"]
            not in {
                "literal_error",
                "string_type",
            }
        ):
            best[loc] = {**error, "loc": loc}
    return list(best.values())


def _is_branch_tag(part: str) -> bool:
    return part.startswith(
        ("function-", "literal[", "list[", "str", "NamedToolChoice", "AllowedToolsChoice")
    ) or part in {"system", "user", "assistant", "tool"}
