"""Model profiles: what each family of the Qwen line accepts and how it behaves, in one place.

Per family: the top-level request fields of its published schema, its context window, how it gives
structured output, its stream quirks, its price key and what to do when its price is unknown. The
figures come from the service's published schemas and model list (docs/protocol.md, "Models").
A model the provider does not know gets ``GENERIC``: the flagship's field set, no known window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StructuredMode = Literal["tool_call", "response_format"]
UnknownPrice = Literal["dearest", "refuse"]

# Every profile also takes ``model`` and ``messages``.
_MAX_FIELDS = frozenset(
    {
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "normalize_tool_schemas",
        "parallel_tool_calls",
        "reasoning",
        "reasoning_effort",
        "stop",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
    }
)
_SAMPLING = frozenset({"frequency_penalty", "presence_penalty", "seed", "prediction"})
_SEARCH = frozenset({"enable_search", "search_options"})


@dataclass(frozen=True)
class ModelProfile:
    """What one model family accepts and how it behaves."""

    family: str
    model_ids: tuple[str, ...]
    fields: frozenset[str]
    context_window: int | None
    structured_output: StructuredMode
    index0_tool_calls: bool = True  # some backends stream every parallel call on index 0
    unknown_price: UnknownPrice = "dearest"

    @property
    def price_key(self) -> str:
        """The id its price is looked up under."""
        return self.model_ids[0]

    def accepts(self, field: str) -> bool:
        return field in self.fields

    def aliases(self) -> tuple[str, ...]:
        """Every id it answers to: the full ids and the ids without the vendor prefix."""
        return (*self.model_ids, *(m.split("/", 1)[-1] for m in self.model_ids))


PROFILES: tuple[ModelProfile, ...] = (
    ModelProfile(
        "qwen3.8-max",
        ("alibaba/qwen3.8-max",),
        _MAX_FIELDS | _SEARCH | {"provider"},
        1_000_000,
        "tool_call",
    ),
    ModelProfile("qwen3.7-max", ("alibaba/qwen3.7-max",), _MAX_FIELDS, 1_000_000, "tool_call"),
    ModelProfile(
        "qwen3.7-plus",
        ("alibaba/qwen3.7-plus",),
        (_MAX_FIELDS - {"logit_bias", "logprobs", "top_logprobs", "reasoning", "reasoning_effort"})
        | _SAMPLING
        | _SEARCH
        | {"enable_thinking", "thinking_budget", "repetition_penalty", "response_format"},
        1_000_000,
        "response_format",
    ),
    ModelProfile(
        "qwen3.6-plus",
        ("alibaba/qwen3.6-plus", "alibaba/qwen3.6-flash"),
        (_MAX_FIELDS - {"logit_bias", "reasoning", "reasoning_effort"})
        | _SAMPLING
        | _SEARCH
        | {"repetition_penalty", "response_format"},
        1_000_000,
        "response_format",
    ),
    ModelProfile(
        "qwen3.5-flash",
        ("alibaba/qwen3.5-flash",),
        (_MAX_FIELDS - {"max_completion_tokens"})
        | _SAMPLING
        | _SEARCH
        | {"echo", "min_p", "repetition_penalty", "response_format", "top_a", "top_k"},
        262_144,
        "response_format",
    ),
    ModelProfile(
        "qwen3.8-27b",
        ("alibaba/qwen3.8-27b",),
        (
            _MAX_FIELDS
            - {"logit_bias", "normalize_tool_schemas", "parallel_tool_calls", "tool_choice", "tools"}
        )
        | (_SAMPLING - {"prediction"})
        | {"provider", "repetition_penalty", "response_format", "top_k"},
        262_144,
        "response_format",
    ),
    ModelProfile(
        "qwen3.6-27b",
        ("alibaba/qwen3.6-27b",),
        (_MAX_FIELDS - {"max_completion_tokens", "normalize_tool_schemas", "reasoning"})
        | _SAMPLING
        | {"response_format"},
        262_144,
        "response_format",
    ),
)

GENERIC = ModelProfile("generic", ("",), _MAX_FIELDS, None, "tool_call")

# Fields some profile of the line accepts: in ``extra_body`` they are checked against the model's.
KNOWN_FIELDS = frozenset().union(*(profile.fields for profile in PROFILES))

_BY_ID = {alias: profile for profile in PROFILES for alias in profile.aliases()}


def profile_for(model: str) -> ModelProfile:
    """The profile of ``model`` (a full id or one without the vendor prefix); ``GENERIC`` if unknown."""
    return _BY_ID.get(model) or _BY_ID.get(model.split("/", 1)[-1]) or GENERIC
