"""The async client's chat POST (``hot_path.ChatPoster``): the same request and the same answer as
``httpx.AsyncClient.build_request`` + ``send``, byte for byte, with less work per request."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from airflow_provider_qwen.client.client import AsyncQwenClient
from airflow_provider_qwen.client.hot_path import RID_HEADER, ChatPoster
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.transport import READ_BODY, aiohttp_headers
from tests.support.client_helpers import BASE_URL, CHAT_URL, KEY, MODEL, completion, ok

pytestmark = pytest.mark.anyio

RID = "qwen-0123456789abcdef0123456789abcdef"
BODY = json.dumps(completion()).encode()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def slow(client: AsyncQwenClient) -> AsyncQwenClient:
    """``client`` on httpx's own build_request + send, as before the hot path."""
    client._poster = None
    return client


def built_by_httpx(client: AsyncQwenClient, url: str, rid: str, content: bytes) -> httpx.Request:
    headers = {**client._headers, RID_HEADER: rid}
    return client._http.build_request("POST", url, content=content, headers=headers, timeout=client._timeout)


def built_by_poster(client: AsyncQwenClient, url: str, rid: str, content: bytes) -> httpx.Request:
    assert client._poster is not None
    headers = {**client._headers, RID_HEADER: rid}
    return client._poster.build(url, rid, content, headers, client._timeout)


def assert_same_request(ours: httpx.Request, theirs: httpx.Request, *, templated: bool = True) -> None:
    assert ours.method == theirs.method
    assert str(ours.url) == str(theirs.url)
    assert ours.headers.raw == theirs.headers.raw  # names, case, order, values
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.headers.encoding == theirs.headers.encoding
    assert ours.content == theirs.content
    assert {k: v for k, v in ours.extensions.items() if k != READ_BODY} == theirs.extensions
    assert (READ_BODY in ours.extensions) is templated


CLIENTS = {
    "default": {},
    "no key": {"api_key": None},
    "default headers": {"default_headers": {"X-Team": "data", "User-Agent": "mine/1", "Accept": "*/*"}},
    "port and path": {"base_url": "https://api.example.test:8443/proxy/v1/"},
    "timeouts": {"timeout": 7.5, "connect_timeout": 0.5},
}


@pytest.mark.parametrize("config", list(CLIENTS.values()), ids=list(CLIENTS))
async def test_the_template_builds_what_httpx_builds(config: dict[str, Any]):
    kwargs = {"api_key": KEY, "base_url": BASE_URL, **config}
    async with AsyncQwenClient(**kwargs) as client:
        for rid, content in [(RID, BODY), ("r", b"{}"), ("qwen-" + "f" * 123, b"x" * 70_000), (RID, BODY)]:
            ours = built_by_poster(client, client._chat_url, rid, content)
            assert_same_request(ours, built_by_httpx(client, client._chat_url, rid, content))


async def test_the_template_follows_a_changed_url_timeout_or_client_headers():
    async with AsyncQwenClient(KEY, base_url=BASE_URL) as client:
        built_by_poster(client, client._chat_url, RID, BODY)
        client.base_url = "http://127.0.0.1:10/v2"
        client._chat_url = f"{client.base_url}/chat/completions"
        ours = built_by_poster(client, client._chat_url, RID, BODY)
        assert str(ours.url) == "http://127.0.0.1:10/v2/chat/completions"
        assert ours.headers["host"] == "127.0.0.1:10"
        assert_same_request(ours, built_by_httpx(client, client._chat_url, RID, BODY))

        client._timeout = httpx.Timeout(3.0, connect=1.0)
        ours = built_by_poster(client, client._chat_url, RID, BODY)
        assert ours.extensions["timeout"]["read"] == 3.0
        assert_same_request(ours, built_by_httpx(client, client._chat_url, RID, BODY))

        client._http.headers = {**client._http.headers, "X-Extra": "1"}
        ours = built_by_poster(client, client._chat_url, RID, BODY)
        assert ours.headers["x-extra"] == "1"
        assert_same_request(ours, built_by_httpx(client, client._chat_url, RID, BODY))


