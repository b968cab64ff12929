"""Field specs of the chat-completions request: messages, tools and the object-valued parameters.

The shapes of the published request schemas (docs/protocol.md, "Request body"), each strict: an unknown
key is an error, because the gateway would drop it silently. ``request.ChatRequest`` puts them together
and decides, per model profile, which top-level fields a request may carry.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

ReasoningEffort = Literal["low", "medium", "high"]


class Strict(BaseModel):
    """A schema object that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid")


class TextPart(Strict):
    """One text part of a message's content."""

    type: Literal["text"] = "text"
    text: str


Content = str | list[TextPart]


class SystemMessage(Strict):
    """A system message."""

    role: Literal["system"] = "system"
    content: Content
    name: str | None = None


class UserMessage(Strict):
    """A user message."""

    role: Literal["user"] = "user"
    content: Content
    name: str | None = None


class FunctionCall(Strict):
    """The function and JSON-string arguments of a tool call in history."""

    name: str
    arguments: str


class ToolCallParam(Strict):
    """A tool call in assistant history (what the model asked for in an earlier turn)."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class AssistantMessage(Strict):
    """An assistant turn of history: content, tool calls or both."""

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


class ToolMessage(Strict):
    """A tool's answer to one tool call."""

    role: Literal["tool"] = "tool"
    content: Content
    tool_call_id: str = Field(min_length=1)
    name: str | None = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class FunctionDefinition(Strict):
    """A function the model may call."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Strict):
    """One entry of ``tools``."""

    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(Strict):
    """The function a named tool choice forces."""

    name: str


class NamedToolChoice(Strict):
    """``tool_choice`` forcing one function."""

    type: Literal["function"] = "function"
    function: NamedFunction


class AllowedTools(Strict):
    """The subset of tools an ``allowed_tools`` choice permits."""

    mode: Literal["auto", "required"]
    tools: list[dict[str, Any]]


class AllowedToolsChoice(Strict):
    """``tool_choice`` restricted to some of the tools."""

    type: Literal["allowed_tools"] = "allowed_tools"
    allowed_tools: AllowedTools


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice


class StreamOptions(Strict):
    """``stream_options``: ``include_usage`` asks for the usage chunk."""

    include_usage: bool


class Reasoning(Strict):
    """``reasoning``: an effort or a token budget (not both), and whether to leave it out."""

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


# -- fields only some models of the line take (the -plus, -flash and open-weight schemas) ----------


class JsonSchemaFormat(Strict):
    """The ``json_schema`` of a json_schema response format."""

    name: str = Field(pattern=TOOL_NAME_PATTERN)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")  # ``schema`` is a BaseModel name
    strict: bool | None = None

    @model_serializer(mode="wrap")
    def _wire_names(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        if "schema_" in data:
            data["schema"] = data.pop("schema_")
        return data


class TextFormat(Strict):
    """``response_format`` for plain text (the default)."""

    type: Literal["text"] = "text"


class JsonObjectFormat(Strict):
    """``response_format`` for any JSON object (the prompt must ask for JSON)."""

    type: Literal["json_object"] = "json_object"


class JsonSchemaResponseFormat(Strict):
    """``response_format`` for JSON that follows a schema."""

    type: Literal["json_schema"] = "json_schema"
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class Prediction(Strict):
    """``prediction``: content the answer is expected to repeat largely (a predicted output)."""

    type: Literal["content"] = "content"
    content: Content


class SearchOptions(Strict):
    """``search_options`` of Alibaba Model Studio web search."""

    forced_search: bool | None = None
    search_strategy: Literal["turbo", "max", "agent"] | None = None
    enable_source: bool | None = None
