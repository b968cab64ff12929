"""Every paid answer has a cost: an answer without usage is estimated from its text, never 0, and a
budget keeps the rest of its worst case counted until the service's figure replaces the estimate."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_qwen.calls import Calls
from airflow_provider_qwen.client.client import QwenClient
from airflow_provider_qwen.client.estimate import ANSWER_FRAMING_TOKENS
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.client.tokens import request_tokens, text_tokens
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.spend import BudgetRefusedError
from tests.support.client_helpers import BASE_URL, CHAT_URL, KEY, MODEL, Recorder, chunk, completion, ok, sse

PRICES = PriceTable()
PRICE = PRICES.get(MODEL)
ANSWER = "The invoice total is 1234567890 EUR."


def bare(content: str = ANSWER) -> dict:
    """A 200 body without usage and without meta.usage (a server that does not count)."""
    body = completion(content)
    body.pop("usage", None)
    body.pop("meta", None)
    return body


@pytest.fixture
def qwen():
    with QwenClient(KEY, base_url=BASE_URL, max_retries=0) as client:
        yield client


def test_an_answer_without_usage_is_estimated_from_the_request_and_its_text(api, qwen):
    api.post(CHAT_URL).mock(side_effect=Recorder(ok(bare())))
    request = build_request("What is the total?", model=MODEL)
    answer = qwen.send(request)
    prompt, generated = request_tokens(request), text_tokens(ANSWER) + ANSWER_FRAMING_TOKENS
    assert answer.cost.estimated
    assert answer.cost.usd_spent == PRICE.usd(prompt, generated) > 0
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)
    estimate = cost.ledger.add(answer, request)
    record = cost.record().to_xcom()
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, generated)
    assert Decimal(record["usd_spent"]) == PRICE.usd(prompt, generated)
    assert estimate is not None
    assert estimate.kind == "no_usage"
    assert record["estimates"][0]["client_request_id"] == answer.client_request_id


def test_a_stream_that_ends_after_its_finish_chunk_without_usage_is_a_cut_stream(api, qwen):
    api.post(CHAT_URL).mock(side_effect=Recorder(sse(chunk({"content": ANSWER}, finish="stop"))))
    request = build_request("What is the total?", model=MODEL, stream=True)
    cost = TaskCost(prices=PRICES, model=MODEL, try_number=1)
    answer = Calls(cost, client=lambda: qwen).send(request)
    assert answer.content == ANSWER
    record = cost.record().to_xcom()
    assert record["estimated"] is True
    assert Decimal(record["usd_spent"]) > 0
    assert [e["kind"] for e in record["estimates"]] == ["cut_stream"]


def test_ten_answers_without_usage_under_a_budget_stop_at_the_budget(api, qwen):
    calls = Recorder(*[ok(bare()) for _ in range(10)])
    api.post(CHAT_URL).mock(side_effect=calls)
    request = build_request("What is the total?", model=MODEL, max_completion_tokens=2000)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(
        prices=PRICES,
        model=MODEL,
        try_number=1,
        max_cost_usd=worst * Decimal("1.5"),
        refusal=BudgetRefusedError,
    )
    metered = Calls(cost, client=lambda: qwen)
    metered.send(request)
    with pytest.raises(BudgetRefusedError):
        metered.send(request)  # the first answer's true cost may be its worst case: no room left
    assert len(calls.requests) == 1
    record = cost.record().to_xcom()
    assert Decimal(record["usd_spent"]) > 0
    assert Decimal(record["usd_spent"]) + Decimal(record["usd_unsettled"]) == worst
