"""The async client's HTTP/1.1 over aiohttp, behind httpx's transport interface.

Why: with 50 requests in flight on one event loop (a batch), the whole client costs 0.9 ms of CPU
per request over httpx's own stack (httpcore on anyio) and 0.6 ms over aiohttp (measured; see
``bench/client_overhead.py`` and ``bench/batch_throughput.py``).

The rest of the client keeps httpx's requests, responses and errors. aiohttp's failures are
translated by when they happened, which decides whether the service may have charged the try:

- before the request went out (no connection, DNS, TLS, a full pool, a refusing proxy, a body
  that could not be written): ``ConnectError``, ``ConnectTimeout``, ``ProxyError`` or
  ``WriteError``, never charged;
- after: ``ReadTimeout``, ``RemoteProtocolError`` (disconnected, body cut, bad answer) or
  ``ReadError`` (any other failure), possibly charged.

The translated error is raised without its aiohttp cause, whose repr holds the request headers
(the API key among them), and its message is scrubbed of what can be found without knowing the
secrets (``scrub.scrub_generic``: URL userinfo, a proxy's; quoted authorization values); the client
scrubs the secrets it knows (see ``scrub.Scrubber``).
Proxies come from the environment as httpx reads them (``HTTPS_PROXY``, ``HTTP_PROXY``,
``ALL_PROXY``, ``NO_PROXY``), looked up once per host: aiohttp's own ``trust_env`` reads the
environment and ``~/.netrc`` on every request (0.35 ms of CPU each).

Where aiohttp has no timeout of httpx's, the transport adds it: a name lookup is bounded by the
connect timeout (aiohttp bounds it by the pool timeout only), and sending a request is bounded by
pool + write + read (aiohttp has no write timeout; a server that never reads would hang it).

Per request, what depends only on the URL (aiohttp's parsed URL, the origin's proxy) or on the
timeouts (aiohttp's timeout object, the sending deadline) is looked up, not rebuilt. A request
with the ``READ_BODY`` extension (a client that reads every answer whole) gets its answer read
here, to the end, and returned loaded: the bytes as they arrived, decoded by httpx as usual.
"""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import urllib.request
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any

import aiohttp
import httpx
from yarl import URL

from airflow_provider_qwen.client.scrub import scrub_generic, strip_userinfo

KEEPALIVE_EXPIRY = 5.0  # httpx's default: an idle connection is dropped before a server closes it
PROXY_SCHEMES = ("http", "https")  # what aiohttp can speak to a proxy (no SOCKS)
# aiohttp's message when writing the request failed (a kept-alive connection the server had closed):
# the server cannot have received a whole request, so nothing was generated or charged.
_BODY_NOT_WRITTEN = "Can not write request body"
_LOOKUP_TIMEOUT: ContextVar[float | None] = ContextVar("qwen_lookup_timeout", default=None)
# A request extension: read the answer's body whole before returning (the client would read it at once).
READ_BODY = "airflow_provider_qwen.read_body"
_CACHE_SIZE = 64  # URLs and timeouts remembered per transport (a client uses a handful)


