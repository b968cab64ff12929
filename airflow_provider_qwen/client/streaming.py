"""Streaming: SSE events (parsed by ``httpx-sse``) -> ChatCompletionChunk -> one assembled ChatCompletion.

The assembled completion is the one a non-streamed call would have returned: content, reasoning,
tool calls merged from their fragments, usage and ``meta`` cost from whichever chunk carried them.
``[DONE]`` or a clean end of the body ends a stream; a body cut short, an unparsable event or an
``error`` chunk raises StreamError whose ``.partial`` is the completion assembled so far.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any

import httpx
from httpx_sse import EventSource, ServerSentEvent
from pydantic import ValidationError

from airflow_provider_qwen.client.errors import (
    InvalidResponseError,
    StreamError,
    error_message_from_body,
)
from airflow_provider_qwen.client.models import (
    ChatCompletion,
    ChatCompletionChunk,
    ChunkChoice,
    ChunkToolCall,
)

DONE = "[DONE]"

# Binds an assembled completion to its call (requested model, inference id, cost).
Finisher = Callable[[ChatCompletion, httpx.Headers], ChatCompletion]


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


class _StreamState:
    """What the sync and async streams share: event handling, assembly and error construction."""

    def __init__(
        self, finish: Finisher, client_request_id: str | None, redact: Callable[[str], str] | None
    ) -> None:
        self._finish = finish
        self._redact = redact or _same
        self.client_request_id = client_request_id
        self.assembler = StreamAssembler()
        self.response: httpx.Response | None = None
        self.seen_done = False
        self._completion: ChatCompletion | None = None

    @property
    def inference_id(self) -> str | None:
        return self.response.headers.get("x-inference-id") if self.response is not None else None

    @property
    def completion(self) -> ChatCompletion:
        """The assembled completion; available once the stream has been read to its end."""
        if self._completion is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._completion

    def partial(self) -> ChatCompletion:
        headers = self.response.headers if self.response is not None else httpx.Headers()
        return self._finish(self.assembler.completion(), headers)

    def stream_error(self, message: str) -> StreamError:
        error = StreamError(
            self._redact(message), inference_id=self.inference_id, client_request_id=self.client_request_id
        )
        error.partial = self.partial()
        return error

    def body_kind(self, response: httpx.Response) -> str:
        """``"sse"``, or ``"json"`` (a server that ignored ``stream``); anything else is refused."""
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" in content_type:
            return "sse"
        if "json" in content_type:
            return "json"
        raise InvalidResponseError(
            f"a stream request was answered with content-type {content_type!r}, not text/event-stream",
            status_code=response.status_code,
            inference_id=self.inference_id,
            client_request_id=self.client_request_id,
        )

    def whole_answer(self, content: bytes) -> ChatCompletionChunk:
        """A JSON answer to a stream request: accept it as the whole completion, as one chunk."""
        try:
            completion = ChatCompletion.model_validate_json(content)
        except ValidationError:
            completion = None
        if completion is None or not completion.choices:
            message = error_message_from_body(content.decode("utf-8", "replace"), 200)
            raise InvalidResponseError(
                self._redact(
                    f"a stream request was answered with JSON that is not a chat completion: {message}"
                ),
                status_code=200,
                inference_id=self.inference_id,
                client_request_id=self.client_request_id,
            )
        chunk = chunk_from_completion(completion)
        self.assembler.add(chunk)
        self.seen_done = True
        return chunk

    def handle(self, event: ServerSentEvent) -> ChatCompletionChunk | None:
        """One SSE event -> a chunk (None for [DONE] and empty keep-alive events); raises on errors."""
        data = event.data.strip()
        if data == DONE:
            self.seen_done = True
            return None
        if event.event == "error":
            raise self.stream_error(f"the service reported an error mid-stream: {_error_text(data)}")
        if not data:
            return None
        try:
            chunk = ChatCompletionChunk.model_validate_json(data)
        except ValidationError:
            shown = data if len(data) <= 200 else data[:197] + "..."
            raise self.stream_error(f"stream event is not a chat.completion.chunk: {shown!r}") from None
        if chunk.error is not None:
            raise self.stream_error(f"the service reported an error mid-stream: {_error_text(chunk.error)}")
        self.assembler.add(chunk)
        return chunk

    def end(self) -> ChatCompletion:
        """The body ended cleanly: the completion, unless nothing says the answer was complete."""
        if not self.seen_done and not self.assembler.finished:
            raise self.stream_error(
                f"the stream ended after {self.assembler.chunks} chunks without [DONE] or a finish_reason"
            )
        self._completion = self._finish(self.assembler.completion(), self.response.headers)  # type: ignore[union-attr]
        return self._completion

    def cut(self, exc: Exception) -> StreamError:
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "was cut"
        return self.stream_error(
            f"the stream {kind} after {self.assembler.chunks} chunks ({type(exc).__name__}); "
            "streams are not retried once data arrived"
        )


def _same(text: str) -> str:
    return text


def _error_text(error: Any) -> str:
    """A readable message from an error chunk's ``error`` (an object, a string, or raw event data)."""
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            return error[:300]
    if isinstance(error, dict) and isinstance(error.get("error"), (dict, str)):
        error = error["error"]
    if isinstance(error, dict) and error.get("message"):
        return error_message_from_body({"error": error}, 200)
    return (error if isinstance(error, str) else json.dumps(error, default=str))[:300]


