"""The async client's aiohttp transport against the emulator over real sockets.

Every transport failure must read the same through both clients: the sync one runs on httpx's own
stack, so it is the reference for the error class, the retries and the count of tries that may
have been charged (``unconfirmed_tries``).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest

from airflow_provider_qwen.client import AsyncQwenClient, QwenClient
from airflow_provider_qwen.client.errors import QwenError, StreamError
from airflow_provider_qwen.client.retry import RetryPolicy
from airflow_provider_qwen.client.transport import AiohttpTransport
from airflow_provider_qwen.testing import Fault

PROMPT = "Quarterly revenue rose 12 percent. Costs fell. The board approved the plan."


def sync_call(base_url: str, key: str, *, stream: bool = False, timeout: float = 30) -> object:
    policy = RetryPolicy(max_retries=1, sleep=lambda _: None)
    with QwenClient(key, base_url=base_url, max_retries=1, retry=policy, timeout=timeout) as client:
        if stream:
            with client.stream(PROMPT) as chunks:
                list(chunks)
            return chunks.completion
        return client.chat(PROMPT)


def async_call(base_url: str, key: str, *, stream: bool = False, timeout: float = 30) -> object:
    async def noop(_: float) -> None:
        return None

    async def run() -> object:
        policy = RetryPolicy(max_retries=1, async_sleep=noop)
        async with AsyncQwenClient(
            key, base_url=base_url, max_retries=1, retry=policy, timeout=timeout
        ) as client:
            if stream:
                async with client.stream(PROMPT) as chunks:
                    async for _ in chunks:
                        pass
                return chunks.completion
            return await client.chat(PROMPT)

    return asyncio.run(run())


def outcome(call, emulator, faults: list[Fault], **kwargs) -> tuple[str, int, int]:
    """(error class, unconfirmed tries, requests the emulator saw) of one call under ``faults``."""
    emulator.reset()
    emulator.add_faults(*faults)
    with pytest.raises(QwenError) as raised:
        call(emulator.base_url, emulator.api_key, **kwargs)
    time.sleep(max(f.delay for f in faults))  # let timed-out requests finish before the next call
    error = raised.value
    chain: list[BaseException] = []
    link: BaseException | None = error
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    for link in chain:
        assert emulator.api_key not in str(link), type(link)
        assert emulator.api_key not in repr(link), type(link)
    return type(error).__name__, error.unconfirmed_tries, len(emulator.chat_requests())


@pytest.mark.parametrize(
    ("name", "faults", "kwargs", "expected"),
    [
        # dropped after the request went out: maybe charged, retried once, dropped again
        ("drop", [Fault.drop(), Fault.drop()], {}, ("APIConnectionError", 2, 2)),
        # the body cut in half: a read failure after sending
        ("cut body", [Fault.cut(), Fault.cut()], {}, ("APIConnectionError", 2, 2)),
        # no answer within the read timeout
        ("timeout", [Fault.latency(0.5), Fault.latency(0.5)], {"timeout": 0.2}, ("APITimeoutError", 2, 2)),
        # a proxy's HTML page: an answer, never charged
        ("html", [Fault.html(502), Fault.html(502)], {}, ("ServerError", 0, 2)),
        # a stream cut after its first events: never retried
        ("stream cut", [Fault.cut(after_chunks=2)], {"stream": True}, ("StreamError", 0, 1)),
    ],
)
def test_a_fault_reads_the_same_through_both_clients(qwen_emulator, name, faults, kwargs, expected):
    synced = outcome(sync_call, qwen_emulator, faults, **kwargs)
    awaited = outcome(async_call, qwen_emulator, faults, **kwargs)
    assert synced == expected, name
    assert awaited == synced, name


def test_a_closed_port_is_a_connect_error_that_was_never_sent():
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for call in (sync_call, async_call):
        with pytest.raises(QwenError) as raised:
            call(f"http://127.0.0.1:{port}/v1", "sk-closed-port-SECRET")
        assert "could not reach" in str(raised.value)
        assert raised.value.unconfirmed_tries == 0  # nothing reached a server: nothing to pay
        assert "sk-closed-port-SECRET" not in repr(raised.value) + str(raised.value.__cause__)


def test_a_cut_stream_keeps_what_arrived_through_aiohttp(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut(after_chunks=3))
    with pytest.raises(StreamError) as raised:
        async_call(qwen_emulator.base_url, qwen_emulator.api_key, stream=True)
    partial = raised.value.partial
    assert partial is not None
    assert partial.cost.estimated
    assert len(qwen_emulator.chat_requests()) == 1


def test_connections_are_capped_and_reused(qwen_emulator):
    qwen_emulator.latency = 0.05

    async def run() -> None:
        async with AsyncQwenClient(
            qwen_emulator.api_key, base_url=qwen_emulator.base_url, max_connections=3
        ) as client:
            await asyncio.gather(*(client.chat(f"{PROMPT} #{i}") for i in range(12)))
            await asyncio.gather(*(client.chat(f"{PROMPT} #{i}") for i in range(3)))

    asyncio.run(run())
    assert len(qwen_emulator.chat_requests()) == 15
    peers = {r.peer for r in qwen_emulator.chat_requests()}
    assert None not in peers
    assert len(peers) <= 3  # 15 requests over at most 3 kept-alive connections


def test_a_streamed_answer_arrives_event_by_event(qwen_emulator):
    qwen_emulator.add_faults(Fault.latency(0, chunk_delay=0.2))

    async def run() -> list[float]:
        loop = asyncio.get_running_loop()
        seen: list[float] = []
        async with (
            AsyncQwenClient(qwen_emulator.api_key, base_url=qwen_emulator.base_url) as client,
            client.stream(PROMPT) as chunks,
        ):
            async for _ in chunks:
                seen.append(loop.time())
        return seen

    seen = asyncio.run(run())
    assert len(seen) > 3
    assert seen[-1] - seen[0] >= 0.2 * (len(seen) - 2)  # not buffered until the end


def clear_proxy_env(monkeypatch) -> None:
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


def test_the_proxy_from_the_environment_is_used_unless_no_proxy_exempts_the_host(qwen_emulator, monkeypatch):
    clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", qwen_emulator.url)  # the emulator answers absolute-form targets
    answer = async_call("http://qwen.invalid/v1", qwen_emulator.api_key)
    assert answer.content
    (request,) = qwen_emulator.chat_requests()
    assert request.headers["host"] == "qwen.invalid"  # asked of the proxy, for the named host

    monkeypatch.setenv("NO_PROXY", "qwen.invalid")
    with pytest.raises(QwenError, match="could not reach") as raised:
        async_call("http://qwen.invalid/v1", qwen_emulator.api_key)
    assert raised.value.unconfirmed_tries == 0
    assert len(qwen_emulator.chat_requests()) == 1


# -- where aiohttp has no timeout of httpx's, or no answer for a case --------------------------------


def serve_in_thread(handler) -> int:
    """A loopback asyncio server running ``handler(reader, writer)`` in a daemon thread; its port."""
    ready: list[int] = []
    started = threading.Event()

    def run() -> None:
        async def main() -> None:
            server = await asyncio.start_server(handler, "127.0.0.1", 0)
            ready.append(server.sockets[0].getsockname()[1])
            started.set()
            await asyncio.sleep(3600)

        asyncio.run(main())

    threading.Thread(target=run, daemon=True).start()
    started.wait(5)
    return ready[0]


def test_a_proxy_that_refuses_is_never_charged_and_its_password_never_shown(monkeypatch):
    async def refuse(reader, writer) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    clear_proxy_env(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", f"http://user:proxypass@127.0.0.1:{serve_in_thread(refuse)}")
    with pytest.raises(QwenError, match="407") as raised:
        async_call("https://api.example.test/v1", "sk-proxy-test")
    assert raised.value.unconfirmed_tries == 0  # the request never got past the proxy
    assert "proxypass" not in str(raised.value)


def test_a_socks_proxy_in_the_environment_is_refused_clearly(qwen_emulator, monkeypatch):
    clear_proxy_env(monkeypatch)
    monkeypatch.setenv("ALL_PROXY", "socks5://user:pw@127.0.0.1:1080")
    with pytest.raises(QwenError, match="is not supported; allowed: http://, https://") as raised:
        async_call(qwen_emulator.base_url, qwen_emulator.api_key)
    assert "user:pw" not in str(raised.value)
    assert qwen_emulator.chat_requests() == []


def test_a_server_that_never_reads_the_request_times_out():
    with socket.socket() as server:  # listens, never accepts: the upload stalls in the kernel buffers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/v1/chat/completions"

        async def run() -> float:
            started = time.monotonic()
            async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=1)) as client:
                post = client.post(url, content=b"x" * (16 << 20), timeout=httpx.Timeout(0.3))
                # maybe sent: counted as possibly charged; without the bound, wait_for's TimeoutError
                with pytest.raises(httpx.ReadTimeout):
                    await asyncio.wait_for(post, 10)
            return time.monotonic() - started

        assert asyncio.run(run()) < 5  # pool + write + read = 0.9 s; without a bound it hangs


def test_a_slow_name_lookup_is_bounded_by_the_connect_timeout(monkeypatch):
    real = socket.getaddrinfo

    def slow(host, *args, **kwargs):
        if host in ("slow.test", b"slow.test"):
            time.sleep(2)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", slow)

    async def run() -> float:
        started = time.monotonic()
        async with httpx.AsyncClient(transport=AiohttpTransport(max_connections=1)) as client:
            with pytest.raises(httpx.ConnectTimeout):  # never sent
                await client.get("http://slow.test/v1/models", timeout=httpx.Timeout(30, connect=0.3))
        return time.monotonic() - started

    assert asyncio.run(run()) < 1.5


def test_a_client_used_from_a_second_event_loop_refuses_before_sending(qwen_emulator):
    client = AsyncQwenClient(qwen_emulator.api_key, base_url=qwen_emulator.base_url, max_retries=0)
    asyncio.run(client.chat(PROMPT))
    with pytest.raises(RuntimeError, match="bound to the event loop of its first request"):
        asyncio.run(client.chat(PROMPT))
    assert len(qwen_emulator.chat_requests()) == 1
