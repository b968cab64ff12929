"""The async client's HTTP/1.1 over aiohttp, behind httpx's transport interface.

Why: with 50 requests in flight on one event loop (a batch), the whole client costs 0.9 ms of CPU
per request over httpx's own stack (httpcore on anyio) and 0.6 ms over aiohttp (measured; see
``bench/client_overhead.py`` and ``bench/batch_throughput.py``).

The rest of the client keeps httpx's requests, responses and errors. aiohttp's failures are
translated by when they happened, which decides whether the service may have charged the try:

- before the request went out (no connection, DNS, TLS, a full pool): ``ConnectError`` or
  ``ConnectTimeout``, never charged;
- after: ``ReadTimeout``, ``RemoteProtocolError`` (disconnected, body cut, bad answer) or
  ``ReadError`` (any other failure), possibly charged.

The translated error is raised without its aiohttp cause, whose repr holds the request headers
(the API key among them). Proxies come from the environment as httpx reads them (``HTTPS_PROXY``,
``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), looked up once per host: aiohttp's own
``trust_env`` reads the environment and ``~/.netrc`` on every request (0.35 ms of CPU each).
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

KEEPALIVE_EXPIRY = 5.0  # httpx's default: an idle connection is dropped before a server closes it


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi, SSL_CERT_FILE), built once: building one costs ~18 ms."""
    return httpx.create_ssl_context()


def translate(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for an aiohttp failure; the class says whether the request may have gone out."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    error_class: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        error_class = httpx.ConnectTimeout
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error_class = httpx.ConnectError
    elif isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        error_class = httpx.UnsupportedProtocol
    elif isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        error_class = httpx.ReadTimeout
    elif isinstance(
        exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientResponseError)
    ):
        error_class = httpx.RemoteProtocolError  # ClientResponseError: an answer that is not valid HTTP
    else:
        error_class = httpx.ReadError
    return error_class(detail, request=request)


def env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url``, or None (none set, or ``NO_PROXY`` exempts it)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{url.host}:{url.port}" if url.port else url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport over one aiohttp session with ``max_connections``.

    The session is made on the first request, in the running event loop, and is bound to it (as
    an ``AsyncQwenClient`` is).
    """

    def __init__(self, *, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections={max_connections} must be >= 1")
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=shared_ssl_context(),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes the body by its Content-Encoding
            trust_env=False,  # proxies: env_proxy, once per host
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._session is None:
            self._session = self._open_session()
        timeout = request.extensions.get("timeout", {})
        try:
            body: Any = request.content or None
        except httpx.RequestNotRead:  # a streamed upload: aiohttp reads the async iterator
            body = request.stream
        origin = (request.url.scheme, request.url.host, request.url.port)
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(request.url)
        failure: httpx.TransportError | None = None
        try:
            response = await self._session.request(
                request.method,
                URL(str(request.url), encoded=True),
                headers=request.headers.multi_items(),
                data=body,
                allow_redirects=False,
                proxy=self._proxies[origin],
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # a free connection, connecting included
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
            )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failure = translate(exc, request)
        if failure is not None:
            raise failure  # outside the except block: no aiohttp cause or context is kept
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_ResponseBody(response, request),
            extensions={
                "http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode()
                if response.version
                else b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode(),
            },
        )

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


class _ResponseBody(httpx.AsyncByteStream):
    """An aiohttp response body as httpx reads it: bytes as they arrive (a stream event at once)."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        failure: httpx.TransportError | None = None
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failure = translate(exc, self._request)
        if failure is not None:
            raise failure

    async def aclose(self) -> None:
        # A body read to its end gives the connection back for reuse; one left unread closes it.
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()
