"""No credential leaves a client, whatever a hostile server or proxy echoes back (issue 13, item 6).

Each server here is a raw socket on loopback that quotes the request it got: as a malformed status
line (the HTTP library's error then quotes it, and chains it), in a JSON 400 error whose message is
long enough that a 300-character cut lands inside the key, in a 200 that is not a completion, in an
SSE error event, and as a proxy answering 407 with a page (and a reason phrase) quoting
``Proxy-Authorization``. For the sync client, the async client (aiohttp transport) and streams, the
key, the proxy password, ``user:password`` and its base64 appear in no ``str``, ``repr``, formatted
traceback, chained exception (``__cause__``, ``__context__``, ``args``) or log record.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable, Iterator

import pytest

from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import QwenError
from airflow_provider_qwen.client.retry import RetryPolicy

KEY = "sk-hostile-" + "Zq7Xw3Vb9Nm2Lk5J" * 8  # 139 characters
PROXY_USER, PROXY_PASSWORD = "proxyuser", "Pr0xy-s3cret!pass"
PROXY_BASIC = base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
SECRETS = (KEY, PROXY_PASSWORD, f"{PROXY_USER}:{PROXY_PASSWORD}", PROXY_BASIC)
PAD = "x" * 200

Handler = Callable[[bytes], bytes]


class HostileServer:
    """A loopback HTTP/1.1 server that answers each request with ``handler(raw request)``, then closes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self._closing = False
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if self._closing:
                conn.close()
                return
            with conn:
                try:
                    raw = _read_request(conn)
                    self.requests.append(raw)
                    conn.sendall(self.handler(raw))
                except OSError:
                    pass

    def close(self) -> None:
        self._closing = True
        socket.create_connection(("127.0.0.1", self.port)).close()  # wakes the accept()
        self._thread.join(timeout=5)
        self._sock.close()


def _read_request(conn: socket.socket) -> bytes:
    """One whole request (head and Content-Length body), so the client has finished writing."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def request_head(raw: bytes) -> str:
    return raw.partition(b"\r\n\r\n")[0].decode("latin-1")


def echo_status_line(raw: bytes) -> bytes:
    """Malformed HTTP: the status line is the request's head, its lines joined (h11/aiohttp quote it)."""
    return request_head(raw).replace("\r\n", " | ").encode("latin-1") + b"\r\n\r\n"


def http_answer(status: str, body: str, content_type: str, extra: str = "") -> bytes:
    data = body.encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(data)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode("latin-1") + data


def _quoted_key(raw: bytes) -> str:
    """The key the request sent, as a server that quotes it without its ``Bearer`` would."""
    for line in request_head(raw).split("\r\n"):
        if line.lower().startswith("authorization:"):
            return line.split()[-1]
    return ""


def json_400_quoting_headers(raw: bytes) -> bytes:
    """A JSON 400 whose message quotes the headers; the key starts ~250 characters in (a cut at 300
    lands inside it), bare and as its header line."""
    message = f"invalid request {PAD[:230]} key {_quoted_key(raw)} from headers: {request_head(raw)}"
    body = json.dumps({"message": message, "statusCode": 400, "path": "/v1/chat/completions"})
    return http_answer("400 Bad Request", body, "application/json")


def ok_but_not_a_completion(raw: bytes) -> bytes:
    """A 200 whose body is not a chat completion and quotes the key around character 300."""
    body = json.dumps({"echo": f"{PAD}{PAD[:60]} {_quoted_key(raw)} {request_head(raw)}"})
    return http_answer("200 OK", body, "application/json")


def sse_error_quoting_key(raw: bytes) -> bytes:
    """A stream whose second event is an error chunk quoting the key beyond a 300-character cut."""
    chunk = {
        "id": "c1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}, "finish_reason": None}],
    }
    error = {"error": {"message": f"upstream refused {PAD}{PAD[:80]} {_quoted_key(raw)}"}}
    events = f"data: {json.dumps(chunk)}\n\ndata: {json.dumps(error)}\n\n"
    return http_answer("200 OK", events, "text/event-stream")


