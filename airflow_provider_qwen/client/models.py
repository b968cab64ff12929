"""Response types of the chat-completions endpoint, parsed leniently.

Unknown keys are kept (``extra="allow"``) and unknown finish reasons are plain strings: the
gateway fronts several vendors and adds fields without notice. ``ChatCompletion`` keeps the
wire fields and adds the conveniences of the public contract (``content``, ``cost``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from airflow_provider_qwen.client.pricing import Cost


class _Lenient(BaseModel):
    """Unknown keys kept; ``null`` where a field has a non-null default means that default.

    Some backends send ``"id": null``, ``"delta": null`` or ``"choices": null``; one such chunk must
    not fail a paid stream that cannot be retried.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)
    _null_means_default: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        keys = set()
        for name, info in cls.model_fields.items():
            if info.default_factory is not None or (info.default is not None and not info.is_required()):
                keys.update({name, info.alias or name})
        cls._null_means_default = frozenset(keys)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict) and None in data.values():
            return {k: v for k, v in data.items() if v is not None or k not in cls._null_means_default}
        return data


class FunctionCall(_Lenient):
    name: str = ""
    arguments: str = ""


class ToolCall(_Lenient):
    id: str = ""
    type: str = "function"
    function: FunctionCall = Field(default_factory=FunctionCall)


class ResponseMessage(_Lenient):
    role: str = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(_Lenient):
    index: int = 0
    message: ResponseMessage = Field(default_factory=ResponseMessage)
    finish_reason: str | None = None
    logprobs: Any = None


class CompletionTokensDetails(_Lenient):
    reasoning_tokens: int | None = None


class PromptTokensDetails(_Lenient):
    cached_tokens: int | None = None


class Usage(_Lenient):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    completion_tokens_details: CompletionTokensDetails | None = None
    prompt_tokens_details: PromptTokensDetails | None = None

    @property
    def reasoning_tokens(self) -> int:
        details = self.completion_tokens_details
        return (details.reasoning_tokens or 0) if details else 0

    @property
    def cached_tokens(self) -> int:
        details = self.prompt_tokens_details
        return (details.cached_tokens or 0) if details else 0


class MetaUsage(_Lenient):
    credits_used: int | None = None
    usd_spent: Decimal | None = None

    @property
    def cost(self) -> Cost | None:
        """The reported cost; None when the service reported neither figure or an impossible one
        (negative, not finite): then the cost is estimated instead."""
        try:
            return Cost.from_reported(self.credits_used, self.usd_spent)
        except (ValueError, ArithmeticError):
            return None


class Meta(_Lenient):
    usage: MetaUsage | None = None


@dataclass(frozen=True)
class CallInfo:
    """What the call added to the answer, from the request and the headers: JSON round-trips it.

    ``unconfirmed_tries`` counts earlier tries of the call that failed after being sent (the service
    may have charged them); ``cost`` is the answer's own (reported, else estimated).
    """

    requested_model: str = ""
    inference_id: str | None = None
    client_request_id: str | None = None
    cost: Cost = field(default_factory=Cost)
    unconfirmed_tries: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "requested_model": self.requested_model,
            "inference_id": self.inference_id,
            "client_request_id": self.client_request_id,
            "cost": self.cost.to_dict(),
            "unconfirmed_tries": self.unconfirmed_tries,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallInfo:
        return cls(
            requested_model=str(data.get("requested_model") or ""),
            inference_id=data.get("inference_id"),
            client_request_id=data.get("client_request_id"),
            cost=Cost.from_dict(data.get("cost") or {}),
            unconfirmed_tries=int(data.get("unconfirmed_tries") or 0),
        )


class ChatCompletion(_Lenient):
    """One chat completion, whether it came whole or was assembled from a stream.

    ``call`` is set by the client that made the call; it is not a wire field (``to_wire`` leaves it
    out, ``to_dict``/``from_dict`` carry both across a process boundary).
    """

    id: str = ""
    object: str = "chat.completion"
    created: int | float = 0
    served_model: str = Field(default="", alias="model")
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    meta: Meta | None = None
    call: CallInfo | None = Field(default=None, exclude=True)

    @field_validator("call", mode="before")
    @classmethod
    def _never_from_the_wire(cls, value: Any) -> CallInfo | None:
        return value if isinstance(value, CallInfo) else None

    @property
    def reported_cost(self) -> Cost | None:
        """The cost the body reports (``meta.usage``), if any."""
        return self.meta.usage.cost if self.meta is not None and self.meta.usage is not None else None

    @property
    def model(self) -> str:
        """The model id as requested (the wire ``model`` may lack the vendor prefix)."""
        return (self.call.requested_model if self.call else "") or self.served_model

    @property
    def inference_id(self) -> str | None:
        return self.call.inference_id if self.call else None

    @property
    def client_request_id(self) -> str | None:
        return self.call.client_request_id if self.call else None

    @property
    def unconfirmed_tries(self) -> int:
        """Earlier tries of this call that failed after being sent (the service may have charged them)."""
        return self.call.unconfirmed_tries if self.call else 0

    @property
    def cost(self) -> Cost:
        """The answer's cost as the client bound it; unbound, what the body reports (else 0, estimated)."""
        if self.call is not None:
            return self.call.cost
        return self.reported_cost or Cost(estimated=True)

    @property
    def message(self) -> ResponseMessage:
        return self.choices[0].message if self.choices else ResponseMessage()

    @property
    def content(self) -> str | None:
        return self.message.content

    @property
    def reasoning_content(self) -> str | None:
        return self.message.reasoning_content

    @property
    def refusal(self) -> str | None:
        return self.message.refusal

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.message.tool_calls or []

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason if self.choices else None

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape the service sent (wire names, unknown keys kept)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def to_dict(self) -> dict[str, Any]:
        """The wire answer and the call's info, JSON-safe (a trigger event, a journal)."""
        return {"completion": self.to_wire(), "call": self.call.to_dict() if self.call else None}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatCompletion:
        completion = cls.model_validate(data["completion"])
        if data.get("call") is not None:
            completion.call = CallInfo.from_dict(data["call"])
        return completion


class ChunkFunction(_Lenient):
    name: str | None = None
    arguments: str | None = None


class ChunkToolCall(_Lenient):
    index: int = 0
    id: str | None = None
    type: str | None = None
    function: ChunkFunction | None = None


class Delta(_Lenient):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    refusal: str | None = None
    tool_calls: list[ChunkToolCall] | None = None


class ChunkChoice(_Lenient):
    index: int = 0
    delta: Delta = Field(default_factory=Delta)
    finish_reason: str | None = None
    logprobs: Any = None


class ChatCompletionChunk(_Lenient):
    """One ``chat.completion.chunk`` event of a stream."""

    id: str = ""
    object: str = "chat.completion.chunk"
    created: int | float = 0
    model: str = ""
    choices: list[ChunkChoice] = Field(default_factory=list)
    usage: Usage | None = None
    meta: Meta | None = None
    error: Any = None
