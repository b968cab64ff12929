"""Stream assembly: chat.completion.chunk events -> the ChatCompletion a non-streamed call returns.

Tool calls are merged from their fragments, including the Qwen quirk of sending every parallel call
on index 0 (a new id, or another name, on a used index starts a new call); usage and ``meta`` come
from whichever chunk carries them.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_qwen.client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkToolCall,
)


class _ToolCallState:
    __slots__ = ("arguments", "extra", "id", "name", "type")

    def __init__(self) -> None:
        self.id = ""
        self.type = ""
        self.name = ""
        self.arguments: list[str] = []
        self.extra: dict[str, Any] = {}

    def to_wire(self) -> dict[str, Any]:
        function = {"name": self.name, "arguments": "".join(self.arguments)}
        return {**self.extra, "id": self.id, "type": self.type or "function", "function": function}


class _ChoiceState:
    __slots__ = ("by_index", "calls", "content", "finish_reason", "logprobs", "reasoning", "refusal", "role")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.calls: list[_ToolCallState] = []
        self.by_index: dict[int, _ToolCallState] = {}
        self.finish_reason: str | None = None
        self.logprobs: dict[str, Any] | None = None

    def add_tool_call(self, fragment: ChunkToolCall) -> None:
        """Merge one fragment; a new id or another name on a used index starts a new call (Qwen quirk)."""
        function = fragment.function
        name = function.name if function is not None else None
        current = self.by_index.get(fragment.index)
        if (
            current is None
            or (fragment.id and current.id and fragment.id != current.id)
            or (name and current.name and name != current.name)
        ):
            current = _ToolCallState()
            self.calls.append(current)
            self.by_index[fragment.index] = current
        if fragment.id:
            current.id = fragment.id
        if fragment.type:
            current.type = fragment.type
        if name and not current.name:
            current.name = name
        if function is not None and function.arguments:
            current.arguments.append(function.arguments)
        if fragment.model_extra:
            current.extra.update(fragment.model_extra)

    def add(self, choice: ChunkChoice) -> None:
        delta = choice.delta
        if delta.role:
            self.role = delta.role
        if delta.content is not None:
            self.content.append(delta.content)
        if delta.reasoning_content:
            self.reasoning.append(delta.reasoning_content)
        if delta.refusal:
            self.refusal.append(delta.refusal)
        for fragment in delta.tool_calls or ():
            self.add_tool_call(fragment)
        if choice.finish_reason:
            self.finish_reason = choice.finish_reason
        if isinstance(choice.logprobs, dict):
            if self.logprobs is None:
                self.logprobs = {}
            for key, value in choice.logprobs.items():
                if isinstance(value, list):
                    self.logprobs.setdefault(key, []).extend(value)
                elif value is not None:
                    self.logprobs[key] = value

    def to_wire(self, index: int) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": self.role,
            "content": "".join(self.content) if self.content else None,
        }
        if self.reasoning:
            message["reasoning_content"] = "".join(self.reasoning)
        if self.refusal:
            message["refusal"] = "".join(self.refusal)
        if self.calls:
            message["tool_calls"] = [call.to_wire() for call in self.calls]
        return {
            "index": index,
            "message": message,
            "finish_reason": self.finish_reason,
            "logprobs": self.logprobs,
        }


class StreamAssembler:
    """Folds chunks into the ChatCompletion a non-streamed call would have returned."""

    def __init__(self) -> None:
        self.chunks = 0
        self._id = ""
        self._created: int | float = 0
        self._model = ""
        self._choices: dict[int, _ChoiceState] = {}
        self._usage: Any = None
        self._meta: Any = None
        self._extra: dict[str, Any] = {}

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has a finish reason (and at least one was seen)."""
        return bool(self._choices) and all(c.finish_reason for c in self._choices.values())

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.chunks += 1
        if chunk.id and not self._id:
            self._id = chunk.id
        if chunk.created and not self._created:
            self._created = chunk.created
        if chunk.model and not self._model:
            self._model = chunk.model
        for choice in chunk.choices:
            state = self._choices.get(choice.index)
            if state is None:
                state = self._choices[choice.index] = _ChoiceState()
            state.add(choice)
        if chunk.usage is not None:
            self._usage = chunk.usage
        if chunk.meta is not None:
            self._meta = chunk.meta
        if chunk.model_extra:
            self._extra.update(chunk.model_extra)

    def completion(self) -> ChatCompletion:
        """The completion assembled from the chunks so far."""
        completion = ChatCompletion.model_validate(
            {
                **self._extra,
                "id": self._id,
                "object": "chat.completion",
                "created": self._created,
                "model": self._model,
                "choices": [self._choices[i].to_wire(i) for i in sorted(self._choices)],
            }
        )
        # Already-parsed models: set, not re-validated.
        completion.usage = self._usage
        completion.meta = self._meta
        return completion


def chunk_from_completion(completion: ChatCompletion) -> ChatCompletionChunk:
    """One chunk carrying a whole completion (a server that answered a stream request with JSON)."""
    choices = []
    for choice in completion.choices:
        message = choice.message
        delta: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.reasoning_content:
            delta["reasoning_content"] = message.reasoning_content
        if message.tool_calls:
            delta["tool_calls"] = [
                {"index": i, **call.model_dump(exclude_none=True)}
                for i, call in enumerate(message.tool_calls)
            ]
        choices.append({"index": choice.index, "delta": delta, "finish_reason": choice.finish_reason})
    return ChatCompletionChunk.model_validate(
        {
            "id": completion.id,
            "created": completion.created,
            "model": completion.served_model,
            "choices": choices,
            "usage": completion.usage.model_dump() if completion.usage else None,
            "meta": completion.meta.model_dump() if completion.meta else None,
        }
    )
