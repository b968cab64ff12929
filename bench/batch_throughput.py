"""Throughput of QwenBatchOperator against the emulator, next to the ideal and to sequential calls.

    .venv/bin/python bench/batch_throughput.py [--items 1000] [--concurrency 50] [--latency 0.1] [--repeat 3]

The emulator runs in its own process (as the real service would be elsewhere) and answers every
request after ``--latency`` seconds. The ideal is ``ceil(items / concurrency) * latency`` (1,000
items at 50 in flight and 100 ms: 2.0 s). The operator's time is the median of ``--repeat`` batches,
each on a new client (new connections), as a task would run. Printed next to it:

- the same load through a bare aiohttp session (the floor of the HTTP stack the async client
  uses, with connections already open), and through one bare ``httpx.AsyncClient``;
- the operator with an in-process stand-in client that only sleeps ``latency`` (the batch
  engine's own overhead: rendering, requests, limiter, checkpoints, cost);
- a subset sent one by one through ``QwenHook.chat``, extrapolated (labelled as such);
- the CPU time (user + sys, ``time.process_time``) per item of each of these batches: robust when
  other processes load the machine, unlike the wall-clock ratios;
- the peak RSS of a 10,000-item batch, in a fresh subprocess (``resource.getrusage``) against a
  low-latency emulator.

Checkpointing is on throughout, as in production.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Summarise in one line: {{ item }}"
TEXT = (
    "Quarterly operations note {i}: deploys finished on time, p95 latency held under 400 ms, two "
    "customer escalations were closed and the backlog of support tickets shrank by a fifth."
)


class BenchTI:
    """The slice of a task instance the operator uses (ids for the checkpoint folder, XCom push)."""

    def __init__(self, run_id: str) -> None:
        self.dag_id, self.run_id, self.task_id, self.map_index, self.try_number = (
            "bench",
            run_id,
            "batch",
            -1,
            1,
        )
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, *args: Any, **kwargs: Any) -> Any:
        return None


@contextlib.contextmanager
def emulator(latency: float, *flags: str) -> Iterator[str]:
    """The emulator in a subprocess (``flags``: more command-line options); yields its connection JSON."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_qwen.testing.emulator",
            "--port",
            "0",
            "--latency",
            str(latency),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        match = re.search(r"(http://\S+/v1)", line)
        if not match:
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield json.dumps({"conn_type": "qwen", "host": match.group(1), "password": "test-key"})
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def batch_operator(items: int, concurrency: int, operator_class: Any = None) -> Any:
    from airflow_provider_qwen.operators import QwenBatchOperator

    return (operator_class or QwenBatchOperator)(
        task_id="batch",
        items=[TEXT.format(i=i) for i in range(items)],
        prompt=PROMPT,
        max_concurrency=concurrency,
        max_completion_tokens=200,
        progress_interval=30,
    )


def run_batch(items: int, concurrency: int, run_id: str, operator_class: Any = None) -> tuple[float, dict]:
    """One execution (task log captured, not printed); returns (seconds, qwen_batch)."""
    elapsed, _, report = timed_batch(items, concurrency, run_id, operator_class)
    return elapsed, report


def timed_batch(
    items: int, concurrency: int, run_id: str, operator_class: Any = None
) -> tuple[float, float, dict]:
    """One execution; returns (seconds, CPU seconds of this process, qwen_batch)."""
    op = batch_operator(items, concurrency, operator_class)
    ti = BenchTI(run_id)
    context = {"ti": ti, "task_instance": ti, "params": {}, "run_id": run_id}
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        op.render_template_fields(context)
        started, cpu_started = time.perf_counter(), time.process_time()
        results = op.execute(context)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if len(results) != items or not all(results):
        raise RuntimeError(f"not every item has a result; task log:\n{log.getvalue()[-3000:]}")
    return elapsed, cpu, ti.pushed["qwen_batch"]


def endpoint(conn: str) -> tuple[str, dict[str, str]]:
    """The chat-completions URL and headers of the emulator's connection JSON."""
    config = json.loads(conn)
    headers = {"Authorization": f"Bearer {config['password']}", "Content-Type": "application/json"}
    return f"{config['host']}/chat/completions", headers


