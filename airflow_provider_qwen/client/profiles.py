"""Model profiles: what each model of the Qwen line accepts and how it behaves, in one place.

Per model family: the top-level request fields of its published request schema, its context window,
how it gives structured output, its stream quirks, the id its price is looked up under and what to do
when that price is unknown. The figures are copied from the service's published schemas and model
list (docs/protocol.md, "Models"); nothing is read at run time. A model without a profile gets
``GENERIC``: today's flagship field set and no known window, so its requests keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

StructuredMode = Literal["tool_call", "response_format"]
"""How a model gives structured output: a forced tool call, or a json_schema ``response_format``."""
"""What an estimate does when the model's price is unknown: bill at the dearest known price, or refuse."""
VENDOR = "alibaba/"
"""The vendor prefix of the line's ids; an id without it is an alias."""

FLAGSHIP_FIELDS: frozenset[str] = frozenset(
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
"""The top-level fields of the qwen3.7-max schema besides model and messages; also ``GENERIC``'s."""
_PENALTIES = frozenset({"frequency_penalty", "presence_penalty", "seed"})
_SEARCH = frozenset({"enable_search", "search_options"})
_QWEN36_FIELDS = (  # qwen3.6-plus and qwen3.6-flash publish the same request schema
    (FLAGSHIP_FIELDS - {"logit_bias", "reasoning", "reasoning_effort"})
    | _PENALTIES
    | _SEARCH
    | {"prediction", "repetition_penalty", "response_format"}
)


@dataclass(frozen=True)
class ModelProfile:
    """What one model family accepts and how it behaves; ``fields`` excludes ``model`` and ``messages``."""

    family: str
    model_ids: tuple[str, ...]
    fields: frozenset[str]
    context_window: int | None
    structured_output: StructuredMode
    index0_tool_calls: bool = True  # a backend may stream every parallel tool call on index 0

    def __post_init__(self) -> None:
        needed = "tools" if self.structured_output == "tool_call" else "response_format"
        if needed not in self.fields:
            raise ValueError(
                f"profile {self.family}: structured_output={self.structured_output!r} needs {needed}"
            )

    @property
    def aliases(self) -> tuple[str, ...]:
        """The ids without the vendor prefix (the service answers with those in ``model``)."""
        return tuple(m.removeprefix(VENDOR) for m in self.model_ids if m.startswith(VENDOR))

    @property
    def names(self) -> tuple[str, ...]:
        """Every name it answers to: the full ids, then the aliases."""
        return (*self.model_ids, *self.aliases)

    def accepts(self, field: str) -> bool:
        """Whether ``field`` is a top-level request field of its published schema."""
        return field in self.fields or field in ("model", "messages")


def _profile(
    name: str,
    fields: frozenset[str],
    window: int,
    structured: StructuredMode,
) -> ModelProfile:
    model = VENDOR + name
    return ModelProfile(name, (model,), fields, window, structured)


PROFILES: tuple[ModelProfile, ...] = (
    _profile("qwen3.8-max", FLAGSHIP_FIELDS | _SEARCH | {"provider"}, 1_000_000, "tool_call"),
    _profile("qwen3.7-max", FLAGSHIP_FIELDS, 1_000_000, "tool_call"),
    _profile(
        "qwen3.7-plus",
        (FLAGSHIP_FIELDS - {"logit_bias", "logprobs", "top_logprobs", "reasoning", "reasoning_effort"})
        | _PENALTIES
        | _SEARCH
        | {"enable_thinking", "prediction", "repetition_penalty", "response_format", "thinking_budget"},
        1_000_000,
        "response_format",
    ),
    _profile(
        "qwen3.6-plus",
        _QWEN36_FIELDS,
        1_000_000,
        "response_format",
    ),
    _profile(
        "qwen3.6-flash",
        _QWEN36_FIELDS,
        1_000_000,
        "response_format",
    ),
    _profile(
        "qwen3.5-flash",
        (FLAGSHIP_FIELDS - {"max_completion_tokens"})
        | _PENALTIES
        | _SEARCH
        | {"echo", "min_p", "prediction", "repetition_penalty", "response_format", "top_a", "top_k"},
        262_144,
        "response_format",
    ),
    _profile(
        "qwen3.8-27b",
        (
            FLAGSHIP_FIELDS
            - {"logit_bias", "normalize_tool_schemas", "parallel_tool_calls", "tool_choice", "tools"}
        )
        | _PENALTIES
        | {"provider", "repetition_penalty", "response_format", "top_k"},
        262_144,
        "response_format",
    ),
    _profile(
        "qwen3.6-27b",
        (FLAGSHIP_FIELDS - {"max_completion_tokens", "normalize_tool_schemas", "reasoning"})
        | _PENALTIES
        | {"prediction", "response_format"},
        262_144,
        "response_format",
    ),
)
"""The profiled models of the line, one per published request schema (and so one model id each)."""

# The other chat models the service lists (aimlapi/qwen-models.md), without a published schema of
# their own: the flagship's fields, their own context window.
LISTED_WINDOWS: dict[str, int] = {
    "Qwen/Qwen2.5-7B-Instruct-Turbo": 32_000,
    "qwen-plus": 131_000,
    "qwen-turbo": 1_000_000,
    "alibaba/qwen3-32b": 131_000,
    "alibaba/qwen3-coder-480b-a35b-instruct": 262_000,
    "alibaba/qwen3-235b-a22b-thinking-2507": 262_000,
    "alibaba/qwen3-next-80b-a3b-instruct": 262_000,
    "alibaba/qwen3-next-80b-a3b-thinking": 262_000,
    "alibaba/qwen3-max-preview": 258_000,
    "alibaba/qwen3-max-instruct": 262_000,
    "alibaba/qwen3.5-plus-20260218": 1_000_000,
    "alibaba/qwen3.6-35b-a3b": 262_144,
    "alibaba/qwen3.6-max-preview": 262_144,
    "alibaba/qwen3.8-2.4t-a95b": 262_144,
    "qwen-max-2025-01-25": 32_000,
    "qwen-max": 32_000,
    "Qwen/Qwen3-235B-A22B-fp8-tput": 32_000,
    "Qwen/Qwen2.5-72B-Instruct-Turbo": 32_000,
    "Qwen/Qwen2.5-Coder-32B-Instruct": 131_000,
    "Qwen/QwQ-32B": 131_000,
    "Qwen/Qwen2-72B-Instruct": 32_000,
    "Qwen/Qwen-14B-Chat": 8_000,
    "Qwen/Qwen1.5-0.5B": 32_000,
    "Qwen/Qwen1.5-1.8B": 32_000,
    "Qwen/Qwen1.5-4B": 32_000,
    "Qwen/Qwen1.5-1.8B-Chat": 32_000,
    "Qwen/Qwen1.5-4B-Chat": 32_000,
    "Qwen/Qwen1.5-7B-Chat": 32_000,
    "Qwen/Qwen1.5-14B-Chat": 32_000,
    "qwen/qvq-72b-preview": 32_000,
}

LISTED: tuple[ModelProfile, ...] = tuple(
    ModelProfile(model.removeprefix(VENDOR), (model,), FLAGSHIP_FIELDS, window, "tool_call")
    for model, window in LISTED_WINDOWS.items()
)
"""The listed models without a schema of their own: the flagship's fields, their window."""

GENERIC = ModelProfile("generic", (), FLAGSHIP_FIELDS, None, "tool_call")
"""The profile of a model the provider does not know: the flagship's fields, no known window."""

KNOWN_FIELDS: frozenset[str] = frozenset().union(*(profile.fields for profile in PROFILES))
"""Every field some profile accepts; in ``extra_body`` such a field is checked against the model's."""

_BY_NAME: dict[str, ModelProfile] = {
    name: profile for profile in (*PROFILES, *LISTED) for name in profile.names
}


def profile_for(model: str) -> ModelProfile:
    """The profile of ``model`` (a full id, or one without the vendor prefix); ``GENERIC`` if unknown."""
    return _BY_NAME.get(model, GENERIC)


def models_accepting(field: str) -> tuple[str, ...]:
    """The ids of the profiled models whose schema has ``field``, in the order of ``PROFILES``."""
    return tuple(p.model_ids[0] for p in PROFILES if field in p.fields)
