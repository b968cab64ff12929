"""The emulator bills with its own arithmetic: exact whole credits, its own price list."""

from __future__ import annotations

from decimal import Decimal

from airflow_provider_qwen.testing.billing import CREDITS_PER_USD, Prices


def test_an_answer_is_billed_exactly_at_the_listed_price():
    # 1000 x 2.60 / 1M + 500 x 7.80 / 1M = 0.0065 USD
    assert Prices().bill("alibaba/qwen3.7-max", 1000, 500) == (13_000, Decimal("0.0065"))


def test_credits_are_rounded_up_and_usd_derives_from_them():
    credits, usd = Prices().bill("alibaba/qwen-turbo", 1, 0)  # 0.00000005 USD: a tenth of a credit
    assert (credits, usd) == (1, Decimal(1) / CREDITS_PER_USD)


def test_ids_resolve_with_and_without_the_vendor_prefix_and_unknown_models_pay_the_dearest():
    prices = Prices()
    assert prices.get("qwen3.7-max") == prices.get("alibaba/qwen3.7-max")
    assert prices.get("vendor/unknown") is None
    dearest = max(prices.as_dict().values(), key=lambda r: Decimal(r["output"]))
    assert prices.rate_for("vendor/unknown").output == Decimal(dearest["output"])


def test_any_object_with_as_dict_gives_the_prices_as_plain_data():
    class Table:
        def as_dict(self) -> dict[str, dict[str, str]]:
            return {"my/model": {"input": "1", "output": "2"}}

    assert Prices(Table()).bill("my/model", 1_000_000, 500_000) == (4_000_000, Decimal(2))