def sse_bad_event_quoting_key(raw: bytes) -> bytes:
    """A stream whose event is not a chunk, quoting the key where a 200-character cut lands."""
    events = f"data: {PAD[:150]} {_quoted_key(raw)} trailing\n\n"
    return http_answer("200 OK", events, "text/event-stream")


def proxy_407(raw: bytes) -> bytes:
    """A proxy refusing the credentials: the page and the reason phrase quote Proxy-Authorization."""
    headers = request_head(raw)
    basic = next(
        (
            line.split()[-1]
            for line in headers.split("\r\n")
            if line.lower().startswith("proxy-authorization")
        ),
        "",
    )
    page = (
        "<html><body><h1>407 Proxy Authentication Required</h1><p>credentials "
        f"<code>{basic}</code> refused</p><pre>{headers}</pre></body></html>"
    )
    return http_answer(
        f"407 Proxy Authentication Required (Proxy-Authorization: Basic {basic}; <{basic}>)",
        page,
        "text/html",
        extra="Proxy-Authenticate: Basic realm=proxy\r\n",
    )


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], HostileServer]]:
    servers: list[HostileServer] = []

    def _serve(handler: Handler) -> HostileServer:
        servers.append(HostileServer(handler))
        return servers[-1]

    yield _serve
    for server in servers:
        server.close()


# -- what must never show -----------------------------------------------------------------------------


def chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything reachable from it: causes, contexts, and exceptions among ``args``."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        todo += [a for a in current.args if isinstance(a, BaseException)]


def exposed_texts(exc: BaseException, caplog: pytest.LogCaptureFixture | None = None) -> list[str]:
    texts = ["".join(traceback.format_exception(exc))]
    for link in chain(exc):
        texts += [str(link), repr(link), repr(link.args), *getattr(link, "__notes__", [])]
        if isinstance(link, QwenError):
            texts.append(json.dumps(link.body, default=str))
    if caplog is not None:
        handler = logging.Formatter()
        texts += [handler.format(record) for record in caplog.records]
    return texts


def assert_no_secret(exc: BaseException, caplog: pytest.LogCaptureFixture | None = None) -> None:
    texts = exposed_texts(exc, caplog)
    found = {secret[:12]: sum(text.count(secret) for text in texts) for secret in SECRETS}
    # a prefix of the key (a cut inside it) counts too
    found["key prefix"] = sum(text.count(KEY[:16]) for text in texts)
    assert not any(found.values()), f"credentials found: {found}\n{texts[0]}"


def fast(max_retries: int = 1) -> RetryPolicy:
    async def no_wait(_: float) -> None:
        return None

    return RetryPolicy(max_retries=max_retries, sleep=lambda _: None, async_sleep=no_wait)


def sync_failure(client: QwenClient, call: str) -> QwenError:
    def run() -> None:
        if call == "chat":
            client.chat("hi")
        else:
            for _ in client.stream("hi"):
                pass

    with pytest.raises(QwenError) as info:
        run()
    return info.value


def async_failure(client_factory: Callable[[], AsyncQwenClient], call: str) -> QwenError:
    async def run() -> QwenError:
        async with client_factory() as client:
            try:
                if call == "chat":
                    await client.chat("hi")
                else:
                    async for _ in client.stream("hi"):
                        pass
            except QwenError as exc:
                return exc
        raise AssertionError("no error")

    return asyncio.run(run())


HANDLERS = {
    "malformed-echo": echo_status_line,
    "json-400": json_400_quoting_headers,
    "not-a-completion": ok_but_not_a_completion,
}


@pytest.mark.parametrize("call", ["chat", "stream"])
@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_sync_client_says_no_credential(serve, caplog, handler: str, call: str):
    server = serve(HANDLERS[handler])
    caplog.set_level(logging.DEBUG)
    with QwenClient(KEY, base_url=server.base_url, retry=fast(), max_retries=1) as client:
        exc = sync_failure(client, call)
    assert server.requests
    assert KEY in server.requests[0].decode("latin-1")  # it was sent, and echoed
    assert_no_secret(exc, caplog)