@functools.cache
def shared_ssl_context() -> ssl.SSLContext:
    """httpx's default TLS context (certifi, SSL_CERT_FILE), built once: building one costs ~18 ms."""
    return httpx.create_ssl_context()


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of any URL in it replaced by ``***@``."""
    return strip_userinfo(text)


def translate(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    """The httpx error for an aiohttp failure; the class says whether the request may have gone out."""
    detail = scrub_generic(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
    error_class: type[httpx.TransportError]
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        error_class = httpx.ConnectTimeout
    elif isinstance(exc, (aiohttp.ClientHttpProxyError, aiohttp.ClientProxyConnectionError)):
        error_class = httpx.ProxyError
    elif isinstance(exc, aiohttp.ClientConnectorError):
        error_class = httpx.ConnectError
    elif isinstance(exc, aiohttp.ClientOSError) and _BODY_NOT_WRITTEN in str(exc):
        error_class = httpx.WriteError
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


def aiohttp_headers(headers: httpx.Headers) -> list[tuple[str, str]]:
    """``headers.multi_items()`` (names lower-cased, values decoded in the headers' encoding), what
    aiohttp is given to send, without ``multi_items``' lookup of the encoding for every item."""
    encoding = headers.encoding
    return [(key.lower().decode(encoding), value.decode(encoding)) for key, value in headers.raw]


def env_proxy(url: httpx.URL) -> str | None:
    """The proxy the environment names for ``url``, or None (none set, or ``NO_PROXY`` exempts it)."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(f"{url.host}:{url.port}" if url.port else url.host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


class _BoundedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver with each lookup bounded by the connect timeout of the request that asked
    for it (``_LOOKUP_TIMEOUT``); expiry is a failed lookup."""

    def __init__(self) -> None:
        self._resolver = aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[aiohttp.abc.ResolveResult]:
        async with asyncio.timeout(_LOOKUP_TIMEOUT.get()):
            return await self._resolver.resolve(host, port, family)

    async def close(self) -> None:
        await self._resolver.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    """An ``httpx.AsyncClient`` transport over one aiohttp session with ``max_connections``.

    The session is made on the first request, in the running event loop, and is bound to it (as
    an ``AsyncQwenClient`` is): a request from another loop is refused before anything is sent.
    """

    def __init__(self, *, max_connections: int) -> None:
        if max_connections < 1:
            raise ValueError(f"max_connections={max_connections} must be >= 1")
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proxies: dict[tuple[str, str, int | None], str | None] = {}
        self._targets: dict[str, tuple[URL, tuple[str, str, int | None]]] = {}
        self._timeouts: dict[tuple[float | None, ...], tuple[aiohttp.ClientTimeout, float | None]] = {}
        self._versions: dict[Any, bytes] = {}

    def _open_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY,
            ssl=shared_ssl_context(),
            resolver=_BoundedResolver(),
        )
        return aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # httpx decodes the body by its Content-Encoding
            trust_env=False,  # proxies: env_proxy, once per host
            timeout=aiohttp.ClientTimeout(total=None),
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session_for(asyncio.get_running_loop())
        timeout = request.extensions.get("timeout", {})
        try:
            body: Any = request.content or None
        except httpx.RequestNotRead:  # a streamed upload: aiohttp reads the async iterator
            body = request.stream
        url, origin = self._target(request.url)
        proxy = self._proxy_for(request, origin)
        client_timeout, deadline = self._timeouts_for(timeout)
        lookup_timeout = _LOOKUP_TIMEOUT.set(timeout.get("connect"))
        failure: httpx.TransportError | None = None
        try:
            async with asyncio.timeout(deadline):
                response = await session.request(
                    request.method,
                    url,
                    headers=aiohttp_headers(request.headers),
                    data=body,
                    allow_redirects=False,
                    proxy=proxy,
                    timeout=client_timeout,
                )
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            failure = translate(exc, request)
        finally:
            _LOOKUP_TIMEOUT.reset(lookup_timeout)
        if failure is not None:
            raise failure  # outside the except block: no aiohttp cause or context is kept
        stream: httpx.AsyncByteStream
        if request.extensions.get(READ_BODY):
            # after the sending deadline, as httpx reads a body: bounded per read by the read timeout
            stream = httpx.ByteStream(await _read_whole(response, request))
        else:
            stream = _ResponseBody(response, request)
        answer = httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=stream,
            extensions={
                "http_version": self._version(response.version),
                "reason_phrase": (response.reason or "").encode(),
            },
        )
        if all(key.isascii() and value.isascii() for key, value in response.raw_headers):
            answer.headers.encoding = "ascii"  # what httpx would find, without decoding every header
        if request.extensions.get(READ_BODY):
            answer.read()  # the bytes are here: decoded (Content-Encoding) by httpx, without awaiting
        return answer

    def _session_for(self, loop: asyncio.AbstractEventLoop) -> aiohttp.ClientSession:
        if self._session is None:
            self._session, self._loop = self._open_session(), loop
        elif loop is not self._loop:
            raise RuntimeError(
                "this async client is bound to the event loop of its first request and was used from "
                "another one; create one client per event loop (QwenHook.async_client gives a new one)"
            )
        return self._session

    def _target(self, url: httpx.URL) -> tuple[URL, tuple[str, str, int | None]]:
        """aiohttp's URL for ``url`` and its origin, remembered by the URL's text."""
        text = str(url)
        target = self._targets.get(text)
        if target is None:
            if len(self._targets) >= _CACHE_SIZE:
                self._targets.clear()
            target = self._targets[text] = (URL(text, encoded=True), (url.scheme, url.host, url.port))
        return target

    def _timeouts_for(self, timeout: dict[str, float | None]) -> tuple[aiohttp.ClientTimeout, float | None]:
        """aiohttp's timeouts for httpx's ``timeout`` extension, and the sending deadline."""
        key = (timeout.get("pool"), timeout.get("connect"), timeout.get("read"), timeout.get("write"))
        found = self._timeouts.get(key)
        if found is None:
            if len(self._timeouts) >= _CACHE_SIZE:
                self._timeouts.clear()
            found = self._timeouts[key] = (
                aiohttp.ClientTimeout(
                    total=None,
                    connect=timeout.get("pool"),  # a free connection, connecting included
                    sock_connect=timeout.get("connect"),
                    sock_read=timeout.get("read"),
                ),
                _sending_deadline(timeout),
            )
        return found

    def _version(self, version: Any) -> bytes:
        """httpx's ``http_version`` extension for aiohttp's version of an answer."""
        found = self._versions.get(version)
        if found is None:
            found = f"HTTP/{version.major}.{version.minor}".encode() if version else b"HTTP/1.1"
            if len(self._versions) < _CACHE_SIZE:
                self._versions[version] = found
        return found

    def _proxy_for(self, request: httpx.Request, origin: tuple[str, str, int | None]) -> str | None:
        """The environment's proxy for the request's origin, looked up once per origin."""
        if origin not in self._proxies:
            self._proxies[origin] = env_proxy(request.url)
        proxy = self._proxies[origin]
        if proxy is not None and URL(proxy).scheme not in PROXY_SCHEMES:
            raise httpx.UnsupportedProtocol(
                f"the proxy {without_credentials(proxy)} set in the environment for {request.url.host} "
                f"is not supported; allowed: {', '.join(s + '://' for s in PROXY_SCHEMES)} "
                "(or exempt the host with NO_PROXY)",
                request=request,
            )
        return proxy

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _sending_deadline(timeout: dict[str, float | None]) -> float | None:
    """The longest a request may take to get its answer's head: pool + write + read (None: no bound)."""
    phases = [timeout.get("pool"), timeout.get("write"), timeout.get("read")]
    return None if any(p is None for p in phases) else sum(p for p in phases if p is not None)


async def _read_whole(response: aiohttp.ClientResponse, request: httpx.Request) -> bytes:
    """The whole body of ``response``, its connection given back for reuse; a failure is translated
    (after the request was sent: possibly charged) and closes the connection, as ``_ResponseBody``."""
    failure: httpx.TransportError | None = None
    try:
        content = await response.read()
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        failure = translate(exc, request)
    except BaseException:  # cancelled: the connection is dropped (aiohttp closes it), as httpx would
        response.close()
        raise
    if failure is not None:
        response.close()
        raise failure  # outside the except block: no aiohttp cause or context is kept
    response.release()
    return content


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
