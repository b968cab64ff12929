"""RequestBuilder: a task's fixed request parameters, turning messages into validated requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.client.request import ChatRequest


@dataclass(frozen=True)
class RequestBuilder:
    """The model and parameters every request of a task shares (generation parameters, tools ...)."""

    model: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def build(self, messages: Sequence[Mapping[str, Any]], **overrides: Any) -> ChatRequest:
        """Validate one request: the shared parameters, then ``overrides``."""
        from airflow_provider_qwen.client.request import build_request

        return build_request(list(messages), model=self.model, **{**self.params, **overrides})