def request_body(i: int) -> bytes:
    message = {"role": "user", "content": f"Summarise in one line: {TEXT.format(i=i)}"}
    request = {"model": "alibaba/qwen3.7-max", "messages": [message], "max_completion_tokens": 200}
    return json.dumps(request).encode()


async def drive(post: Callable[[int], Awaitable[None]], items: int, concurrency: int) -> tuple[float, float]:
    """Seconds and CPU seconds for ``post(i)`` over every item, ``concurrency`` at a time (after one
    warm-up round)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await post(i)

    await asyncio.gather(*(one(i) for i in range(concurrency)))  # open the connections
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(i) for i in range(items)))
    return time.perf_counter() - started, time.process_time() - cpu_started


def bare_httpx(items: int, concurrency: int, conn: str) -> tuple[float, float]:
    """Seconds for the same requests through one bare httpx.AsyncClient (no operator, no models)."""
    import httpx

    url, headers = endpoint(conn)

    async def main() -> tuple[float, float]:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:

            async def post(i: int) -> None:
                (await client.post(url, content=request_body(i), headers=headers)).raise_for_status()

            return await drive(post, items, concurrency)

    return asyncio.run(main())


def bare_aiohttp(items: int, concurrency: int, conn: str) -> tuple[float, float]:
    """Seconds for the same requests through a bare aiohttp session: the floor of our HTTP stack."""
    import aiohttp

    url, headers = endpoint(conn)

    async def main() -> tuple[float, float]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as session:

            async def post(i: int) -> None:
                async with session.post(url, data=request_body(i), headers=headers) as response:
                    response.raise_for_status()
                    await response.read()

            return await drive(post, items, concurrency)

    return asyncio.run(main())


def stand_in_operator(latency: float) -> Any:
    """The operator class with a hook whose client only sleeps ``latency`` and answers a canned reply."""
    from contextlib import asynccontextmanager

    from airflow_provider_qwen.client.models import CallInfo, ChatCompletion
    from airflow_provider_qwen.client.pricing import Cost, PriceTable
    from airflow_provider_qwen.operators import QwenBatchOperator

    reply = {
        "id": "x",
        "model": "qwen3.7-max",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "A summary."}}],
        "usage": {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50},
        "meta": {"usage": {"credits_used": 400, "usd_spent": 0.0002}},
    }

    class Client:
        async def send(self, request: Any, **_: Any) -> ChatCompletion:
            await asyncio.sleep(latency)
            completion = ChatCompletion.model_validate(reply)
            completion.call = CallInfo(request.model, "x", None, completion.reported_cost or Cost())
            return completion

        async def aclose(self) -> None:
            pass

    class Hook:
        default_model = "alibaba/qwen3.7-max"
        prices = PriceTable()

        @asynccontextmanager
        async def async_client(self, **_: Any) -> Any:
            yield Client()

    class StandIn(QwenBatchOperator):
        hook = Hook()  # type: ignore[assignment]

    return StandIn


def sequential(items: int) -> float:
    """Seconds for ``items`` requests one after another through the hook."""
    from airflow_provider_qwen.hooks.qwen import QwenHook

    hook = QwenHook()
    with contextlib.redirect_stdout(io.StringIO()):
        hook.chat("warm-up", max_completion_tokens=200)
    started = time.perf_counter()
    for i in range(items):
        hook.chat(f"Summarise in one line: {TEXT.format(i=i)}", max_completion_tokens=200)
    return time.perf_counter() - started


def rss_child(items: int, concurrency: int) -> None:
    """Run a batch of ``items`` and print this process's peak RSS in MB (Linux: ru_maxrss is KB)."""
    elapsed, report = run_batch(items, concurrency, "rss")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"peak_rss_mb": round(peak_mb, 1), "seconds": round(elapsed, 2), "ok": report["succeeded"]}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=3, help="measured batches; the median is reported")
    parser.add_argument("--sequential", type=int, default=50, help="items sent one by one (extrapolated)")
    parser.add_argument("--rss-items", type=int, default=10_000)
    parser.add_argument("--rss-latency", type=float, default=0.002)
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    os.environ["AIRFLOW__QWEN__STORAGE_BASE"] = f"file://{tempfile.mkdtemp(prefix='qwen-bench-')}"
    if args.rss_child:
        rss_child(args.rss_child, args.concurrency)
        return

    load = os.getloadavg()[0]
    ideal = math.ceil(args.items / args.concurrency) * args.latency
    with emulator(args.latency) as conn:
        os.environ["AIRFLOW_CONN_QWEN_DEFAULT"] = conn
        run_batch(args.concurrency, args.concurrency, "warm-up")  # imports, connections, first parse
        runs = [
            timed_batch(args.items, args.concurrency, f"measured-{n}") for n in range(max(1, args.repeat))
        ]
        measured, _, report = sorted(runs, key=lambda run: run[0])[len(runs) // 2]
        measured_cpu = sorted(run[1] for run in runs)[len(runs) // 2]
        floor, floor_cpu = bare_aiohttp(args.items, args.concurrency, conn)
        httpx_only, httpx_cpu = bare_httpx(args.items, args.concurrency, conn)
        seq_subset = sequential(args.sequential)
    engine, engine_cpu, _ = timed_batch(
        args.items, args.concurrency, "stand-in", stand_in_operator(args.latency)
    )
    seq_total = seq_subset / args.sequential * args.items

    with emulator(args.rss_latency) as conn:
        env = {**os.environ, "AIRFLOW_CONN_QWEN_DEFAULT": conn, "PYTHONPATH": str(ROOT)}
        command = [
            sys.executable,
            __file__,
            "--rss-child",
            str(args.rss_items),
            "--concurrency",
            str(args.concurrency),
        ]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
        rss = json.loads(out.strip().splitlines()[-1])

    def ratio(seconds: float) -> str:
        return f"{seconds:7.2f} s  {seconds / ideal:5.2f}x ideal"

    per_request = seq_subset / args.sequential * 1000
    print(
        f"QwenBatchOperator: {args.items} items, max_concurrency={args.concurrency}, emulator latency "
        f"{args.latency * 1000:g} ms in its own process, checkpointing on (load average {load:.1f}, "
        f"{os.cpu_count()} CPUs)"
    )
    print(f"  ideal                          {ideal:7.2f} s   ceil(items / concurrency) x latency")
    spread = f"median of {len(runs)}: {min(r[0] for r in runs):.2f} to {max(r[0] for r in runs):.2f} s"
    print(f"  measured: operator + emulator  {ratio(measured)}   target <= 1.05x ({spread})")
    print(
        f"      {report['requests']} requests, {report['rate_limited']} rate-limited, "
        f"peak in flight {report['concurrency']['peak_in_flight']}"
    )
    print(f"  bare aiohttp, same requests    {ratio(floor)}   our HTTP stack's floor here (warm connections)")
    print(f"  bare httpx, same requests      {ratio(httpx_only)}   one shared httpx.AsyncClient")
    print(f"  operator, stand-in client      {ratio(engine)}   no HTTP: the batch engine's own overhead")
    per_item = 1000 / args.items
    print(
        f"  CPU per item (user+sys)        operator {measured_cpu * per_item:.3f} ms (median), bare aiohttp "
        f"{floor_cpu * per_item:.3f} ms, bare httpx {httpx_cpu * per_item:.3f} ms, stand-in client "
        f"{engine_cpu * per_item:.3f} ms"
    )
    print(
        f"  sequential hook.chat           {seq_total:7.1f} s  extrapolated from {args.sequential} items in "
        f"{seq_subset:.2f} s ({per_request:.0f} ms per request): {seq_total / measured:.0f}x the batch"
    )
    print(
        f"  peak RSS, {args.rss_items} items           {rss['peak_rss_mb']:7.0f} MB  target < 300 MB "
        f"(fresh subprocess, emulator latency {args.rss_latency * 1000:g} ms, took {rss['seconds']:.1f} s)"
    )


if __name__ == "__main__":
    main()
