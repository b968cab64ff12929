"""Exact accounting at the operator layer: Decimal sums, estimates flagged, charged errors counted."""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_qwen.client.errors import Charge, InvalidResponseError, ServerError, StreamError
from airflow_provider_qwen.client.models import ChatCompletion
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.cost.record import CostRecord
from airflow_provider_qwen.cost.report import RunCost
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.chat import QwenChatOperator
from tests.support.client_helpers import bind
from tests.support.operator_fakes import MODEL, answer, run, with_client


def tokens_only(prompt: int = 1000, completion: int = 500) -> ChatCompletion:
    """What another OpenAI-compatible server answers: usage, but no cost in body or headers."""
    parsed = ChatCompletion.model_validate(
        {
            "id": "c",
            "model": "qwen3.7-max",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
    )
    return bind(parsed, requested_model=MODEL)


def test_ten_thousand_small_charges_through_a_task_sum_exactly():
    cost = TaskCost(try_number=1, prices=PriceTable(), model=MODEL)
    paid = answer(usd=Decimal("0.0000035"))  # 7 credits: no float can hold it
    for _ in range(10_000):
        cost.ledger.add(paid)
    record = cost.record().to_xcom()
    assert record["usd_spent"] == "0.035"
    assert record["credits_used"] == 70_000
    assert record["requests"] == 10_000
    assert sum([0.0000035] * 10_000) != 0.035  # the float sum this avoids


def test_ten_thousand_task_records_sum_exactly_in_the_report():
    report = RunCost(dag_id="d", run_id="r")
    for index in range(10_000):
        one = {"model": MODEL, "requests": 1, "credits_used": 3, "usd_spent": "0.0000015", "try_number": 1}
        report.add_record(
            f"task_{index % 7}",
            CostRecord.combine([CostRecord.from_xcom(one)], model=MODEL, try_number=1).to_xcom(),
        )
    assert report.total.usd_spent == Decimal("0.015")
    assert report.as_dict()["total"]["usd_spent"] == "0.015"
    assert report.total.cost.credits_used == 30_000
    assert sum(t.cost.credits_used for t in report.by_task.values()) == 30_000


def test_a_server_that_reports_no_cost_gives_an_estimate_flagged_as_such(mocker):
    with_client(mocker, QwenBaseOperator, tokens_only(prompt=1000, completion=500))
    _, ti = run(QwenChatOperator(task_id="chat", prompt="?"))
    record = ti.pushed["qwen_cost"]
    # 1000 x 2.60/1M + 500 x 7.80/1M from the shipped price table
    assert Decimal(record["usd_spent"]) == Decimal("0.0026") + Decimal("0.0039")
    assert record["credits_used"] == 13_000
    assert record["estimated"] is True
    assert record["tries"][0]["estimated"] is True


def test_one_estimated_response_marks_the_sum_estimated_but_keeps_it_exact():
    cost = TaskCost(try_number=1, prices=PriceTable(), model=MODEL)
    cost.ledger.add(answer(usd=Decimal("0.001")))
    cost.ledger.add(tokens_only(prompt=100, completion=10))
    record = cost.record().to_xcom()
    assert Decimal(record["usd_spent"]) == Decimal("0.001") + Decimal("0.00026") + Decimal("0.000078")
    assert record["estimated"] is True


def test_charged_failures_are_counted_and_uncharged_ones_are_not():
    cost = TaskCost(try_number=1, prices=PriceTable(), model=MODEL)
    cost.ledger.add_error(ServerError("bad gateway", status_code=502))  # not charged
    paid = Charge(reported=Cost(2000, Decimal("0.001")))  # the headers said it was paid
    cost.ledger.add_error(InvalidResponseError("not a chat completion", status_code=200, charge=paid))
    cut = StreamError("stream cut", charge=Charge(partial=tokens_only(prompt=10, completion=5)))
    cost.ledger.add_error(cut)
    record = cost.record().to_xcom()
    assert record["requests"] == 2
    assert record["prompt_tokens"] == 10
    assert Decimal(record["usd_spent"]) == Decimal("0.001") + Decimal("0.000065")
    assert record["estimated"] is True  # the cut stream's part is an estimate


@pytest.mark.parametrize("number", [0.5, "0.5", Decimal("0.5")])
def test_records_read_back_as_numbers_still_sum(number):
    # some XCom readers decode "0.5" to 0.5; the report accepts either
    report = RunCost(dag_id="d", run_id="r")
    report.add_record("t", {"model": MODEL, "requests": 1, "usd_spent": number, "credits_used": 1_000_000})
    assert report.total.usd_spent == Decimal("0.5")
