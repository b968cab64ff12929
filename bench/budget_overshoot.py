"""Budgets against an emulator that bills like the service: spend / budget, goal never above 1.00x.

    .venv/bin/python bench/budget_overshoot.py

Each workload sends until the budget refuses (each request with ``max_completion_tokens=2000``) and
divides what the emulator billed by the budget:

- digit-heavy chats (every digit one token) and CJK chats under ``max_cost_usd``;
- answers without usage (the service's cost unknown to the client) under ``max_cost_usd``;
- a batch of 40 digit-heavy items under ``max_cost_usd=0.5``;
- four task instances at once under one ``dag_run_budget_usd``, sharing a store of claims.

Also printed: the seed example's prompt token count (the service reported 19) and the time to
count 4 MB of text.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from airflow_provider_qwen.calls import Calls
from airflow_provider_qwen.client import tokens
from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.cost.run_budget import Hold
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.testing.emulator import QwenEmulator
from airflow_provider_qwen.testing.faults import Fault

ROOT = Path(__file__).resolve().parents[1]
MODEL = "alibaba/qwen3.7-max"
DIGITS = "".join(str(i % 10) for i in range(60_000))
CJK = "季度运营报告：部署按时完成，延迟保持在四百毫秒以下，两起客户升级已关闭。" * 800  # noqa: RUF001 - CJK punctuation is the point


def billed(emulator: QwenEmulator, before: Decimal) -> Decimal:
    return emulator.total_charged()[1] - before


def until_refused(emulator: QwenEmulator, prompt: str, budget: Decimal, *, fault: str | None = None) -> str:
    """Chats until the budget refuses; every answer is as long as its cap allows."""
    before = emulator.total_charged()[1]
    cost = TaskCost(prices=PriceTable(), model=MODEL, try_number=1, max_cost_usd=budget)
    request = build_request(prompt, model=MODEL, max_completion_tokens=2000)
    sent = 0
    with QwenClient(emulator.api_key, base_url=emulator.base_url, max_retries=0) as client:
        calls = Calls(cost, client=lambda: client)
        while sent < 1000:
            if fault:
                emulator.add_faults(Fault(fault))
            try:
                calls.send(request, warn=False)
            except BudgetExceededError:
                break
            sent += 1
    spent = billed(emulator, before)
    emulator.reset()
    return f"{sent} sent, billed {spent} USD of {budget}: {spent / budget:.2f}x"


def batch_of_digits(emulator: QwenEmulator) -> str:
    from airflow_provider_qwen.operators.batch import QwenBatchOperator

    before = emulator.total_charged()[1]
    items = [DIGITS[: 6_000 + 50 * i] for i in range(40)]
    op = QwenBatchOperator(
        task_id="batch",
        prompt="Sum these digits: {{ item }}",
        items=items,
        model=MODEL,
        max_completion_tokens=2000,
        max_cost_usd="0.5",
        checkpoint=False,
        max_failures=40,
    )
    with tempfile.TemporaryDirectory() as home:
        ti = _BenchTI()
        context: dict[str, Any] = {"ti": ti, "task_instance": ti, "params": {}, "run_id": "bench"}
        import os

        os.environ["AIRFLOW__QWEN__STORAGE_BASE"] = home
        os.environ["AIRFLOW_CONN_QWEN_DEFAULT"] = emulator.conn_uri()
        op.render_template_fields(context)
        try:
            op.execute(context)
        except Exception as exc:  # the budget ends the batch; the report says how far it got
            print(f"    (batch ended: {type(exc).__name__})")
    spent = billed(emulator, before)
    emulator.reset()
    return f"billed {spent} USD of 0.5: {spent / Decimal('0.5'):.2f}x"


class _BenchTI:
    dag_id, run_id, task_id, map_index, try_number = "bench", "bench", "batch", -1, 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value

    def xcom_pull(self, *args: Any, **kwargs: Any) -> Any:
        return []


class _Claims:
    def __init__(self) -> None:
        self.holds: dict[str, Hold] = {}
        self.lock = threading.Lock()

    def view(self, name: str) -> Any:
        claims = self

        class View:
            def publish(self, hold: Hold) -> None:
                with claims.lock:
                    claims.holds[hold.instance] = hold

            def others(self) -> list[Hold]:
                with claims.lock:
                    return [h for n, h in claims.holds.items() if n != name]

        return View()


def four_tasks(emulator: QwenEmulator) -> str:
    before = emulator.total_charged()[1]
    budget = Decimal("0.2")
    claims = _Claims()
    request = build_request(DIGITS[:20_000], model=MODEL, max_completion_tokens=2000)

    def task(index: int) -> None:
        name = f"mapped[{index}]"
        cost = TaskCost(
            prices=PriceTable(),
            model=MODEL,
            try_number=1,
            dag_run_budget_usd=budget,
            run_store=lambda: claims.view(name),
            instance=name,
        )
        with QwenClient(emulator.api_key, base_url=emulator.base_url, max_retries=0) as client:
            calls = Calls(cost, client=lambda: client)
            for _ in range(100):
                try:
                    calls.send(request, warn=False)
                except BudgetExceededError:
                    break
        cost.finish()

    threads = [threading.Thread(target=task, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = billed(emulator, before)
    emulator.reset()
    return f"billed {spent} USD of {budget}: {spent / budget:.2f}x"


def main() -> None:
    seed = json.loads((ROOT / "tests" / "fixtures" / "qwen3.7-max-response.json").read_text())
    started = time.perf_counter()
    tokens.load()
    loaded = time.perf_counter() - started
    request = build_request("Hi! What do you think about mankind?", model=MODEL)
    print(
        f"seed example: {tokens.request_tokens(request)} prompt tokens (the service reported "
        f"{seed['usage']['prompt_tokens']}); vocabulary loaded in {loaded:.2f} s"
    )
    text = ""
    while len(text.encode()) < 4_000_000:
        text += CJK + DIGITS
    text = text.encode()[:4_000_000].decode(errors="ignore")
    size = len(text.encode())
    started = time.perf_counter()
    count = tokens.text_tokens(text)
    print(f"counting {size / 1e6:.1f} MB: {count} tokens in {time.perf_counter() - started:.2f} s")
    with QwenEmulator() as emulator:
        print("digit-heavy chats, max_cost_usd=0.2: " + until_refused(emulator, DIGITS, Decimal("0.2")))
        print("CJK chats, max_cost_usd=0.2:         " + until_refused(emulator, CJK, Decimal("0.2")))
        print(
            "no usage, max_cost_usd=0.05:         "
            + until_refused(emulator, "Summarise the week.", Decimal("0.05"), fault="no_usage")
        )
        print("batch of 40 digit items, 0.5:        " + batch_of_digits(emulator))
        print("4 tasks at once, run budget 0.2:     " + four_tasks(emulator))


if __name__ == "__main__":
    main()
