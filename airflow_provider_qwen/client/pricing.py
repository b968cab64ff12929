"""Money, as exact numbers: prices, price tables, costs, credits <-> USD, the one USD formatter.

A leaf: it imports nothing else of the package. Credits are the service's exact unit (1 USD =
2,000,000 credits): sums are integer credits and Decimal dollars, never floats.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from typing import Any

CREDITS_PER_USD = 2_000_000
PER_MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


def usd_text(amount: Decimal) -> str:
    """An exact USD amount as plain decimal text ("0.0000005", never "5E-7"): how records carry USD."""
    return format(amount.normalize(), "f")


def usd_from_credits(credits: int) -> Decimal:
    """Credits -> USD, exactly."""
    return Decimal(credits) / CREDITS_PER_USD


def credits_from_usd(usd: Decimal) -> int:
    """USD -> whole credits, rounded up (an estimate never undercounts)."""
    return int((usd * CREDITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def to_decimal(value: Any) -> Decimal:
    """A record's USD (a decimal string, or a number after some XCom decoders); 0 if unreadable."""
    try:
        amount = Decimal(str(value)) if value is not None else ZERO
    except InvalidOperation:
        return ZERO
    return amount if amount.is_finite() else ZERO


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens. Reasoning tokens are billed as output."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> Price:
        """A price from ``{"input", "output"[, "cached_input"]}`` (numbers >= 0), or a clear ValueError."""
        try:
            cached = value.get("cached_input")
            price = cls(
                input=Decimal(str(value["input"])),
                output=Decimal(str(value["output"])),
                cached_input=Decimal(str(cached)) if cached is not None else None,
            )
            rates = [
                price.input,
                price.output,
                *([price.cached_input] if price.cached_input is not None else []),
            ]
            if not all(rate.is_finite() and rate >= 0 for rate in rates):
                raise ArithmeticError("rates must be finite and not negative")
        except (KeyError, ArithmeticError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"a price needs numbers >= 0 for 'input' and 'output' (USD per 1M tokens), got {value!r}"
            ) from exc
        return price

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        """What these token counts cost at this price."""
        cached_price = self.cached_input if self.cached_input is not None else self.input
        prompt_tokens, completion_tokens = max(prompt_tokens, 0), max(completion_tokens, 0)
        cached_tokens = min(max(cached_tokens, 0), prompt_tokens)
        fresh = prompt_tokens - cached_tokens
        total = fresh * self.input + cached_tokens * cached_price + completion_tokens * self.output
        return total / PER_MILLION

    def as_dict(self) -> dict[str, str]:
        cached = {"cached_input": str(self.cached_input)} if self.cached_input is not None else {}
        return {"input": str(self.input), "output": str(self.output), **cached}


@dataclass(frozen=True)
class Cost:
    """The cost of one or more responses; ``estimated`` when any part was not reported by the service."""

    credits_used: int = 0
    usd_spent: Decimal = ZERO
    estimated: bool = False

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            self.credits_used + other.credits_used,
            self.usd_spent + other.usd_spent,
            self.estimated or other.estimated,
        )

    @classmethod
    def from_reported(cls, credits: Any = None, usd: Any = None) -> Cost | None:
        """Reported figures: both, or credits alone (usd derived), or usd alone (credits derived)."""
        if credits is None and usd is None:
            return None
        usd_value = Decimal(str(usd)) if usd is not None else None
        credits_value = (
            int(Decimal(str(credits))) if credits is not None else credits_from_usd(usd_value or ZERO)
        )
        if usd_value is None:
            usd_value = usd_from_credits(credits_value)
        if not usd_value.is_finite() or usd_value < 0 or credits_value < 0:
            raise ValueError(f"a reported cost must be finite and >= 0, got credits={credits!r} usd={usd!r}")
        return cls(credits_value, usd_value, False)

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> Cost | None:
        """The cost headers of a non-streamed answer (``x-aimlapi-credits-used`` / ``-usd-spent``)."""
        try:
            return cls.from_reported(
                headers.get("x-aimlapi-credits-used"), headers.get("x-aimlapi-usd-spent")
            )
        except (ValueError, ArithmeticError):
            return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: USD as an exact decimal string."""
        return {
            "credits_used": self.credits_used,
            "usd_spent": usd_text(self.usd_spent),
            "estimated": self.estimated,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cost:
        return cls(
            int(data.get("credits_used") or 0), to_decimal(data.get("usd_spent")), bool(data.get("estimated"))
        )


class PriceTable:
    """Model id -> Price; the shipped table, optionally overridden (connection extras, live refresh)."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(_shipped_prices() if prices is None else prices)

    @classmethod
    def from_listing(cls, models: Iterable[Mapping[str, Any]]) -> PriceTable:
        """The table of a ``GET /models?include=pricing`` answer (``{"price", "per"}`` rates); entries
        without usable input and output rates are skipped. Empty when none has pricing."""
        prices: dict[str, Price] = {}
        for entry in models:
            pricing = entry.get("pricing")
            if not isinstance(pricing, Mapping) or not entry.get("id"):
                continue
            try:
                rates = {
                    kind: _per_million(pricing[kind])
                    for kind in ("input", "output", "cached_input")
                    if kind in pricing
                }
            except (KeyError, TypeError, AttributeError, ArithmeticError):
                continue
            if "input" in rates and "output" in rates:
                prices[str(entry["id"])] = Price(rates["input"], rates["output"], rates.get("cached_input"))
        return cls(prices)

    def __len__(self) -> int:
        return len(self._prices)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> PriceTable:
        """This table with ``overrides`` (model -> Price or price mapping) winning."""
        merged = dict(self._prices)
        for model, value in (overrides or {}).items():
            merged[model] = value if isinstance(value, Price) else Price.parse(value)
        return PriceTable(merged)

    def get(self, model: str) -> Price | None:
        """The model's price by id, id without vendor prefix, or ``alibaba/`` + id; None if unknown."""
        for candidate in (model, model.split("/", 1)[-1], f"alibaba/{model}"):
            if candidate in self._prices:
                return self._prices[candidate]
        return None

    def price_for(self, model: str) -> tuple[Price, bool]:
        """The model's price, or the dearest known one (for an honest upper bound) and ``False``."""
        price = self.get(model)
        if price is not None:
            return price, True
        return max(self._prices.values(), key=lambda p: (p.output, p.input)), False

    def estimate(
        self, model: str, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0
    ) -> Cost:
        """A cost from token counts at the model's price; always flagged ``estimated``."""
        usd = self.price_for(model)[0].usd(prompt_tokens, completion_tokens, cached_tokens)
        return Cost(credits_from_usd(usd), usd, True)

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {model: p.as_dict() for model, p in sorted(self._prices.items())}


def _per_million(rate: Any) -> Decimal:
    """``{"price": p, "per": n}`` (USD per n tokens) -> USD per 1M tokens."""
    try:
        per = Decimal(str(rate.get("per", 1_000_000)))
        price = Decimal(str(rate["price"]))
    except InvalidOperation as exc:
        raise ArithmeticError(str(exc)) from exc
    if not per.is_finite() or per <= 0 or not price.is_finite():
        raise ArithmeticError("per must be positive and price finite")
    return price * PER_MILLION / per


@lru_cache(maxsize=1)
def _shipped_prices() -> dict[str, Price]:
    data = json.loads(resources.files("airflow_provider_qwen.client").joinpath("prices.json").read_text())
    listed = {**data.get("ceilings", {}), **data["models"]}  # observed prices, then ceilings (see the file)
    return {model: Price.parse(value) for model, value in listed.items()}


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    """The shipped price table."""
    return PriceTable()
