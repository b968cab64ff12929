"""QwenClient and AsyncQwenClient: the AI/ML API chat-completions endpoint over httpx.

One logical call = one ``X-Client-Request-Id`` sent on each of its tries; failed tries are
retried per ``retry.RetryPolicy``; answers are parsed leniently into ``ChatCompletion`` and bound
to the requested model, the ``x-inference-id`` and the cost (reported, else estimated).
Tries that failed after their request was sent (a read timeout, an answer cut mid-transfer) may
have been charged: their count is ``unconfirmed_tries`` on the completion or the error's
``charge``, and ``retry_after_send=False`` stops retrying them.
Errors are the ``errors`` tree and never carry a credential (see ``scrub``). No Airflow import here.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from airflow_provider_qwen import DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_MODEL, DEFAULT_TIMEOUT
from airflow_provider_qwen.client._base import CONNECT_TIMEOUT, BaseClient, CallTries, new_client_request_id
from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.client.request import ChatRequest
from airflow_provider_qwen.client.retry import RetryPolicy
from airflow_provider_qwen.client.streaming import AsyncChatStream, ChatStream
from airflow_provider_qwen.client.window import check_window, may_pass_window

if TYPE_CHECKING:
    from airflow_provider_qwen.client.hot_path import ChatPoster

__all__ = ["AsyncChatStream", "AsyncQwenClient", "ChatStream", "QwenClient"]


class QwenClient(BaseClient):
    """Synchronous client of the AI/ML API chat-completions endpoint (thread-safe, keeps connections)."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            prices=prices,
            default_headers=default_headers,
            retry=retry,
        )
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.Client(timeout=self._timeout, headers=self._base_headers)
            self._send_headers(own_client=True)
        self._http = http_client

    def chat(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """Validate the parameters, send one chat request, return the completion."""
        return self.send(self._build(messages, model, params))

    def send(
        self,
        request: ChatRequest,
        *,
        client_request_id: str | None = None,
        retry_after_send: bool = True,
    ) -> ChatCompletion:
        """Send a validated request; a ``stream=True`` one is streamed and assembled.

        ``retry_after_send=False``: a try that failed after the request was sent (and may have been
        charged) is not retried (a budget asks this: it reserved for one paid try).
        """
        content, headers, rid = self._prepare(request, client_request_id)
        call = CallTries(retry_after_send)
        if request.stream:
            return self._open_stream(request, content, headers, rid, call).get_final_completion()
        response = self._request("POST", self._chat_url, rid, call, content=content, headers=headers)
        return self._completion(response, request, rid, call)

    def stream(
        self,
        request: ChatRequest | str | Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        retry_after_send: bool = True,
        client_request_id: str | None = None,
        **params: Any,
    ) -> ChatStream:
        """Stream a completion: iterate the chunks, then read ``.completion`` (retry_after_send: see send)."""
        request = self._stream_request(request, model, params)
        content, headers, rid = self._prepare(request, client_request_id)
        return self._open_stream(request, content, headers, rid, CallTries(retry_after_send))

    def get_balance(self) -> dict[str, Any]:
        """The account balance (``GET /v2/billing``): an authenticated call that costs nothing."""
        rid = new_client_request_id()
        headers = {**self._headers, "X-Client-Request-Id": rid}
        return self._balance(self._request("GET", self._billing_url, rid, CallTries(), headers=headers), rid)

    def list_models(self, *, include_pricing: bool = False) -> list[dict[str, Any]]:
        """The models the service offers (``GET {base_url}/models``)."""
        return self._list_models({"include": "pricing"} if include_pricing else None)[0]

    def fetch_prices(self, model: str | None = None) -> PriceTable:
        """The live price table (USD per 1M tokens) of every model, or of ``model``, that has pricing."""
        params = {"include": "pricing", **({"id": model} if model else {})}
        models, response, rid = self._list_models(params)
        return self._price_table(models, response, rid)

    def _list_models(self, params: dict[str, str] | None) -> tuple[list[dict[str, Any]], httpx.Response, str]:
        rid = new_client_request_id()
        headers = {**self._headers, "X-Client-Request-Id": rid}
        url = f"{self.base_url}/models"
        response = self._request("GET", url, rid, CallTries(), headers=headers, params=params)
        return self._models(response, rid), response, rid

    def _open_stream(
        self, request: ChatRequest, content: bytes, headers: dict[str, str], rid: str, call: CallTries
    ) -> ChatStream:
        @contextmanager
        def opener() -> Iterator[httpx.Response]:
            response = self._request(
                "POST", self._chat_url, rid, call, content=content, headers=headers, stream=True
            )
            try:
                yield response
            finally:
                response.close()

        return ChatStream(
            opener,
            lambda completion, h: self._finish(completion, h, request, rid, call.unconfirmed),
            client_request_id=rid,
            redact=self._redact,
            unconfirmed_tries=lambda: call.unconfirmed,
        )

    def _request(
        self, method: str, url: str, rid: str, call: CallTries, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One logical call: tries until a 2xx answer, a final error, or retries run out.

        ``call`` counts the tries that failed after sending; the error raised carries that count.
        """
        retries_taken = 0
        while True:
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            try:
                request = self._http.build_request(method, url, timeout=self._timeout, **kwargs)
                response = self._http.send(request, stream=stream)
                if response.is_success:
                    return response
                if stream:
                    try:
                        response.read()
                    finally:
                        response.close()
            except httpx.TransportError as exc:
                failure = exc
            # outside the except block: a give-up error must not hold the raw one as __context__
            delay = self._next_try(call, rid, url, retries_taken, response, failure)
            self.retry.sleep(delay)
            retries_taken += 1

    def close(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> QwenClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncQwenClient(BaseClient):
    """Asynchronous client: the same calls as QwenClient, awaited; bounded by ``max_connections``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        prices: PriceTable | None = None,
        http_client: httpx.AsyncClient | None = None,
        default_headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url=base_url,
            model=model,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=max_retries,
            prices=prices,
            default_headers=default_headers,
            retry=retry,
        )
        self._owns_http = http_client is None
        self._poster: ChatPoster | None = None  # the chat POSTs, on a client we made (see hot_path)
        if http_client is None:
            from airflow_provider_qwen.client.hot_path import ChatPoster
            from airflow_provider_qwen.client.transport import AiohttpTransport

            http_client = httpx.AsyncClient(
                transport=AiohttpTransport(max_connections=max_connections),
                timeout=self._timeout,
                headers=self._base_headers,
                trust_env=False,  # the transport reads the proxy settings from the environment
            )
            self._send_headers(own_client=True)
            self._poster = ChatPoster(http_client)
        self._http = http_client

    async def chat(
        self, messages: str | Sequence[Mapping[str, Any]], *, model: str | None = None, **params: Any
    ) -> ChatCompletion:
        """Validate the parameters, send one chat request, return the completion."""
        return await self.send(self._build(messages, model, params))

    async def send(
        self,
        request: ChatRequest,
        *,
        client_request_id: str | None = None,
        retry_after_send: bool = True,
    ) -> ChatCompletion:
        """Send a validated request; a ``stream=True`` one is streamed and assembled.

        ``retry_after_send``: as in ``QwenClient.send``.
        """
        content, headers, rid = await self._aprepare(request, client_request_id)
        call = CallTries(retry_after_send)
        if request.stream:
            return await self._open_stream(request, content, headers, rid, call).get_final_completion()
        response = await self._request("POST", self._chat_url, rid, call, content=content, headers=headers)
        return self._completion(response, request, rid, call)

    async def _aprepare(
        self, request: ChatRequest, client_request_id: str | None
    ) -> tuple[bytes, dict[str, str], str]:
        """``_prepare``, with the window's token count (a large prompt's) off the event loop."""
        prepared = self._prepare(request, client_request_id, count=False)
        if may_pass_window(request, len(prepared[0])):
            await asyncio.to_thread(check_window, request)
        return prepared

    def stream(
        self,
        request: ChatRequest | str | Sequence[Mapping[str, Any]],
        *,
        model: str | None = None,
        retry_after_send: bool = True,
        client_request_id: str | None = None,
        **params: Any,
    ) -> AsyncChatStream:
        """Stream a completion: ``async for`` the chunks, then read ``.completion``."""
        request = self._stream_request(request, model, params)
        content, headers, rid = self._prepare(request, client_request_id)
        return self._open_stream(request, content, headers, rid, CallTries(retry_after_send))

    async def get_balance(self) -> dict[str, Any]:
        """The account balance (``GET /v2/billing``): an authenticated call that costs nothing."""
        rid = new_client_request_id()
        headers = {**self._headers, "X-Client-Request-Id": rid}
        response = await self._request("GET", self._billing_url, rid, CallTries(), headers=headers)
        return self._balance(response, rid)

    async def list_models(self, *, include_pricing: bool = False) -> list[dict[str, Any]]:
        """The models the service offers (``GET {base_url}/models``)."""
        return (await self._list_models({"include": "pricing"} if include_pricing else None))[0]

    async def fetch_prices(self, model: str | None = None) -> PriceTable:
        """The live price table (USD per 1M tokens) of every model, or of ``model``, that has pricing."""
        params = {"include": "pricing", **({"id": model} if model else {})}
        models, response, rid = await self._list_models(params)
        return self._price_table(models, response, rid)

    async def _list_models(
        self, params: dict[str, str] | None
    ) -> tuple[list[dict[str, Any]], httpx.Response, str]:
        rid = new_client_request_id()
        headers = {**self._headers, "X-Client-Request-Id": rid}
        url = f"{self.base_url}/models"
        response = await self._request("GET", url, rid, CallTries(), headers=headers, params=params)
        return self._models(response, rid), response, rid

    def _open_stream(
        self, request: ChatRequest, content: bytes, headers: dict[str, str], rid: str, call: CallTries
    ) -> AsyncChatStream:
        @asynccontextmanager
        async def opener() -> AsyncIterator[httpx.Response]:
            response = await self._request(
                "POST", self._chat_url, rid, call, content=content, headers=headers, stream=True
            )
            try:
                yield response
            finally:
                await response.aclose()

        return AsyncChatStream(
            opener,
            lambda completion, h: self._finish(completion, h, request, rid, call.unconfirmed),
            client_request_id=rid,
            redact=self._redact,
            unconfirmed_tries=lambda: call.unconfirmed,
        )

    async def _request(
        self, method: str, url: str, rid: str, call: CallTries, *, stream: bool = False, **kwargs: Any
    ) -> httpx.Response:
        """One logical call: tries until a 2xx answer, a final error, or retries run out (see QwenClient)."""
        retries_taken = 0
        http = self._http
        chat_post = method == "POST" and not stream and kwargs.keys() == {"content", "headers"}
        poster = self._poster if chat_post else None
        while True:
            response: httpx.Response | None = None
            failure: httpx.TransportError | None = None
            try:
                if poster is not None:
                    response = await poster.post(url, rid, timeout=self._timeout, **kwargs)
                else:
                    request = http.build_request(method, url, timeout=self._timeout, **kwargs)
                    response = await http.send(request, stream=stream)
                if response.is_success:
                    return response
                if stream:
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except httpx.TransportError as exc:
                failure = exc
            # outside the except block: a give-up error must not hold the raw one as __context__
            delay = self._next_try(call, rid, url, retries_taken, response, failure)
            await self.retry.async_sleep(delay)
            retries_taken += 1

    async def aclose(self) -> None:
        """Close the connection pool (only if this client created it)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncQwenClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
