"""Cost: exact sums (integer credits, Decimal dollars), derivations, estimates and price tables."""

from __future__ import annotations

import json
import threading
from decimal import Decimal

import pytest

from airflow_provider_qwen.client.models import ChatCompletion, MetaUsage, Usage
from airflow_provider_qwen.client.pricing import Cost, Price, PriceTable, credits_from_usd, usd_from_credits
from airflow_provider_qwen.cost.ledger import TryLedger
from airflow_provider_qwen.cost.record import CostTotals
from tests.support.client_helpers import bind

MODEL = "alibaba/qwen3.7-max"


def usage(prompt: int, completion: int, reasoning: int = 0, cached: int = 0) -> Usage:
    return Usage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
            "prompt_tokens_details": {"cached_tokens": cached},
        }
    )


def test_ten_thousand_small_charges_sum_exactly():
    ledger = CostTotals()
    charge = Cost.from_reported(credits=3)  # 0.0000015 USD, not representable as a float
    for _ in range(10_000):
        ledger.add_charge(MODEL, charge, usage(1, 2, reasoning=1))
    floats = 0.0
    for _ in range(10_000):
        floats += 0.0000015
    assert floats != 0.015  # what the ledger must not do
    assert ledger.cost.credits_used == 30_000
    assert ledger.usd_spent == Decimal("0.015")
    assert ledger.cost.usd_spent == usd_from_credits(30_000)
    assert ledger.requests == 10_000
    assert (ledger.prompt_tokens, ledger.completion_tokens, ledger.reasoning_tokens) == (
        10_000,
        20_000,
        10_000,
    )
    assert ledger.total_tokens == 30_000
    assert ledger.cost.estimated is False


def test_the_ledger_is_exact_under_concurrent_adds():
    shared = TryLedger(PriceTable(), MODEL)
    ledger = shared.total
    charge = Cost(34776, Decimal("0.017388"))

    def worker() -> None:
        for _ in range(1_000):
            shared.add_charge(MODEL, charge)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ledger.requests == 8_000
    assert ledger.cost == Cost(34776 * 8_000, Decimal("0.017388") * 8_000, False)


def test_the_ledger_record_is_json_safe_with_an_exact_usd_string():
    ledger = CostTotals()
    completion = ChatCompletion.model_validate(
        {
            "choices": [{"message": {"content": "x"}}],
            "usage": {
                "prompt_tokens": 19,
                "completion_tokens": 1777,
                "total_tokens": 1796,
                "completion_tokens_details": {"reasoning_tokens": 1244},
            },
            "meta": {"usage": {"credits_used": 34776, "usd_spent": 0.017388}},
        }
    )
    assert ledger.add(bind(completion, requested_model=MODEL, inference_id="i")) == Cost(
        34776, Decimal("0.017388")
    )
    ledger.add_charge(MODEL, Cost(estimated=True))  # an answer without usage: nothing to estimate from
    record = ledger.record(try_number=2).to_xcom()
    assert json.loads(json.dumps(record)) == record
    assert record == {
        "model": MODEL,
        "requests": 2,
        "prompt_tokens": 19,
        "completion_tokens": 1777,
        "reasoning_tokens": 1244,
        "total_tokens": 1796,
        "credits_used": 34776,
        "usd_spent": "0.017388",
        "usd_unsettled": "0",
        "estimates": [],
        "estimated": True,  # one charge was an estimate: the total is flagged
        "try_number": 2,
    }


def test_ledgers_merge_exactly():
    first, second = CostTotals(), CostTotals()
    first.add_charge(MODEL, Cost(1, Decimal("0.0000005")), usage(1, 1))
    second.add_charge("alibaba/qwen-plus", Cost(3, Decimal("0.0000015")), usage(2, 2))
    first.merge(second)
    assert first.cost == Cost(4, Decimal("0.000002"))
    assert first.requests == 2
    assert first.record().model == "alibaba/qwen-plus,alibaba/qwen3.7-max"


