"""Cut answers against the emulator: what the service charged without reporting it shows in qwen_cost.

The emulator charges an answer once it has generated it, also when the body or stream is then cut
(``Fault.cut``): these tests hold ``qwen_cost`` against ``qwen_emulator.charges``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from airflow_provider_qwen.client.errors import APIConnectionError, StreamError
from airflow_provider_qwen.client.pricing import PriceTable, credits_from_usd
from airflow_provider_qwen.client.tokens import request_tokens
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.operators import QwenChatOperator
from airflow_provider_qwen.testing.faults import Fault
from tests.support.operator_fakes import FakeTI, run

MODEL = "alibaba/qwen3.7-max"
PRICE = PriceTable().get(MODEL)
ONE_CREDIT = Decimal("0.0000005")
PROMPT = "Tell me about the weather in Paris today."


def chat_requests(emulator):
    return [r for r in emulator.requests if r.path.endswith("/chat/completions")]


def test_a_cut_stream_is_recorded_as_an_estimate_of_what_was_charged(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut(3))  # the role chunk and the text, not the usage chunk
    op = QwenChatOperator(task_id="chat", prompt=PROMPT, model=MODEL, stream=True)
    ti = FakeTI()
    with pytest.raises(StreamError, match="was cut"):
        run(op, ti)

    (charge,) = qwen_emulator.charges
    assert charge.complete is False  # charged though the client never saw the usage
    record = ti.pushed["qwen_cost"]
    assert (record["requests"], record["estimated"]) == (1, True)
    request = op.build_request(op.rendered_messages())
    assert record["prompt_tokens"] == request_tokens(request)
    assert record["completion_tokens"] > 0  # from the text that arrived
    usd = Decimal(record["usd_spent"])
    assert usd == PRICE.usd(record["prompt_tokens"], record["completion_tokens"])
    assert record["credits_used"] == credits_from_usd(usd)
    # the whole text arrived before the cut, and estimates err high: the charge is covered
    assert usd >= charge.usd
    assert record["credits_used"] >= charge.credits


def test_a_cut_body_retried_by_the_client_counts_both_charges(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut())  # the first JSON body is cut in half, then retried
    result, ti = run(QwenChatOperator(task_id="chat", prompt=PROMPT, model=MODEL))

    assert result
    assert len(chat_requests(qwen_emulator)) == 2
    first, second = qwen_emulator.charges
    assert first.client_request_id == second.client_request_id  # one logical call
    assert (first.complete, second.complete) == (False, True)
    credits, usd = qwen_emulator.total_charged()
    record = ti.pushed["qwen_cost"]
    assert (record["requests"], record["estimated"]) == (2, True)
    # the retried try is priced as the answer that arrived: the same prompt and answer here,
    # so the estimate matches the charge up to the service rounding it up to whole credits
    assert record["credits_used"] == credits
    assert usd - ONE_CREDIT < Decimal(record["usd_spent"]) <= usd
    assert record["prompt_tokens"] == first.prompt_tokens + second.prompt_tokens


def test_under_a_budget_a_cut_body_is_not_retried_and_its_charge_fits_the_budget(qwen_emulator):
    qwen_emulator.add_faults(Fault.cut())
    op = QwenChatOperator(
        task_id="chat", prompt=PROMPT, model=MODEL, max_completion_tokens=500, max_cost_usd="0.05"
    )
    ti = FakeTI()
    with pytest.raises(APIConnectionError, match="broke after the request was sent"):
        run(op, ti)

    assert len(chat_requests(qwen_emulator)) == 1  # a retry could have been paid a second time
    (charge,) = qwen_emulator.charges
    record = ti.pushed["qwen_cost"]
    assert (record["requests"], record["estimated"]) == (1, True)
    worst = worst_case_usd(op.build_request(op.rendered_messages()), PriceTable())
    spent, unsettled = Decimal(record["usd_spent"]), Decimal(record["usd_unsettled"])
    assert spent + unsettled == worst  # the worst case the call reserved stays counted
    assert charge.usd <= spent <= worst <= Decimal("0.05")  # the estimate (prompt + cap) is not low
