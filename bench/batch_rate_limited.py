"""QwenBatchOperator against an account's limits it is not told, next to the official openai client.

    .venv/bin/python bench/batch_rate_limited.py [--items 600] [--latency 0.1] [--cap 16] [--repeat 1]

Every case runs the emulator in its own process with a cap of ``--cap`` requests in flight and
``--latency`` per answer, plus the case's limit; the client is never told the limits. Cases:

- **concurrency cap**: just the cap; without ``Retry-After`` (the service's way) and with
  ``Retry-After: 1`` on the concurrency 429;
- **requests per minute**: ``--rpm`` requests per ``--window`` seconds (the service's minute
  shortened so the limit bites within seconds; our limiter is told the same window length, as it
  knows the service's is a minute), without ``Retry-After`` and with the exact one ("auto": the
  time until the window admits again);
- **random 429s**: ``--random`` of the requests refused at random (seeded), no ``Retry-After``.

Columns, all on one run of this script, side by side:

- **floor**: the official ``openai.AsyncOpenAI`` told the limits: a semaphore of the cap (and
  starts paced evenly at 98% of the rate: exactly at it, the window's edge refuses a few), so it
  meets no 429 (for random 429s: the fault-free floor); the best of two runs;
- **openai loop**: what a user writes by hand: a semaphore of 64 and the client's own retries
  (``max_retries=8``: exponential backoff from 0.5 s, ``Retry-After`` honoured);
- **ours**: ``QwenBatchOperator(max_concurrency=64)`` run outside Airflow as
  bench/batch_throughput.py runs it (a stand-in task instance, checkpointing on);

each as seconds and ratio to the floor, with the share of the HTTP requests sent that met a 429
(and the items a client gave up on when its retries ran out, "lost"),
and what our limiter learned. For random 429s, ours is also compared with ours fault-free (the
concurrency-cap case without ``Retry-After``: the same server without the faults).
Goals: ours <= 1.10x the floor in every case, and <= 1.25x its fault-free time under random 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_throughput import PROMPT, TEXT, run_batch  # noqa: E402
from batch_throughput import emulator as emulator_conn  # noqa: E402

MODEL = "alibaba/qwen3.7-max"
MINUTE = 60.0


@dataclass
class Case:
    name: str
    flags: list[str]
    window: float = MINUTE  # the rate window, on the server and as our limiter takes it
    rate: float | None = None  # requests per second the floor is paced at (2% under the limit)
    fault_free: str | None = None  # the case whose floor and ours are this one's fault-free figures


@dataclass
class Run:
    seconds: float
    sent: int  # HTTP requests sent
    refused: int  # of them 429
    failed: int = 0  # items given up on (the client's retries ran out)
    learned: dict[str, Any] = field(default_factory=dict)

    @property
    def share(self) -> float:
        return self.refused / self.sent if self.sent else 0.0


@contextlib.contextmanager
def emulator(flags: list[str]) -> Iterator[str]:
    """The emulator in a subprocess with ``flags`` (they carry the latency); yields its base URL."""
    with emulator_conn(0.0, *flags) as conn:  # a later --latency in flags wins
        yield json.loads(conn)["host"]


def openai_run(base_url: str, items: int, *, concurrency: int, rate: float | None, retries: int) -> Run:
    """``items`` chat completions through one ``openai.AsyncOpenAI``: ``concurrency`` at a time,
    starts spaced ``1 / rate`` s apart when a rate is given, the client's own retries."""
    import httpx
    import openai

    counts = {"sent": 0, "refused": 0, "failed": 0}

    async def count(response: httpx.Response) -> None:
        counts["sent"] += 1
        counts["refused"] += response.status_code == 429

    async def main() -> float:
        http = httpx.AsyncClient(
            event_hooks={"response": [count]},
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100),
            timeout=60,
        )
        client = openai.AsyncOpenAI(
            api_key="test-key", base_url=base_url, max_retries=retries, http_client=http
        )
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(i: int) -> None:
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            async with gate:
                text = PROMPT.replace("{{ item }}", TEXT.format(i=i))
                try:
                    await client.chat.completions.create(
                        model=MODEL, messages=[{"role": "user", "content": text}], max_completion_tokens=200
                    )
                except openai.RateLimitError:  # its retries ran out: the item is lost
                    counts["failed"] += 1

        async with client:
            await asyncio.gather(*(one(i) for i in range(items)))
        return time.perf_counter() - started

    seconds = asyncio.run(main())
    return Run(seconds, counts["sent"], counts["refused"], counts["failed"])


def ours_run(base_url: str, items: int, window: float, run_id: str) -> Run:
    """``QwenBatchOperator(max_concurrency=64)`` over ``items`` (our limiter takes ``window``)."""
    from airflow_provider_qwen.batch.sender import RateLimitedSender

    os.environ["AIRFLOW_CONN_QWEN_DEFAULT"] = json.dumps(
        {"conn_type": "qwen", "host": base_url, "password": "test-key"}
    )
    RateLimitedSender.rate_window_s = window
    try:
        seconds, report = run_batch(items, 64, run_id)
    finally:
        RateLimitedSender.rate_window_s = MINUTE
    return Run(seconds, report["rate_limited"] + report["requests"], report["rate_limited"], learned=report)


