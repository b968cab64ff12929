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

from airflow_provider_qwen.client.assembly import StreamAssembler, chunk_from_completion
from airflow_provider_qwen.client.errors import (
    Charge,
    InvalidResponseError,
    StreamError,
    error_message_from_body,
)
from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.client.scrub import scrub_generic, server_id, stand_in

DONE = "[DONE]"

# Binds an assembled completion to its call (requested model, inference id, cost).
Finisher = Callable[[ChatCompletion, httpx.Headers], ChatCompletion]


class _StreamState:
    """What the sync and async streams share: event handling, assembly and error construction."""

    def __init__(
        self,
        finish: Finisher,
        client_request_id: str | None,
        redact: Callable[[str], str] | None,
        unconfirmed_tries: Callable[[], int] | None,
    ) -> None:
        self._finish = finish
        self._redact = redact or scrub_generic
        self._unconfirmed_tries = unconfirmed_tries or _none
        self.client_request_id = client_request_id
        self.assembler = StreamAssembler()
        self.response: httpx.Response | None = None
        self.seen_done = False
        self._completion: ChatCompletion | None = None

    @property
    def inference_id(self) -> str | None:
        if self.response is None:
            return None
        return server_id(self.response.headers.get("x-inference-id"), self._redact)

    @property
    def completion(self) -> ChatCompletion:
        """The assembled completion; available once the stream has been read to its end."""
        if self._completion is None:
            raise RuntimeError("the stream is not finished: iterate it to the end first")
        return self._completion

    def partial(self) -> ChatCompletion:
        headers = self.response.headers if self.response is not None else httpx.Headers()
        return self._finish(self.assembler.completion(), headers)

    def stream_error(self, message: str, *, reported_by_service: bool = False) -> StreamError:
        charge = Charge(
            partial=self.partial(),
            unconfirmed_tries=self._unconfirmed_tries(),
            reported_by_service=reported_by_service,
        )
        return StreamError(
            self._redact(message),
            inference_id=self.inference_id,
            client_request_id=self.client_request_id,
            charge=charge,
        )

    def headers_charge(self) -> Charge:
        """A 2xx answer we cannot read was still paid: what its cost headers reported."""
        headers = self.response.headers if self.response is not None else httpx.Headers()
        return Charge(reported=Cost.from_headers(headers), unconfirmed_tries=self._unconfirmed_tries())

    def body_kind(self, response: httpx.Response) -> str:
        """``"sse"``, or ``"json"`` (a server that ignored ``stream``); anything else is refused."""
        content_type = response.headers.get("content-type", "")
        if "text/event-stream" in content_type:
            return "sse"
        if "json" in content_type:
            return "json"
        raise InvalidResponseError(
            self._redact(
                f"a stream request was answered with content-type {content_type!r}, not text/event-stream"
            ),
            status_code=response.status_code,
            inference_id=self.inference_id,
            client_request_id=self.client_request_id,
            charge=self.headers_charge(),
        )

    def whole_answer(self, content: bytes) -> ChatCompletionChunk:
        """A JSON answer to a stream request: accept it as the whole completion, as one chunk."""
        try:
            completion = ChatCompletion.model_validate_json(content)
        except ValidationError:
            completion = None
        if completion is None or not completion.choices:
            message = error_message_from_body(self._redact(content.decode("utf-8", "replace")), 200)
            raise InvalidResponseError(
                self._redact(
                    f"a stream request was answered with JSON that is not a chat completion: {message}"
                ),
                status_code=200,
                inference_id=self.inference_id,
                client_request_id=self.client_request_id,
                charge=self.headers_charge(),
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
            raise self.stream_error(
                f"the service reported an error mid-stream: {_error_text(data, self._redact)}",
                reported_by_service=True,
            )
        if not data:
            return None
        try:
            chunk: ChatCompletionChunk | None = ChatCompletionChunk.model_validate_json(data)
        except ValidationError:  # raised below, outside the except block: its input is not chained
            chunk = None
        if chunk is None:
            shown = self._redact(data)  # scrubbed before cut
            shown = shown if len(shown) <= 200 else shown[:197] + "..."
            raise self.stream_error(f"stream event is not a chat.completion.chunk: {shown!r}")
        if chunk.error is not None:
            raise self.stream_error(
                f"the service reported an error mid-stream: {_error_text(chunk.error, self._redact)}",
                reported_by_service=True,
            )
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
        """The error of a stream cut by ``exc``; its cause is ``exc`` re-told without secrets."""
        kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "was cut"
        error = self.stream_error(
            f"the stream {kind} after {self.assembler.chunks} chunks ({type(exc).__name__}); "
            "streams are not retried once data arrived"
        )
        error.__cause__ = stand_in(exc, self._redact)
        error.__suppress_context__ = True
        return error


def _none() -> int:
    return 0


def _error_text(error: Any, redact: Callable[[str], str]) -> str:
    """A readable message from an error chunk's ``error`` (an object, a string, or raw event data),
    scrubbed by ``redact`` before it is cut."""
    if isinstance(error, str):
        try:
            error = json.loads(error)
        except ValueError:
            return redact(str(error))[:300]
    if isinstance(error, dict) and isinstance(error.get("error"), (dict, str)):
        error = error["error"]
    if isinstance(error, dict) and error.get("message"):
        return redact(error_message_from_body({"error": error}, 200))
    return redact(error if isinstance(error, str) else json.dumps(error, default=str))[:300]


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
        unconfirmed_tries: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(finish, client_request_id, redact, unconfirmed_tries)
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
        failure: StreamError | None = None
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
            failure = self.cut(exc)
        finally:
            self._release()
        if failure is not None:  # outside the except block: the raw error is not its __context__
            raise failure
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
        unconfirmed_tries: Callable[[], int] | None = None,
    ) -> None:
        super().__init__(finish, client_request_id, redact, unconfirmed_tries)
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
        failure: StreamError | None = None
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
            failure = self.cut(exc)
        finally:
            await self._release()
        if failure is not None:  # outside the except block: the raw error is not its __context__
            raise failure
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
