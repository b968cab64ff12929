"""Calls: reserve -> send -> record -> finish checks -> release, the same for sync, async and streams."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from airflow_provider_qwen.calls import Calls
from airflow_provider_qwen.client.errors import APITimeoutError, BudgetExceededError, Charge, QwenError
from airflow_provider_qwen.client.pricing import PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.cost.task import TaskCost
from tests.support.operator_fakes import MODEL, FakeClient, answer

PRICES = PriceTable()


def _calls(client: FakeClient, **budget: Decimal) -> Calls:
    return Calls(TaskCost(prices=PRICES, model=MODEL, try_number=1, **budget), client=lambda: client)


def _request(cap: int = 100):
    return build_request("hi", model=MODEL, max_completion_tokens=cap)


class AsyncFake:
    def __init__(self, sync: FakeClient) -> None:
        self.sync = sync

    async def send(self, request, *, client_request_id=None, retry_after_send: bool = True):
        await asyncio.sleep(0)
        return self.sync.send(request, retry_after_send=retry_after_send)


def test_a_sync_call_is_recorded_and_releases_its_hold():
    calls = _calls(FakeClient(answer("ok")), max_cost_usd=Decimal(1))
    assert calls.send(_request()).content == "ok"
    assert calls.cost.try_record().totals.requests == 1
    assert calls.cost.spent_usd == Decimal("0.001")
    assert calls.cost.budget.reserved_usd == 0


def test_an_async_call_takes_the_same_path():
    client = FakeClient(answer("ok"))
    calls = _calls(client, max_cost_usd=Decimal(1))
    completion = asyncio.run(calls.asend(_request(), AsyncFake(client)))
    assert completion.content == "ok"
    assert calls.cost.spent_usd == Decimal("0.001")
    assert client.retry_after_send == [False]  # under a budget: no retry of a maybe-paid try


def test_a_streamed_call_sees_every_chunk_and_is_recorded():
    seen: list[object] = []
    calls = _calls(FakeClient(answer("abc")))
    completion = calls.stream(_request(), seen.append)
    assert completion.content == "abc"
    assert len(seen) == 3
    assert calls.cost.try_record().totals.requests == 1


def test_without_a_budget_the_client_retries_as_usual():
    client = FakeClient(answer("ok"))
    _calls(client).send(_request())
    assert client.retry_after_send == [True]


def test_a_refused_request_is_never_sent():
    client = FakeClient(answer("never"))
    calls = _calls(client, max_cost_usd=Decimal("0.0000001"))
    with pytest.raises(BudgetExceededError, match="not sent"):
        calls.send(_request())
    assert client.requests == []
    assert calls.cost.budget.reserved_usd == 0


def test_a_failed_call_records_its_charge_and_releases_its_hold():
    calls = _calls(
        FakeClient(APITimeoutError("late", charge=Charge(unconfirmed_tries=1))), max_cost_usd=Decimal(1)
    )
    with pytest.raises(APITimeoutError):
        calls.send(_request())
    record = calls.cost.try_record().totals
    assert (record.requests, record.cost.estimated) == (1, True)
    assert calls.cost.budget.reserved_usd == 0


def test_the_finish_checks_refuse_refusals_and_truncation_when_asked(caplog):
    calls = _calls(
        FakeClient(answer(refusal="no"), answer(finish_reason="length"), answer(finish_reason="length"))
    )
    with pytest.raises(QwenError, match="the model refused: no"):
        calls.send(_request())
    assert calls.send(_request()).finish_reason == "length"  # a warning only
    assert "cut at the token limit" in caplog.text
    with pytest.raises(QwenError, match="cut at the token limit"):
        calls.send(_request(), fail_on_truncation=True)
    assert calls.cost.try_record().totals.requests == 3  # every paid answer counted, refused ones too


def test_a_stream_stopped_from_our_side_is_closed_and_recorded_as_a_cut():
    client = FakeClient(answer("a long answer"))
    streams: list[object] = []
    real_stream = client.stream
    client.stream = lambda request, **kw: streams.append(real_stream(request, **kw)) or streams[-1]  # type: ignore[method-assign]
    calls = _calls(client)

    def stop(chunk: object) -> None:
        raise KeyboardInterrupt  # a kill, a timeout, a failing callback

    with pytest.raises(KeyboardInterrupt):
        calls.stream(_request(), stop)
    assert streams[0].closed  # type: ignore[attr-defined]
    record = calls.cost.try_record().totals
    assert (record.requests, record.cost.estimated) == (1, True)  # the generation the service bills