def measure(runs: list[Run]) -> Run:
    """The median run by time."""
    return sorted(runs, key=lambda run: run.seconds)[len(runs) // 2]


def learned_text(report: dict[str, Any]) -> str:
    limits = report.get("limits", {})
    parts = []
    if limits.get("concurrency_cap") is not None:
        parts.append(f"cap {limits['concurrency_cap']}")
    if limits.get("requests_per_minute") is not None:
        per_window = limits["requests_per_minute"] * limits["rate_window_s"] / MINUTE
        parts.append(f"{per_window:.0f}/{limits['rate_window_s']:g}s")
    parts.append(f"lowest {report['concurrency']['lowest']}")
    parts.append(
        f"429s: {limits.get('concurrency_429s', 0)} cap, {limits.get('rate_429s', 0)} rate, "
        f"{limits.get('random_429s', 0)} random, {limits.get('unexplained_429s', 0)} other"
    )
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=600)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--cap", type=int, default=16, help="server cap of requests in flight")
    parser.add_argument("--rpm", type=int, default=200, help="requests per --window in the rate case")
    parser.add_argument("--window", type=float, default=2.0, help="the rate case's window, seconds")
    parser.add_argument("--random", type=float, default=0.1, help="share of random 429s")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell; the median is reported")
    args = parser.parse_args()

    os.environ["AIRFLOW__QWEN__STORAGE_BASE"] = f"file://{tempfile.mkdtemp(prefix='qwen-bench-')}"
    logging.getLogger("openai").setLevel(logging.WARNING)  # its "Retrying request" lines
    base = ["--latency", str(args.latency), "--max-concurrency", str(args.cap)]
    rpm = ["--rpm", str(args.rpm), "--rate-window-s", str(args.window)]
    rate = 0.98 * args.rpm / args.window  # exactly at the limit, the window's edge refuses some
    cases = [
        Case(f"concurrency cap {args.cap}, no Retry-After", base),
        Case(f"concurrency cap {args.cap}, Retry-After: 1", [*base, "--concurrency-retry-after", "1"]),
        Case(f"{args.rpm} requests / {args.window:g} s, no Retry-After", [*base, *rpm], args.window, rate),
        Case(
            f"{args.rpm} requests / {args.window:g} s, Retry-After (exact)",
            [*base, *rpm, "--rate-retry-after", "auto"],
            args.window,
            rate,
        ),
        Case(
            f"{args.random:.0%} random 429s (+ cap {args.cap}), no Retry-After",
            [*base, "--random-429", str(args.random), "--seed", str(args.seed)],
            fault_free=f"concurrency cap {args.cap}, no Retry-After",
        ),
    ]
    load = os.getloadavg()[0]
    bench_started = time.perf_counter()
    with emulator(["--latency", str(args.latency)]) as url:  # imports, first parse: not measured
        ours_run(url, 64, MINUTE, "warm-up")
        openai_run(url, 16, concurrency=16, rate=None, retries=0)

    results: dict[str, dict[str, Run]] = {}
    for case in cases:
        cells: dict[str, list[Run]] = {"floor": [], "openai": [], "ours": []}
        with emulator(case.flags) as url:
            openai_run(url, 2 * args.cap, concurrency=args.cap, rate=None, retries=8)  # the server warms up

            def fresh(case: Case = case) -> None:
                if case.rate:
                    time.sleep(case.window + 0.1)  # a window of its own for every run

            for n in range(max(1, args.repeat)):
                if not case.fault_free:  # (else the fault-free floor, measured in that case)
                    floors = []
                    for _ in range(2):  # the best of two: a floor is the least it takes
                        fresh()
                        floors.append(
                            openai_run(url, args.items, concurrency=args.cap, rate=case.rate, retries=8)
                        )
                    cells["floor"].append(min(floors, key=lambda run: run.seconds))
                fresh()
                cells["openai"].append(openai_run(url, args.items, concurrency=64, rate=None, retries=8))
                fresh()
                cells["ours"].append(ours_run(url, args.items, case.window, f"{len(results)}-{n}"))
        if case.fault_free:
            cells["floor"] = [results[case.fault_free]["floor"]]
            cells["fault_free"] = [results[case.fault_free]["ours"]]
        results[case.name] = {column: measure(runs) for column, runs in cells.items() if runs}

    print(
        f"QwenBatchOperator under limits it is not told: {args.items} items, {args.latency * 1000:g} ms "
        f"latency, server cap {args.cap} in flight, emulator in its own process (load average "
        f"{load:.1f}, {os.cpu_count()} CPUs; {time.perf_counter() - bench_started:.0f} s for the whole "
        f"bench; median of {max(1, args.repeat)})"
    )
    ideal = math.ceil(args.items / args.cap) * args.latency
    print(f"  ideal at the cap: ceil({args.items} / {args.cap}) x {args.latency:g} s = {ideal:.2f} s")
    print("  each cell: time as a ratio to the floor, seconds, share of the HTTP requests sent met by a 429")
    header = f"  {'case':<42} | {'floor':<27} | {'openai loop (64)':<27} | {'ours (64)':<27}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    worst = 0.0
    for case in cases:
        cell = results[case.name]
        floor = cell["floor"].seconds

        def text(run: Run, floor: float = floor) -> str:
            lost = f" {run.failed} lost" if run.failed else ""
            return f"{run.seconds / floor:4.2f}x {run.seconds:5.2f} s {run.share:4.0%}{lost}"

        worst = max(worst, cell["ours"].seconds / floor)
        cells = " | ".join(f"{text(cell[column]):<27}" for column in ("floor", "openai", "ours"))
        print(f"  {case.name:<42} | {cells}")
        print(f"  {'':<42}   ours learned: {learned_text(cell['ours'].learned)}")
        if "fault_free" in cell:
            free = cell["fault_free"].seconds
            print(
                f"  {'':<42}   ours / ours fault-free: {cell['ours'].seconds / free:.2f}x "
                f"({cell['ours'].seconds:.2f} s / {free:.2f} s; goal <= 1.25x)"
            )
    print(f"  worst ours / floor: {worst:.2f}x (goal <= 1.10x)")


if __name__ == "__main__":
    main()