class ChatStream(_StreamState):
    """A streamed chat completion: iterate the chunks; ``.completion`` is the assembled result.

    The request is sent on ``__enter__`` or the first ``next()``; the response is closed when the
    stream ends, fails, or ``close()`` is called. Use it as a context manager to close it early.
    """

    def __init__(
        self,
        opener: Callable[[], AbstractContextManager[httpx.Response]],
        finish: Finisher,
        *,
        client_request_id: str | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(finish, client_request_id, redact)
        self._opener = opener
        self._context: AbstractContextManager[httpx.Response] | None = None
        self._iterator: Generator[ChatCompletionChunk, None, None] | None = None

    def _open(self) -> Iterator[ChatCompletionChunk]:
        if self._iterator is None:
            self._context = self._opener()
            self.response = self._context.__enter__()
            self._iterator = self._events(self.response)
        return self._iterator

    def _events(self, response: httpx.Response) -> Generator[ChatCompletionChunk, None, None]:
        try:
            if self.body_kind(response) == "json":
                yield self.whole_answer(response.read())
            else:
                for event in EventSource(response).iter_sse():
                    if self.seen_done:
                        continue  # drain what follows [DONE] so the connection can be reused
                    chunk = self.handle(event)
                    if chunk is not None:
                        yield chunk
        except httpx.TransportError as exc:
            raise self.cut(exc) from exc
        finally:
            self._release()
        self.end()

    def __iter__(self) -> Iterator[ChatCompletionChunk]:
        return self

    def __next__(self) -> ChatCompletionChunk:
        return next(self._open())

    def __enter__(self) -> ChatStream:
        self._open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def get_final_completion(self) -> ChatCompletion:
        """Read what is left of the stream and return the assembled completion."""
        for _ in self:
            pass
        return self.completion

    def _release(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            context.__exit__(None, None, None)

    def close(self) -> None:
        """Stop reading and release the connection (safe to call more than once)."""
        self._release()
        if self._iterator is not None:
            self._iterator.close()


class AsyncChatStream(_StreamState):
    """The async twin of ChatStream: ``async with`` / ``async for``; ``.completion`` once exhausted."""

    def __init__(
        self,
        opener: Callable[[], AbstractAsyncContextManager[httpx.Response]],
        finish: Finisher,
        *,
        client_request_id: str | None = None,
        redact: Callable[[str], str] | None = None,
    ) -> None:
        super().__init__(finish, client_request_id, redact)
        self._opener = opener
        self._context: AbstractAsyncContextManager[httpx.Response] | None = None
        self._iterator: AsyncGenerator[ChatCompletionChunk, None] | None = None

    async def _open(self) -> AsyncIterator[ChatCompletionChunk]:
        if self._iterator is None:
            self._context = self._opener()
            self.response = await self._context.__aenter__()
            self._iterator = self._events(self.response)
        return self._iterator

    async def _events(self, response: httpx.Response) -> AsyncGenerator[ChatCompletionChunk, None]:
        try:
            if self.body_kind(response) == "json":
                yield self.whole_answer(await response.aread())
            else:
                async for event in EventSource(response).aiter_sse():
                    if self.seen_done:
                        continue  # drain what follows [DONE] so the connection can be reused
                    chunk = self.handle(event)
                    if chunk is not None:
                        yield chunk
        except httpx.TransportError as exc:
            raise self.cut(exc) from exc
        finally:
            await self._release()
        self.end()

    def __aiter__(self) -> AsyncChatStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        iterator = await self._open()
        return await iterator.__anext__()

    async def __aenter__(self) -> AsyncChatStream:
        await self._open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def get_final_completion(self) -> ChatCompletion:
        """Read what is left of the stream and return the assembled completion."""
        async for _ in self:
            pass
        return self.completion

    async def _release(self) -> None:
        context, self._context = self._context, None
        if context is not None:
            await context.__aexit__(None, None, None)

    async def aclose(self) -> None:
        """Stop reading and release the connection (safe to call more than once)."""
        await self._release()
        if self._iterator is not None:
            await self._iterator.aclose()