def test_credits_only_derive_usd_and_usd_only_derives_credits():
    assert Cost.from_reported(credits=34776) == Cost(34776, Decimal("0.017388"), False)
    assert Cost.from_reported(credits="120000") == Cost(120000, Decimal("0.06"), False)
    assert Cost.from_reported(usd="0.06") == Cost(120000, Decimal("0.06"), False)
    assert Cost.from_reported(usd="0.0000001").credits_used == 1  # rounded up, never down
    assert Cost.from_reported() is None
    assert usd_from_credits(1) == Decimal("0.0000005")
    assert credits_from_usd(Decimal("0.0000005")) == 1


def test_reported_cost_from_meta_and_headers():
    assert MetaUsage(credits_used=10).cost == Cost(10, Decimal("0.000005"))
    assert MetaUsage().cost is None
    headers = {"x-aimlapi-credits-used": "34776", "x-aimlapi-usd-spent": "0.017388"}
    assert Cost.from_headers(headers) == Cost(34776, Decimal("0.017388"))
    assert Cost.from_headers({"x-aimlapi-credits-used": "8"}) == Cost(8, Decimal("0.000004"))
    assert Cost.from_headers({}) is None
    assert Cost.from_headers({"x-aimlapi-credits-used": "lots"}) is None  # unparsable: fall back to estimate


def test_estimates_are_flagged_and_bill_reasoning_and_cached_tokens_correctly():
    table = PriceTable({MODEL: Price(Decimal("2"), Decimal("8"), Decimal("0.5"))})
    cost = table.estimate(MODEL, 1_000_000, 500_000, cached_tokens=200_000)  # 400k of the output: reasoning
    # 800k fresh input * 2 + 200k cached * 0.5 + 500k output (reasoning included) * 8, per 1M
    assert cost.usd_spent == Decimal("1.6") + Decimal("0.1") + Decimal("4")
    assert cost.credits_used == 11_400_000
    assert cost.estimated is True
    assert (Cost(1, Decimal("0.0000005")) + cost).estimated is True


def test_an_unknown_model_is_estimated_at_the_dearest_known_price():
    table = PriceTable({"a": Price(Decimal(1), Decimal(2)), "b": Price(Decimal(3), Decimal(9))})
    price, known = table.price_for("vendor/unknown")
    assert (price, known) == (Price(Decimal(3), Decimal(9)), False)
    assert table.price_for("a") == (Price(Decimal(1), Decimal(2)), True)


def test_price_lookup_tolerates_the_vendor_prefix():
    table = PriceTable()
    assert table.get("qwen3.7-max") == table.get(MODEL)
    assert table.get(MODEL) == Price(Decimal("2.60"), Decimal("7.80"), Decimal("0.52"))


def test_price_overrides_replace_one_model_and_keep_the_others():
    shipped = PriceTable()
    table = shipped.with_overrides(
        {MODEL: {"input": 3.25, "output": "9.75"}, "my/model": {"input": 0, "output": 1}}
    )
    assert table.get(MODEL) == Price(Decimal("3.25"), Decimal("9.75"))
    assert table.get("my/model") == Price(Decimal(0), Decimal(1))
    assert table.get("alibaba/qwen-plus") == shipped.get("alibaba/qwen-plus")
    assert shipped.get(MODEL) == Price(Decimal("2.60"), Decimal("7.80"), Decimal("0.52"))  # not mutated
    assert table.estimate(MODEL, 1_000_000, 0).usd_spent == Decimal("3.25")
    assert table.as_dict()[MODEL] == {"input": "3.25", "output": "9.75"}


@pytest.mark.parametrize(
    "bad",
    [
        {"input": 1},
        {"input": "cheap", "output": 1},
        {"input": -1, "output": 1},
        {"input": "NaN", "output": 1},
    ],
)
def test_bad_prices_are_refused_with_the_value(bad: dict[str, object]):
    with pytest.raises(ValueError, match="'input' and 'output'") as caught:
        PriceTable().with_overrides({MODEL: bad})
    assert repr(bad) in str(caught.value)
