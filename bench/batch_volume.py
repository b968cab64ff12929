"""A data-lake-sized batch: 100,000 documents from a JSON-lines file to a JSON-lines results file.

    .venv/bin/python bench/batch_volume.py [--items 100000] [--concurrency 64] [--latency 0.002]

The emulator runs in its own process and answers after ``--latency`` (2 ms: the HTTP round trips,
not the model, are what is measured). Printed side by side:

- the bare-HTTP floor: one aiohttp session posting the same requests at the same concurrency,
  reading the input file as it goes (no rendering, no checkpoint, no results file);
- ``QwenBatchOperator(items=<file URL>, results_path=<file URL>)`` in a fresh subprocess, with
  checkpointing on, as a task would run: its time against the floor, and its peak RSS
  (``ru_maxrss``) for the whole process, Airflow imports included;
- the same at a tenth of the items, so the cost of one more item in time and memory can be told
  from the fixed cost, and extrapolated to 1,000,000 items;
- the CPU time (user + sys, ``time.process_time``) per item of the operator's ``execute`` and of
  the floor: robust when other processes load the machine, unlike the wall-clock ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_throughput import PROMPT, TEXT, BenchTI, emulator, endpoint

ROOT = Path(__file__).resolve().parents[1]
MODEL = "alibaba/qwen3.7-max"


def write_input(path: Path, items: int) -> None:
    with path.open("w", encoding="utf-8") as file:
        for i in range(items):
            file.write(json.dumps({"id": i, "text": TEXT.format(i=i)}) + "\n")


def bare_floor(source: Path, concurrency: int, conn: str) -> tuple[float, float]:
    """Seconds, and CPU seconds of this process, for an aiohttp session to post one request per
    input line, ``concurrency`` at a time."""
    import aiohttp

    url, headers = endpoint(conn)
    prompt = PROMPT.replace("{{ item }}", "")

    async def main() -> float:
        lines = source.open("rb")
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def worker() -> None:
                for line in lines:  # one shared file iterator: each line taken once
                    text = json.loads(line)["text"]
                    message = {"role": "user", "content": prompt + text}
                    body = {"model": MODEL, "messages": [message], "max_completion_tokens": 200}
                    async with session.post(url, json=body) as response:
                        await response.json()
                        assert response.status == 200, response.status

            started = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - started

    cpu_started = time.process_time()
    seconds = asyncio.run(main())
    return seconds, time.process_time() - cpu_started


def child(source: str, results: str, concurrency: int) -> None:
    """Run the operator over the file and print seconds, peak RSS and the manifest (one JSON line)."""
    import contextlib
    import io

    from airflow_provider_qwen.operators import QwenBatchOperator

    op = QwenBatchOperator(
        task_id="batch",
        items=f"file://{source}",
        results_path=f"file://{results}",
        prompt=PROMPT.replace("{{ item }}", "{{ item.text }}"),
        max_concurrency=concurrency,
        max_completion_tokens=200,
        progress_interval=30,
    )
    ti = BenchTI("volume")
    context: dict[str, Any] = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "volume"}
    with contextlib.redirect_stdout(io.StringIO()):
        op.render_template_fields(context)
        started, cpu_started = time.perf_counter(), time.process_time()
        manifest = op.execute(context)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": peak_mb, "manifest": manifest}))


def run_child(source: Path, results: Path, concurrency: int, conn: str) -> dict[str, Any]:
    env = {**os.environ, "AIRFLOW_CONN_QWEN_DEFAULT": conn, "PYTHONPATH": str(ROOT)}
    env["AIRFLOW__QWEN__STORAGE_BASE"] = f"file://{tempfile.mkdtemp(prefix='qwen-volume-')}"
    command = [
        sys.executable,
        __file__,
        "--child",
        str(source),
        str(results),
        "--concurrency",
        str(concurrency),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the batch failed:\n{done.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rows = sum(1 for _ in results.open("rb"))
    if rows != measured["manifest"]["total"] or measured["manifest"]["succeeded"] != rows:
        raise RuntimeError(f"results file has {rows} rows, manifest {measured['manifest']}")
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.002)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.concurrency)
        return

    work = Path(tempfile.mkdtemp(prefix="qwen-volume-"))
    small_items = max(1, args.items // 10)
    big, small = work / "docs.jsonl", work / "docs-small.jsonl"
    write_input(big, args.items)
    write_input(small, small_items)
    load = os.getloadavg()[0]
    with emulator(args.latency, "--balance-usd", "1000000") as conn:
        run_child(small, work / "warm.jsonl", args.concurrency, conn)  # caches, first parse
        floor, floor_cpu = bare_floor(big, args.concurrency, conn)
        ours = run_child(big, work / "results.jsonl", args.concurrency, conn)
        tenth = run_child(small, work / "results-small.jsonl", args.concurrency, conn)

    per_item_s = (ours["seconds"] - tenth["seconds"]) / (args.items - small_items)
    per_item_mb = (ours["peak_rss_mb"] - tenth["peak_rss_mb"]) / (args.items - small_items)
    million = 1_000_000
    print(
        f"QwenBatchOperator, {args.items} items: JSON-lines file -> JSON-lines results file, "
        f"max_concurrency={args.concurrency}, emulator latency {args.latency * 1000:g} ms in its own "
        f"process, checkpointing on (load average {load:.1f}, {os.cpu_count()} CPUs)"
    )
    print(f"  bare aiohttp floor            {floor:8.1f} s   {args.items / floor:6.0f} items/s")
    print(
        f"  operator                      {ours['seconds']:8.1f} s   "
        f"{args.items / ours['seconds']:6.0f} items/s   "
        f"{ours['seconds'] / floor:.2f}x the floor (target <= 1.05x)"
    )
    print(
        f"  CPU per item (user+sys)       floor {floor_cpu / args.items * 1000:.3f} ms, operator "
        f"{ours['cpu_seconds'] / args.items * 1000:.3f} ms ({ours['cpu_seconds'] / floor_cpu:.2f}x; "
        f"{tenth['cpu_seconds'] / small_items * 1000:.3f} ms at {small_items} items)"
    )
    print(f"  peak RSS, {args.items} items      {ours['peak_rss_mb']:8.0f} MB   target < 300 MB")
    print(
        f"  peak RSS, {small_items} items       {tenth['peak_rss_mb']:8.0f} MB   "
        f"so {per_item_mb * 1024:.2f} KB per more item"
    )
    print(
        f"  extrapolated to {million} items: {ours['seconds'] + per_item_s * (million - args.items):.0f} s, "
        f"peak RSS {ours['peak_rss_mb'] + max(0.0, per_item_mb) * (million - args.items):.0f} MB"
    )


if __name__ == "__main__":
    main()
