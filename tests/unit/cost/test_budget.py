"""Budgets that cap: max_cost_usd per task and dag_run_budget_usd per DAG run refuse before sending."""

from __future__ import annotations

from decimal import Decimal

import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_qwen.client.errors import BudgetExceededError
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.request import build_request
from airflow_provider_qwen.cost.budget import worst_case_usd
from airflow_provider_qwen.cost.task import TaskCost
from airflow_provider_qwen.operators.base import QwenBaseOperator, qwen_task_ids
from airflow_provider_qwen.operators.chat import QwenChatOperator
from airflow_provider_qwen.operators.spend import BudgetRefusedError, task_cost
from tests.support.cost_fakes import FakeRun
from tests.support.operator_fakes import MODEL, answer, run, with_client

PRICES = PriceTable()


@pytest.fixture(autouse=True)
def _storage(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", str(tmp_path / "qwen"))


def _request(max_completion_tokens: int | None = None, text: str = "Summarise the notes."):
    params = {"max_completion_tokens": max_completion_tokens} if max_completion_tokens else {}
    return build_request([{"role": "user", "content": text}], model=MODEL, **params)


def test_worst_case_is_prompt_estimate_plus_output_cap_at_output_price():
    small, capped = _request(), _request(1000)
    assert worst_case_usd(capped, PRICES) - worst_case_usd(small, PRICES) == Decimal(
        "0.0078"
    )  # 1000 x 7.80/1M
    assert worst_case_usd(small, PRICES) > 0  # the prompt alone always counts


def test_refuses_a_request_the_task_budget_would_not_cover_and_sends_nothing(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("never"))
    op = QwenChatOperator(task_id="chat", prompt="?", max_completion_tokens=1000, max_cost_usd="0.005")
    with pytest.raises(BudgetExceededError) as caught:
        run(op)
    assert client.requests == []
    message = str(caught.value)
    assert "max_cost_usd=0.005 would be passed" in message
    assert "spent at most 0 USD" in message
    assert "not sent" in message
    # a retry would be refused too: Airflow fails the task without retrying
    assert isinstance(caught.value, AirflowFailException)
    assert isinstance(caught.value, BudgetRefusedError)


def test_with_an_output_cap_spend_never_passes_the_budget():
    budget = Decimal("0.01")
    cost = TaskCost(try_number=1, refusal=BudgetRefusedError, prices=PRICES, max_cost_usd=budget, model=MODEL)
    request = _request(200)
    worst = worst_case_usd(request, PRICES)
    sent = 0
    while sent < 10_000:
        try:
            cost.budget.check(request)
        except BudgetRefusedError:
            break
        # the dearest answer the request can produce: the whole prompt estimate and output cap
        cost.ledger.add_charge(MODEL, Cost(0, worst, True))
        sent += 1
        assert cost.spent_usd <= budget
    assert sent == int(budget / worst)
    assert cost.spent_usd + worst > budget >= cost.spent_usd


def test_without_an_output_cap_the_budget_stops_further_requests_once_reached(mocker):
    cost = TaskCost(
        try_number=1, refusal=BudgetRefusedError, prices=PRICES, max_cost_usd=Decimal("0.0015"), model=MODEL
    )
    request = _request()  # no max_completion_tokens: only the prompt can be bounded
    cost.budget.check(request)
    cost.ledger.add(answer(usd=Decimal("0.0012")))
    cost.budget.check(request)  # 0.0012 + a small prompt still fits
    cost.ledger.add(answer(usd=Decimal("0.0012")))  # the answer's length was not bounded: 0.0024 > budget
    assert cost.spent_usd == Decimal("0.0024")
    with pytest.raises(BudgetRefusedError, match=r"spent at most 0\.0024 USD"):
        cost.budget.check(request)


def _two_task_dag(**second_kwargs):
    with DAG("cost_dag", schedule=None) as dag:
        first = QwenChatOperator(task_id="first", prompt="Write a haiku.")
        second = QwenChatOperator(task_id="second", prompt="Now a limerick.", **second_kwargs)
        first >> second
    return dag, first, second


def test_run_budget_refuses_the_second_task_of_a_run(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("haiku"), answer("never"))
    dag, first, second = _two_task_dag(max_completion_tokens=100, dag_run_budget_usd=0.0015)
    fake_run = FakeRun()
    run(first, fake_run.ti("first"), dag=dag)
    with pytest.raises(BudgetRefusedError) as caught:
        run(second, fake_run.ti("second"), dag=dag)
    assert len(client.requests) == 1  # only the first task's request was sent
    message = str(caught.value)
    assert "dag_run_budget_usd=0.0015 would be passed" in message
    assert "0.001 USD spent at most by the run's other task instances" in message
    assert fake_run.xcoms[("second", -1, "qwen_cost")]["requests"] == 0


def test_run_budget_lets_the_second_task_through_when_it_fits(mocker):
    client = with_client(mocker, QwenBaseOperator, answer("haiku"), answer("limerick"))
    dag, first, second = _two_task_dag(max_completion_tokens=100, dag_run_budget_usd=0.002)
    fake_run = FakeRun()
    run(first, fake_run.ti("first"), dag=dag)
    result, _ = run(second, fake_run.ti("second"), dag=dag)
    assert result == "limerick"
    assert len(client.requests) == 2


def test_run_spend_counts_every_map_index_and_earlier_tries_of_other_tasks():
    with DAG("cost_dag", schedule=None) as dag:
        QwenChatOperator.partial(task_id="mapped").expand(prompt=["a", "b"])
        QwenChatOperator(task_id="single", prompt="?")
        EmptyOperator(task_id="plain")
    fake_run = FakeRun()
    fake_run.put_claim("mapped", "0.25", map_index=0)
    fake_run.put_claim("mapped", "0.5", map_index=1)
    fake_run.put_claim("single", "0.25")  # its claim covers both its tries
    fake_run.xcoms[("plain", -1, "qwen_run_claim")] = {"instance": "plain[-1]", "claimed_usd": "100"}
    ti = fake_run.ti("mapped", map_index=2)
    cost = task_cost({"ti": ti}, prices=PRICES, dag_run_budget_usd=Decimal(1), task_ids=qwen_task_ids(dag))
    assert qwen_task_ids(dag) == ["mapped", "single"]
    with pytest.raises(BudgetRefusedError, match=r"1 USD spent at most by the run's other task instances"):
        cost.budget.check(_request())
    assert ("mapped", 2, "qwen_run_claim") not in fake_run.xcoms  # nothing fit: nothing claimed
    assert {tuple(p["task_ids"]) for p in fake_run.pulls} == {("mapped", "single")}


def test_a_claim_covers_a_lease_of_requests_and_is_settled_at_the_end():
    dag, *_ = _two_task_dag()
    fake_run = FakeRun()
    fake_run.put_claim("first", "0.1")
    ti = fake_run.ti("second")
    cost = task_cost({"ti": ti}, prices=PRICES, dag_run_budget_usd=Decimal(1), task_ids=qwen_task_ids(dag))
    cost.budget.check(_request())
    claim = ti.pushed["qwen_run_claim"]
    assert claim["instance"] == "second[-1]"
    assert Decimal(claim["claimed_usd"]) >= worst_case_usd(_request(), PRICES) * 2  # a lease, not one
    reads = len(fake_run.pulls)
    cost.budget.check(_request())
    assert len(fake_run.pulls) == reads  # within the lease: no read of the run's claims
    cost.finish()
    assert ti.pushed["qwen_run_claim"]["claimed_usd"] == "0"  # settled: nothing was spent


def test_an_unknown_model_under_a_budget_is_refused_unless_priced():
    request = build_request("hi", model="acme/unknown-model", max_completion_tokens=10)
    cost = TaskCost(try_number=1, prices=PRICES, max_cost_usd=Decimal(1), refusal=BudgetRefusedError)
    with pytest.raises(BudgetExceededError, match=r"model='acme/unknown-model' has no known price"):
        cost.budget.check(request)
    priced = PRICES.with_overrides({"acme/unknown-model": {"input": "1", "output": "2"}})
    TaskCost(try_number=1, prices=priced, max_cost_usd=Decimal(1)).budget.check(request)
    TaskCost(try_number=1, prices=PRICES).budget.check(request)  # no budget: nothing to bound


def test_no_budget_means_no_xcom_reads():
    dag, *_ = _two_task_dag()
    fake_run = FakeRun()
    cost = task_cost({"ti": fake_run.ti("second")}, prices=PRICES, task_ids=qwen_task_ids(dag))
    cost.budget.check(_request(100_000))
    assert fake_run.pulls == []


def test_requests_in_flight_hold_their_worst_case_so_together_they_cannot_pass():
    request = _request(200)
    worst = worst_case_usd(request, PRICES)
    cost = TaskCost(
        try_number=1,
        refusal=BudgetRefusedError,
        prices=PRICES,
        max_cost_usd=worst * Decimal("2.5"),
        model=MODEL,
    )
    first, second = cost.budget.reserve(request), cost.budget.reserve(request)
    assert cost.budget.reserved_usd == first + second == worst * 2
    with pytest.raises(BudgetRefusedError, match="held by requests in flight"):
        cost.budget.reserve(request)  # each alone fits what was paid (nothing), not what is in flight
    cost.ledger.add_charge(MODEL, Cost(0, worst / 2, True))
    cost.budget.release(first)
    assert cost.budget.reserved_usd == worst
    assert cost.budget.reserve(request) == worst  # paid half of its hold: 0.5 + 1 held + 1 new = 2.5 fits
