"""Client overhead: CPU time per request of our client vs the official openai client vs bare httpx.

A tiny keep-alive HTTP server runs in a separate process (its CPU is not counted) and answers every
POST with the same chat completion. Each client sends the same N requests, one after another; the
figure is this process's CPU time (``time.process_time``) per request, best of several rounds.
Then ``python -X importtime`` measures what importing the hook adds after ``airflow.sdk``.

    .venv/bin/python bench/client_overhead.py [-n 2000] [--rounds 3]

Targets (issue 2): ours <= openai, ours <= 1.5x bare httpx; hook import adds < 30 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

MODEL = "alibaba/qwen3.7-max"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in one short sentence."},
]
ANSWER = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1762343744,
    "model": "qwen3.7-max",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I help you today?", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": 23,
        "completion_tokens": 9,
        "total_tokens": 32,
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
    "meta": {"usage": {"credits_used": 260, "usd_spent": 0.00013}},
}


# -- the server (a separate process) ----------------------------------------------------------------


def serve(port: int) -> None:
    """A minimal HTTP/1.1 keep-alive server: every request gets ANSWER (GETs too)."""
    body = json.dumps(ANSWER).encode()
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nx-inference-id: inf-bench\r\n"
        "x-aimlapi-credits-used: 260\r\nx-aimlapi-usd-spent: 0.00013\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    reply = head + body

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                headers = await reader.readuntil(b"\r\n\r\n")
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", headers)
                if match:
                    await reader.readexactly(int(match.group(1)))
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        print(server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "0"], stdout=subprocess.PIPE, text=True, bufsize=1
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


# -- the clients ------------------------------------------------------------------------------------


def sync_cases(base_url: str) -> dict[str, tuple[Callable[[], object], Callable[[], None]]]:
    """name -> (one request, close)."""
    import httpx
    import openai

    from airflow_provider_qwen.client.client import QwenClient
    from airflow_provider_qwen.client.request import build_request

    cases: dict[str, tuple[Callable[[], object], Callable[[], None]]] = {}

    bare = httpx.Client(timeout=httpx.Timeout(600, connect=5))
    url = f"{base_url}/chat/completions"
    auth = {"Authorization": "Bearer test-key"}
    cases["bare httpx"] = (
        lambda: bare.post(url, json={"model": MODEL, "messages": MESSAGES}, headers=auth).json(),
        bare.close,
    )

    oai = openai.OpenAI(api_key="test-key", base_url=base_url, max_retries=2)
    cases["openai"] = (
        lambda: oai.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
        oai.close,
    )

    ours = QwenClient("test-key", base_url=base_url)
    cases["QwenClient.chat"] = (lambda: ours.chat(MESSAGES), ours.close)
    request = build_request(MESSAGES, model=MODEL)
    cases["QwenClient.send (prebuilt)"] = (lambda: ours.send(request), lambda: None)

    try:
        os.environ["AIRFLOW_CONN_QWEN_DEFAULT"] = json.dumps(
            {"conn_type": "qwen", "host": base_url, "password": "test-key"}
        )
        from airflow_provider_qwen.hooks.qwen import QwenHook

        hook = QwenHook()
        hook.chat(MESSAGES)
        cases["QwenHook.chat"] = (lambda: hook.chat(MESSAGES), hook.close)
    except Exception as exc:  # the hook is optional here
        print(f"(QwenHook skipped: {type(exc).__name__}: {exc})")
    return cases


def async_cases(base_url: str) -> dict[str, tuple[Callable[[], object], Callable[[], object]]]:
    """name -> (one request coroutine factory, aclose)."""
    import httpx
    import openai

    from airflow_provider_qwen.client.client import AsyncQwenClient

    bare = httpx.AsyncClient(timeout=httpx.Timeout(600, connect=5))
    url = f"{base_url}/chat/completions"
    auth = {"Authorization": "Bearer test-key"}

    async def bare_call() -> object:
        response = await bare.post(url, json={"model": MODEL, "messages": MESSAGES}, headers=auth)
        return response.json()

    oai = openai.AsyncOpenAI(api_key="test-key", base_url=base_url, max_retries=2)
    ours = AsyncQwenClient("test-key", base_url=base_url)
    return {
        "async bare httpx": (bare_call, bare.aclose),
        "async openai": (
            lambda: oai.chat.completions.create(model=MODEL, messages=MESSAGES),  # type: ignore[arg-type]
            oai.close,
        ),
        "AsyncQwenClient.chat": (lambda: ours.chat(MESSAGES), ours.aclose),
    }


def quiet_http_logs() -> None:
    """Airflow's logging setup makes httpx/httpx2 log every request at INFO: same (none) for all clients."""
    import logging

    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "openai"):
        logging.getLogger(name).setLevel(logging.WARNING)


