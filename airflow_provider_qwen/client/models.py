"""Response types of the chat-completions endpoint, parsed leniently.

Unknown keys are kept (``extra="allow"``) and unknown finish reasons are plain strings: the
gateway fronts several vendors and adds fields without notice. ``ChatCompletion`` keeps the
wire fields and adds the conveniences of the public contract (``content``, ``cost``, ...).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from airflow_provider_qwen.client.cost import Cost, cost_from_meta


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


class Meta(_Lenient):
    usage: MetaUsage | None = None


class ChatCompletion(_Lenient):
    """One chat completion, whether it came whole or was assembled from a stream."""

    id: str = ""
    object: str = "chat.completion"
    created: int | float = 0
    served_model: str = Field(default="", alias="model")
    choices: list[Choice] = Field(default_factory=list)
    usage: Usage | None = None
    meta: Meta | None = None

    _requested_model: str | None = PrivateAttr(default=None)
    _inference_id: str | None = PrivateAttr(default=None)
    _cost: Cost | None = PrivateAttr(default=None)
    _unconfirmed_tries: int = PrivateAttr(default=0)

    def bind(
        self,
        *,
        requested_model: str | None,
        inference_id: str | None,
        cost: Cost | None = None,
        unconfirmed_tries: int = 0,
    ) -> ChatCompletion:
        """Attach what comes from the request and the headers, not the body."""
        self._requested_model = requested_model
        self._inference_id = inference_id
        self._cost = cost
        self._unconfirmed_tries = unconfirmed_tries
        return self

    @property
    def model(self) -> str:
        """The model id as requested (the wire ``model`` may lack the vendor prefix)."""
        return self._requested_model or self.served_model

    @property
    def inference_id(self) -> str | None:
        return self._inference_id

    @property
    def unconfirmed_tries(self) -> int:
        """Earlier tries of this call that failed after being sent (the service may have charged them)."""
        return self._unconfirmed_tries

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

    @property
    def cost(self) -> Cost:
        """Reported cost where the service gave one, otherwise an estimate marked ``estimated``."""
        if self._cost is None:
            self._cost = cost_from_meta(self.meta.usage if self.meta else None) or Cost.estimate(
                self.model, self.usage
            )
        return self._cost

    def to_wire(self) -> dict[str, Any]:
        """The JSON shape the service sent (wire names, unknown keys kept)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


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
