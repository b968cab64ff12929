"""Field specs of the chat-completions request: messages, tools and the object-valued parameters.

The shapes of the published request schemas (docs/protocol.md, "Request body"), each strict: an unknown
key is an error, because the gateway would drop it silently. ``request.ChatRequest`` puts them together
and decides, per model profile, which top-level fields a request may carry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic import Strict as StrictType
from pydantic_core import PydanticCustomError

TOOL_NAME_PATTERN = r"^[a-zA-Z0-9_-]{1,64}$"

NUMBER_NOT_BOOL = "number_not_bool"
"""The error type of a boolean given where a number is expected (``request._describe`` words it)."""


def _not_a_bool(kind: str) -> Callable[[Any], Any]:
    def refuse_bool(value: Any) -> Any:
        if isinstance(value, bool):  # bool is an int subclass: pydantic would take True as 1
            raise PydanticCustomError(NUMBER_NOT_BOOL, "a boolean is not {kind}", {"kind": kind})
        return value

    return refuse_bool


# Numbers that refuse booleans (a numeric string from a rendered template is still read as its number),
# and booleans that refuse everything else ("yes", 1, "true"): never bool <-> number.
Int = Annotated[int, BeforeValidator(_not_a_bool("an integer"))]
Float = Annotated[float, BeforeValidator(_not_a_bool("a number"))]
Number = Annotated[int | float, BeforeValidator(_not_a_bool("a number"))]
Bool = Annotated[bool, StrictType()]

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
    strict: Bool | None = None

    @model_validator(mode="after")
    def _refs_resolve(self) -> FunctionDefinition:
        problem = dangling_ref(self.parameters) if self.parameters else None
        if problem:
            raise ValueError(f"tool {self.name!r} parameters: {problem}; nothing was sent")
        return self


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

    include_usage: Bool


class Reasoning(Strict):
    """``reasoning``: an effort or a token budget (not both), and whether to leave it out."""

    effort: ReasoningEffort | None = None
    max_tokens: Int | None = Field(default=None, ge=1)
    exclude: Bool | None = None

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
    strict: Bool | None = None

    @model_validator(mode="after")
    def _refs_resolve(self) -> JsonSchemaFormat:
        problem = dangling_ref(self.schema_) if self.schema_ else None
        if problem:
            raise ValueError(f"response_format schema {self.name!r}: {problem}; nothing was sent")
        return self

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

    forced_search: Bool | None = None
    search_strategy: Literal["turbo", "max", "agent"] | None = None
    enable_source: Bool | None = None


# -- JSON schemas of tools and response formats: every $ref must resolve -----------------------

# Where JSON Schema keeps sub-schemas: maps of them, lists of them, and single ones.
SCHEMA_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
SCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
SCHEMA_ONE = frozenset(
    {"items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames",
     "unevaluatedProperties", "unevaluatedItems", "additionalItems"}
)  # fmt: skip


def dangling_ref(schema: Mapping[str, Any]) -> str | None:
    """What is wrong with the first ``$ref`` of ``schema`` that does not resolve (local
    ``#/$defs/...`` ones included, with ``referencing``, as jsonschema would), or None."""
    from referencing import Registry
    from referencing.exceptions import NoSuchAnchor, PointerToNowhere, Unresolvable
    from referencing.jsonschema import DRAFT202012, specification_with

    dialect = schema.get("$schema")
    spec = specification_with(dialect, default=DRAFT202012) if isinstance(dialect, str) else DRAFT202012
    root = spec.create_resource(dict(schema))
    registry: Registry[Any] = Registry().with_resource(root.id() or "", root).crawl()
    defined = sorted({**schema.get("definitions", {}), **schema.get("$defs", {})})

    def check(node: Any, resolver: Any, path: tuple[str, ...]) -> str | None:
        if not isinstance(node, Mapping):
            return None
        if path and spec.id_of(node):  # an embedded schema with its own $id: refs are relative to it
            resolver = resolver.in_subresource(spec.create_resource(node))
        why = None
        if "$ref" in node:
            try:
                target = resolver.lookup(node["$ref"]).contents if isinstance(node["$ref"], str) else None
                if not isinstance(target, (Mapping, bool)):
                    why = f"points at {target!r:.60}, which is not a schema"
            except PointerToNowhere:
                why = "points at nothing in the schema"
            except NoSuchAnchor:
                why = "names an anchor the schema does not define"
            except Unresolvable:
                why = "is not in the schema (no file or URL is ever fetched)"
        if why:
            return (
                f"$ref {node['$ref']!r} at {'.'.join(path) or '(root)'} {why}; a $ref must point into the "
                f"schema itself, e.g. '#/$defs/Name' (defined under $defs/definitions: {defined or 'none'})"
            )
        for key, value in node.items():
            subs: list[tuple[str, Any]] = []
            if key in SCHEMA_MAPS and isinstance(value, Mapping):
                subs = [(f"{key}.{name}", sub) for name, sub in value.items()]
            elif key in SCHEMA_LISTS and isinstance(value, list):
                subs = [(f"{key}.{index}", sub) for index, sub in enumerate(value)]
            elif key in SCHEMA_ONE:
                subs = [(key, value)]
            for where, sub in subs:
                found = check(sub, resolver, (*path, where))
                if found:
                    return found
        return None

    return check(root.contents, registry.resolver(base_uri=root.id() or ""), ())


# -- paths, text and errors of a request ------------------------------------------------------


def text_of(content: Content) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)


def field_path(path: Sequence[Any]) -> str:
    """A field path as written in Python: ``messages[1].content``, ``reasoning.max_tokens``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f"{'.' if out else ''}{part}"
    return out


def unencodable(value: Any, path: tuple[Any, ...] = ()) -> str | None:
    """Where the first text that UTF-8 cannot encode is (field and character), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return (
                f"{field_path(path) or 'text'}: character {exc.start} ({value[exc.start]!r}) cannot be "
                "encoded as UTF-8 (a lone surrogate: text decoded with errors='surrogateescape' or a split "
                "surrogate pair); fix or drop it; nothing was sent"
            )
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            found = unencodable(key, (*path, "(key)")) or unencodable(item, (*path, key))
            if found:
                return found
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = unencodable(item, (*path, index))
            if found:
                return found
    return None


_VAGUE = frozenset({"literal_error", "string_type"})
_BRANCH_TAGS = frozenset({"str", "int", "float", "system", "user", "assistant", "tool"})


def dedupe_union_errors(errors: list[Any]) -> list[Any]:
    """Pydantic reports one error per union branch; keep the most specific per location."""
    best: dict[tuple[Any, ...], Any] = {}
    for error in errors:
        loc = _clean_loc(error["loc"])
        current = best.get(loc)
        if current is None or (current["type"] in _VAGUE and error["type"] not in _VAGUE):
            best[loc] = {**error, "loc": loc}
    return list(best.values())


def _clean_loc(loc: Sequence[Any]) -> tuple[Any, ...]:
    """The location without pydantic's union-branch tags (a discriminator's value, a branch's type)."""
    parts = list(loc)
    if len(parts) > 1 and parts[0] == "response_format":
        del parts[1]  # the ``type`` tag of its discriminated union
    return tuple(p for p in parts if not isinstance(p, str) or not _is_branch_tag(p))


def _is_branch_tag(part: str) -> bool:
    prefixes = ("function-", "literal[", "list[", "NamedToolChoice", "AllowedToolsChoice")
    return part.startswith(prefixes) or part in _BRANCH_TAGS
