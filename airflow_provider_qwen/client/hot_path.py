"""The async client's chat POST, one try: what ``httpx.AsyncClient.build_request`` and ``send`` do
for it, without redoing per request what only depends on the client.

A batch sends thousands of the same POST, differing only in the body and the request id. httpx
builds each from scratch (parsing the URL, merging and normalising the headers: ~0.1 ms of CPU)
and sends it through its auth, redirect, cookie and event-hook steps, none of which applies to the
``httpx.AsyncClient`` an ``AsyncQwenClient`` made for itself (no auth, no hooks, no redirects
followed). Here:

- the request comes from a template httpx built: the URL parsed once, the header list httpx
  produced, with the request id and ``Content-Length`` put in their places. The template is
  checked when made (two requests httpx built differ in those two values only, else no template)
  and followed: another URL, other headers, another timeout, another ``httpx`` headers object or
  any cookie in the jar, and the request is built by httpx as before;
- it goes to the transport httpx would pick (``_transport_for_url``: respx's mocks too), with
  what ``send`` does around it kept: a closed client refuses, errors carry the request, cookies
  set by the answer are kept, httpx's ``HTTP Request`` log line, the body read whole (on any
  failure the answer closed), ``elapsed``;
- the aiohttp transport is asked (``READ_BODY``) to read the body itself, and returns it loaded.

Nothing here adds a header, drops one or changes one byte of the request; see tests/unit/client/
test_hot_path*.py.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from airflow_provider_qwen.client.transport import READ_BODY

RID_HEADER = "X-Client-Request-Id"
_httpx_log = logging.getLogger("httpx")  # the logger httpx's send writes its "HTTP Request" line to
# two requests httpx builds for the template: they must differ in these values only
_SAMPLES = (("qwen-template-a", b"{}"), ("qwen-template-b", b"{}{}"))


def _masked(headers: Mapping[str, str]) -> tuple[tuple[str, str | None], ...]:
    """The headers asked for, in order, with the request id's value left out."""
    return tuple((key, None if key == RID_HEADER else value) for key, value in headers.items())