async def test_what_the_template_cannot_redo_is_built_by_httpx():
    async with AsyncQwenClient(KEY, base_url="http://user:pw@127.0.0.1:9/v1") as client:
        ours = built_by_poster(client, client._chat_url, RID, BODY)  # httpx's send adds basic auth
        assert_same_request(ours, built_by_httpx(client, client._chat_url, RID, BODY), templated=False)
    async with AsyncQwenClient(KEY, base_url=BASE_URL) as client:
        client._http.cookies.set("session", "abc")  # the Cookie header: httpx's to add
        ours = built_by_poster(client, client._chat_url, RID, BODY)
        assert ours.headers["cookie"] == "session=abc"
        assert_same_request(ours, built_by_httpx(client, client._chat_url, RID, BODY), templated=False)


async def test_the_template_never_shows_the_key():
    async with AsyncQwenClient(KEY, base_url="http://user:pw@127.0.0.1:9/v1") as client:
        built_by_poster(client, client._chat_url, RID, BODY)
        assert client._poster is not None
        shown = repr(client._poster._template) + repr(client._poster) + repr(client)
    async with AsyncQwenClient(KEY, base_url=BASE_URL) as client:
        built_by_poster(client, client._chat_url, RID, BODY)
        assert client._poster is not None
        shown += repr(client._poster._template)
    assert KEY not in shown
    assert "pw@" not in shown


# -- through respx: what httpx's send does around the transport ---------------------------------------


async def send_both(api, make_reply, request_id: str = RID) -> list[tuple[httpx.Request, httpx.Response]]:
    """One chat through the hot path and one through httpx's send, same reply: (request, answer)."""
    seen: list[tuple[httpx.Request, httpx.Response]] = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append((request, make_reply()))
        return seen[-1][1]

    api.post(CHAT_URL).mock(side_effect=reply)
    request = build_request("Hi", model=MODEL)
    for hot in (True, False):
        async with AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
            await (client if hot else slow(client)).send(request, client_request_id=request_id)
    return seen


async def test_through_respx_the_request_and_answer_are_httpx_s(api, caplog):
    caplog.set_level(logging.INFO, logger="httpx")
    seen = send_both(api, lambda: ok(inference_id="inf-r"))
    (hot_request, hot_answer), (slow_request, slow_answer) = await seen
    assert_same_request(hot_request, slow_request)
    assert hot_request.headers[RID_HEADER] == RID
    for answer in (hot_answer, slow_answer):
        assert answer.is_closed
    lines = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert len(lines) == 2
    assert lines[0] == lines[1] == f'HTTP Request: POST {CHAT_URL} "HTTP/1.1 200 OK"'


async def test_cookies_set_by_an_answer_are_sent_back_as_httpx_does(api):
    replies = [ok(**{"set-cookie": "__cf_bm=tok; Path=/"}), ok()]
    sent: dict[bool, list[httpx.Request]] = {True: [], False: []}
    for hot in (True, False):
        calls = iter(list(replies))

        def reply(request: httpx.Request, hot: bool = hot, calls: Any = calls) -> httpx.Response:
            sent[hot].append(request)
            return next(calls)

        api.post(CHAT_URL).mock(side_effect=reply)
        async with AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
            client = client if hot else slow(client)
            for _ in range(2):
                await client.send(build_request("Hi", model=MODEL), client_request_id=RID)
    assert "cookie" not in sent[True][0].headers
    assert sent[True][1].headers["cookie"] == "__cf_bm=tok"
    for hot_request, slow_request in zip(sent[True], sent[False], strict=True):
        assert hot_request.headers.raw == slow_request.headers.raw


async def test_a_closed_client_refuses_as_httpx_does():
    messages = []
    for hot in (True, False):
        client = AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=0)
        await client.aclose()
        with pytest.raises(RuntimeError) as raised:
            await (client if hot else slow(client)).chat("Hi")
        messages.append(str(raised.value))
    assert messages[0] == messages[1] == "Cannot send a request, as the client has been closed."