@pytest.mark.parametrize("call", ["chat", "stream"])
@pytest.mark.parametrize("handler", sorted(HANDLERS))
def test_async_client_says_no_credential(serve, caplog, handler: str, call: str):
    server = serve(HANDLERS[handler])
    caplog.set_level(logging.DEBUG)
    exc = async_failure(
        lambda: AsyncQwenClient(KEY, base_url=server.base_url, retry=fast(), max_retries=1), call
    )
    assert server.requests
    assert_no_secret(exc, caplog)


@pytest.mark.parametrize("handler", [sse_error_quoting_key, sse_bad_event_quoting_key])
def test_stream_errors_are_scrubbed_before_they_are_cut(serve, caplog, handler: Handler):
    server = serve(handler)
    with QwenClient(KEY, base_url=server.base_url, retry=fast(0), max_retries=0) as client:
        sync_exc = sync_failure(client, "stream")
    async_exc = async_failure(lambda: AsyncQwenClient(KEY, base_url=server.base_url, max_retries=0), "stream")
    for exc in (sync_exc, async_exc):
        assert "***" in str(exc)
        assert_no_secret(exc, caplog)


def test_the_malformed_echo_is_retold_not_chained(serve):
    """The httpx/httpcore (or aiohttp) errors are replaced by scrubbed stand-ins naming their class."""
    server = serve(echo_status_line)
    with QwenClient(KEY, base_url=server.base_url, max_retries=0) as client:
        exc = sync_failure(client, "chat")
    links = list(chain(exc))[1:]
    assert links
    assert all(type(link).__name__.startswith("Scrubbed") for link in links)
    assert "httpx.RemoteProtocolError" in str(exc.__cause__)
    assert exc.__suppress_context__
    assert exc.__context__ is None


@pytest.fixture
def hostile_proxy(serve, monkeypatch) -> HostileServer:
    proxy = serve(proxy_407)
    url = f"http://{PROXY_USER}:{PROXY_PASSWORD.replace('!', '%21')}@127.0.0.1:{proxy.port}"
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, url)
    return proxy


# the target is never reached: the proxy answers (an https target is tunnelled with CONNECT)
@pytest.mark.parametrize("target", ["http://127.0.0.1:9/v1", "https://127.0.0.1:9/v1"])
@pytest.mark.parametrize("call", ["chat", "stream"])
def test_a_proxy_page_quoting_proxy_authorization_is_scrubbed(hostile_proxy, caplog, target: str, call: str):
    caplog.set_level(logging.DEBUG)
    with QwenClient(KEY, base_url=target, max_retries=0) as client:
        sync_exc = sync_failure(client, call)
    async_exc = async_failure(lambda: AsyncQwenClient(KEY, base_url=target, max_retries=0), call)
    sent = b"".join(hostile_proxy.requests).decode("latin-1")
    assert sent.count(f"Basic {PROXY_BASIC}") >= 2  # both clients sent the credentials; both were echoed
    for exc in (sync_exc, async_exc):
        assert_no_secret(exc, caplog)


def test_a_base_url_with_userinfo_is_never_quoted(serve, caplog):
    server = serve(echo_status_line)
    base_url = server.base_url.replace("http://", f"http://{PROXY_USER}:{PROXY_PASSWORD}@")
    with QwenClient(KEY, base_url=base_url, max_retries=0) as client:
        assert PROXY_PASSWORD not in repr(client)
        exc = sync_failure(client, "chat")
    assert_no_secret(exc, caplog)
    with pytest.raises(ValueError, match="must start with http") as info:
        QwenClient(KEY, base_url=f"ftp://{PROXY_USER}:{PROXY_PASSWORD}@host/v1")
    assert_no_secret(info.value)