@dataclass(frozen=True)
class _Template:
    """A chat POST as httpx builds it, for one URL, headers and timeout (see ``make``); unusable
    (``raw`` empty) when httpx does more to the request than the template can redo."""

    # repr=False: what holds the headers (the API key among them) or the URL is never shown
    url_text: str = field(repr=False)
    asked: tuple[tuple[str, str | None], ...] = field(repr=False)  # the headers asked for (``_masked``)
    client_headers: httpx.Headers = field(repr=False)  # the httpx client's own: replaced, it is stale
    timeout: httpx.Timeout
    url: httpx.URL | None = field(default=None, repr=False)
    raw: tuple[tuple[bytes, bytes], ...] = field(default=(), repr=False)  # httpx's headers, its order
    rid_index: int = -1
    length_index: int = -1
    encoding: str = "ascii"
    extensions: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls, http: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> _Template:
        """The template of ``http``'s POSTs to ``url`` with ``headers`` (the request id last) and
        ``timeout``, made from two requests httpx built: they must differ in the request id and
        ``Content-Length`` values only."""
        key = cls(url_text=url, asked=_masked(headers), client_headers=http.headers, timeout=timeout)
        if not headers or next(reversed(list(headers))) != RID_HEADER or http.cookies:
            return key
        base = {name: value for name, value in headers.items() if name != RID_HEADER}
        built = [
            http.build_request("POST", url, content=body, headers={**base, RID_HEADER: rid}, timeout=timeout)
            for rid, body in _SAMPLES
        ]
        first, second = (request.headers.raw for request in built)
        if built[0].url.userinfo or len(first) != len(second) or built[0].extensions != built[1].extensions:
            return key  # userinfo: httpx's send would add basic auth from the URL
        if any(a[0] != b[0] for a, b in zip(first, second, strict=True)):
            return key
        changed = [i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a[1] != b[1]]
        roles = {
            tuple(rid.encode() for rid, _ in _SAMPLES): "rid",
            tuple(str(len(body)).encode() for _, body in _SAMPLES): "length",
        }
        found = {roles.get((first[i][1], second[i][1])): i for i in changed}
        if len(changed) != 2 or set(found) != {"rid", "length"}:
            return key
        if first[found["length"]][0].lower() != b"content-length":
            return key
        return replace(
            key,
            url=built[0].url,
            raw=tuple(first),
            rid_index=found["rid"],
            length_index=found["length"],
            encoding=built[0].headers.encoding,
            extensions={**built[0].extensions, READ_BODY: True},
        )

    def fits(
        self, http: httpx.AsyncClient, url: str, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> bool:
        """Whether this template was made for ``url``, ``headers`` and ``timeout`` on ``http``."""
        return (
            (url is self.url_text or url == self.url_text)
            and timeout is self.timeout
            and http.headers is self.client_headers
            and _masked(headers) == self.asked
        )

    def request(self, rid: str, content: bytes) -> httpx.Request:
        """The request httpx would build with this request id and body."""
        raw = list(self.raw)
        raw[self.rid_index] = (raw[self.rid_index][0], rid.encode(self.encoding))
        raw[self.length_index] = (raw[self.length_index][0], str(len(content)).encode("ascii"))
        request = httpx.Request(
            "POST",
            self.url,  # type: ignore[arg-type]  # set whenever raw is
            headers=httpx.Headers(raw, encoding=self.encoding),
            stream=httpx.ByteStream(content),
            extensions=self.extensions,
        )
        request.read()  # as httpx's Request(content=...) does: .content is there
        return request


class ChatPoster:
    """The chat POST tries of an ``AsyncQwenClient`` over the ``httpx.AsyncClient`` it made."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self._http = http
        self._template: _Template | None = None

    def build(
        self, url: str, rid: str, content: bytes, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> httpx.Request:
        """The request ``http.build_request("POST", url, ...)`` would build, with ``READ_BODY`` when
        from the template (the body is read whole at once either way)."""
        http = self._http
        if content and headers.get(RID_HEADER) == rid and not http.cookies:  # a cookie: httpx adds it
            template = self._template
            if template is None or not template.fits(http, url, headers, timeout):
                template = self._template = _Template.make(http, url, headers, timeout)
            if template.raw:
                return template.request(rid, content)
        return http.build_request("POST", url, content=content, headers=headers, timeout=timeout)

    async def post(
        self, url: str, rid: str, *, content: bytes, headers: Mapping[str, str], timeout: httpx.Timeout
    ) -> httpx.Response:
        """One try, as ``http.send(http.build_request("POST", url, ...))``: the answer read whole."""
        http = self._http
        request = self.build(url, rid, content, headers, timeout)
        if http.auth is not None or any(http.event_hooks.values()) or request.url.userinfo:
            return await http.send(request)  # auth from the URL's userinfo (or set, or hooks): httpx's
        if http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")  # httpx's words
        transport = http._transport_for_url(request.url)  # what respx patches, as httpx's send does
        started = time.perf_counter()
        try:
            response = await transport.handle_async_request(request)
        except httpx.RequestError as exc:
            exc.request = request  # as httpx's request_context
            raise
        response.request = request
        if "set-cookie" in response.headers or "set-cookie2" in response.headers:
            http.cookies.extract_cookies(response)
        # default_encoding: a client we made keeps httpx's default, the answer's own default
        _httpx_log.info(
            'HTTP Request: %s %s "%s %d %s"',
            request.method,
            request.url,
            response.http_version,
            response.status_code,
            response.reason_phrase,
        )
        try:
            response.content  # noqa: B018 (loaded by the transport, or not yet)
        except httpx.ResponseNotRead:
            try:
                await response.aread()
            except BaseException:
                await response.aclose()
                raise
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response