async def test_a_transport_error_carries_its_request(api):
    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    api.post(CHAT_URL).mock(side_effect=fail)
    async with AsyncQwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        assert client._poster is not None
        request = built_by_poster(client, client._chat_url, RID, BODY)
        with pytest.raises(httpx.ConnectError) as raised:
            await client._poster.post(
                client._chat_url, RID, content=BODY, headers={RID_HEADER: RID}, timeout=client._timeout
            )
    assert raised.value.request.headers.raw == request.headers.raw


# -- over loopback, through aiohttp: the bytes on the wire ----------------------------------------------


class RawServer:
    """A loopback HTTP/1.1 server that records each request's bytes and answers ``reply``."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def answer(body: bytes = BODY, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: application/json", b"x-inference-id: inf-w", *extra]
    return b"\r\n".join([*head, b"Content-Length: %d" % len(body), b"", body])


@pytest.fixture
async def wire() -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer(answer())
    async with server as base_url:
        yield server, base_url


@pytest.mark.parametrize("config", list(CLIENTS.values())[:3], ids=list(CLIENTS)[:3])
async def test_the_bytes_sent_are_unchanged(wire, config: dict[str, Any]):
    server, base_url = wire
    request = build_request("Summarise: the quarter went well.", model=MODEL, max_completion_tokens=20)
    kwargs = {"api_key": KEY, **config, "base_url": base_url}
    completions = []
    for hot in (True, False, True):
        async with AsyncQwenClient(**kwargs) as client:
            client = client if hot else slow(client)
            completions.append(await client.send(request, client_request_id=RID))
    first, second, third = server.requests
    assert first == second == third
    assert f"\r\nx-client-request-id: {RID}\r\n".encode() in first
    assert (f"\r\nauthorization: Bearer {KEY}\r\n".encode() in first) is bool(kwargs["api_key"])
    assert all(c.model_dump() == completions[0].model_dump() for c in completions)
    assert {c.call.inference_id for c in completions if c.call} == {"inf-w"}


async def test_the_answer_read_by_the_transport_is_httpx_s(wire):
    _, base_url = wire
    answers = []
    for hot in (True, False):
        async with AsyncQwenClient(KEY, base_url=base_url) as client:
            if hot:
                assert client._poster is not None
                response = await client._poster.post(
                    client._chat_url, RID, content=BODY, headers={RID_HEADER: RID}, timeout=client._timeout
                )
            else:
                request = built_by_httpx(client, client._chat_url, RID, BODY)
                response = await client._http.send(request)
            answers.append(response)
    hot_answer, slow_answer = answers
    fields = ("status_code", "content", "http_version", "reason_phrase", "is_closed", "num_bytes_downloaded")
    for field in fields:
        assert getattr(hot_answer, field) == getattr(slow_answer, field), field
    assert hot_answer.headers.raw == slow_answer.headers.raw
    assert hot_answer.headers.encoding == slow_answer.headers.encoding
    assert hot_answer.elapsed.total_seconds() > 0
    assert hot_answer.request.headers.raw == slow_answer.request.headers.raw


async def test_a_compressed_answer_is_decoded():
    server = RawServer(answer(gzip.compress(BODY), b"Content-Encoding: gzip"))
    async with server as base_url, AsyncQwenClient(KEY, base_url=base_url) as client:
        result = await client.chat("Hi")
    assert result.content == "Hello!"


def test_aiohttp_is_given_what_multi_items_gives():
    cases = [
        httpx.Headers({"Host": "h", "X-Client-Request-Id": RID, "Accept": "*/*"}),
        httpx.Headers([(b"Set-Cookie", b"a=1"), (b"set-cookie", b"b=2"), (b"X-Name", "caf\xe9".encode())]),
        httpx.Headers([(b"X-Utf8", "caf\u00e9 \u2603".encode())]),
        httpx.Headers([(b"X-Latin", b"\xff\xfe")]),
        httpx.Headers(),
    ]
    for headers in cases:
        assert aiohttp_headers(headers) == httpx.Headers(headers.raw).multi_items()


def test_a_poster_is_made_only_for_a_client_we_made():
    assert isinstance(AsyncQwenClient(KEY, base_url=BASE_URL)._poster, ChatPoster)
    assert AsyncQwenClient(KEY, base_url=BASE_URL, http_client=httpx.AsyncClient())._poster is None
