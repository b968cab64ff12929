"""The estimate path over the real hook and client (respx on loopback): a server that reports tokens only."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest
import respx

from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.operator_fakes import run

BASE_URL = "http://127.0.0.1:8124/v1"
MODEL = "alibaba/qwen3.7-max"
USAGE = {"prompt_tokens": 1200, "completion_tokens": 300, "total_tokens": 1500}
ESTIMATE = Decimal(1200) * Decimal("2.60") / 1_000_000 + Decimal(300) * Decimal("7.80") / 1_000_000


@pytest.fixture(autouse=True)
def connection(monkeypatch):
    conn = {"conn_type": "qwen", "host": BASE_URL, "password": "test-key", "extra": {"max_retries": 0}}
    monkeypatch.setenv("AIRFLOW_CONN_QWEN_DEFAULT", json.dumps(conn))


def test_a_tokens_only_answer_is_estimated_from_the_price_table():
    body = {
        "id": "c1",
        "object": "chat.completion",
        "model": "qwen3.7-max",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": USAGE,  # no meta.usage, no cost headers
    }
    with respx.mock(using="httpx", assert_all_called=True) as router:
        router.post(f"{BASE_URL}/chat/completions").mock(return_value=httpx.Response(200, json=body))
        result, ti = run(QwenChatOperator(task_id="chat", prompt="?"))
    assert result == "hi"
    record = ti.pushed["qwen_cost"]
    assert record["estimated"] is True
    assert Decimal(record["usd_spent"]) == ESTIMATE
    assert record["prompt_tokens"] == 1200


def test_a_reported_cost_wins_over_the_estimate():
    body = {
        "id": "c1",
        "model": "qwen3.7-max",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
        "usage": USAGE,
        "meta": {"usage": {"credits_used": 20_000, "usd_spent": 0.01}},
    }
    with respx.mock(using="httpx", assert_all_called=True) as router:
        router.post(f"{BASE_URL}/chat/completions").mock(return_value=httpx.Response(200, json=body))
        _, ti = run(QwenChatOperator(task_id="chat", prompt="?"))
    record = ti.pushed["qwen_cost"]
    assert record["estimated"] is False
    assert (record["usd_spent"], record["credits_used"]) == ("0.01", 20_000)


def test_a_stream_without_meta_is_estimated_from_its_usage_chunk():
    chunks = [
        {"id": "s", "model": "qwen3.7-max", "choices": [{"index": 0, "delta": {"content": "hi"}}]},
        {"id": "s", "model": "qwen3.7-max", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"id": "s", "model": "qwen3.7-max", "choices": [], "usage": USAGE},
    ]
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    with respx.mock(using="httpx", assert_all_called=True) as router:
        router.post(f"{BASE_URL}/chat/completions").mock(
            return_value=httpx.Response(200, text=sse, headers={"content-type": "text/event-stream"})
        )
        result, ti = run(QwenChatOperator(task_id="chat", prompt="?", stream=True))
    assert result == "hi"
    record = ti.pushed["qwen_cost"]
    assert record["estimated"] is True
    assert Decimal(record["usd_spent"]) == ESTIMATE