def measure_sync(call: Callable[[], object], n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) for n calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        call()
    return time.process_time() - cpu, time.perf_counter() - wall


async def measure_async(call: Callable[[], object], n: int) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        await call()  # type: ignore[misc]
    return time.process_time() - cpu, time.perf_counter() - wall


def run_clients(base_url: str, n: int, rounds: int) -> dict[str, tuple[float, float]]:
    """name -> best (CPU us/request, wall us/request) over the rounds; rounds interleave the clients."""
    best: dict[str, tuple[float, float]] = {}

    def keep(name: str, cpu: float, wall: float) -> None:
        per = (cpu / n * 1e6, wall / n * 1e6)
        best[name] = min(best.get(name, per), per)

    cases = sync_cases(base_url)
    quiet_http_logs()
    for call, _ in cases.values():
        for _ in range(min(200, n)):  # warm up: connections, caches, lazy imports
            call()
    for _ in range(rounds):
        for name, (call, _) in cases.items():
            keep(name, *measure_sync(call, n))
    for _, close in cases.values():
        close()

    async def run_async() -> None:
        acases = async_cases(base_url)
        for call, _ in acases.values():
            for _ in range(min(200, n)):
                await call()  # type: ignore[misc]
        for _ in range(rounds):
            for name, (call, _) in acases.items():
                keep(name, *await measure_async(call, n))
        for _, aclose in acases.values():
            await aclose()  # type: ignore[misc]

    asyncio.run(run_async())
    return best


# -- import time ------------------------------------------------------------------------------------


def imported_modules(code: str) -> dict[str, int]:
    """module -> self import time in microseconds, from ``python -X importtime -c code``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    times: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s+(.+)$", line)
        if match:
            times[match.group(2).strip()] = int(match.group(1))
    return times


def added_import_ms(baseline: str, extra: str, repeats: int = 5) -> tuple[float, int]:
    """Median ms of the modules ``extra`` imports beyond ``baseline`` (their self times), and their count."""
    samples, count = [], 0
    for _ in range(repeats):
        before = imported_modules(baseline)
        after = imported_modules(f"{baseline}; {extra}")
        added = {m: t for m, t in after.items() if m not in before}
        samples.append(sum(added.values()) / 1000)
        count = len(added)
    return statistics.median(samples), count


# -- report -----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("-n", type=int, default=2000, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best round counts")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--skip-imports", action="store_true", help="skip the import-time measurement")
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return

    proc, base_url = start_server()
    try:
        results = run_clients(base_url, args.n, args.rounds)
    finally:
        proc.terminate()
        proc.wait()

    print(f"\nClient CPU time per request: {args.n} requests x best of {args.rounds} rounds, loopback server")
    print(f"(server in another process; Python {sys.version.split()[0]}, {socket.gethostname()})\n")
    print(f"{'client':<28}{'CPU us/req':>12}{'wall us/req':>13}")
    for name, (cpu, wall) in results.items():
        print(f"{name:<28}{cpu:>12.1f}{wall:>13.1f}")

    def ratio(a: str, b: str, target: float) -> None:
        if a in results and b in results:
            value = results[a][0] / results[b][0]
            verdict = "ok" if value <= target else "MISSED"
            print(f"  {a} / {b}: {value:.2f}x (target <= {target:g}x: {verdict})")

    print("\nRatios (CPU):")
    for ours in ("QwenClient.chat", "QwenHook.chat"):
        ratio(ours, "openai", 1.0)
        ratio(ours, "bare httpx", 1.5)
    ratio("AsyncQwenClient.chat", "async openai", 1.0)
    ratio("AsyncQwenClient.chat", "async bare httpx", 1.5)

    if not args.skip_imports:
        print("\nImport time added (median of 5, self times of the newly imported modules):")
        for baseline in ("import airflow.sdk", "from airflow.sdk import BaseHook, BaseOperator"):
            for extra in (
                "import airflow_provider_qwen.hooks.qwen",
                "import airflow_provider_qwen.operators",
                "import airflow_provider_qwen.client.client",  # paid at a task's first request
            ):
                ms, count = added_import_ms(baseline, extra)
                verdict = "" if "client" in extra else f"; target < 30 ms: {'ok' if ms < 30 else 'MISSED'}"
                print(f"  after `{baseline}`: `{extra}`")
                print(f"      adds {ms:.1f} ms ({count} modules{verdict})")


if __name__ == "__main__":
    main()
