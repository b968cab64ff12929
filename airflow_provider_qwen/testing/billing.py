"""The emulator's own billing: its price list and its arithmetic, tokens -> credits -> USD.

An oracle: it imports none of the client's money code, so a rounding bug there is caught here, not
reproduced. The service bills whole credits (1 USD = 2,000,000 credits), rounded up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

CREDITS_PER_USD = 2_000_000
PER_MILLION = Decimal(1_000_000)

# USD per 1M tokens (input, output[, cached input]; reasoning billed as output), as the service lists them.
LISTED: dict[str, tuple[str, ...]] = {
    "alibaba/qwen3.7-max": ("2.60", "7.80", "0.52"),
    "alibaba/qwen3-max": ("1.20", "6.00", "0.24"),
    "alibaba/qwen3-235b-a22b-thinking-2507": ("0.23", "2.30"),
    "alibaba/qwen3-next-80b-a3b-instruct": ("0.15", "1.50"),
    "alibaba/qwen3-next-80b-a3b-thinking": ("0.15", "1.50"),
    "alibaba/qwen-max": ("1.60", "6.40"),
    "alibaba/qwen-plus": ("0.40", "1.20"),
    "alibaba/qwen-turbo": ("0.05", "0.20"),
    "alibaba/qwen3-coder-480b-a35b-instruct": ("0.22", "0.95"),
}


@dataclass(frozen=True)
class Rate:
    """USD per 1M input, output (reasoning included) and, when listed, cached input tokens."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    @classmethod
    def parse(cls, model: str, value: Any) -> Rate:
        """A ``{"input", "output"[, "cached_input"]}`` mapping, or an object whose ``as_dict()`` is one."""
        if isinstance(value, Rate):
            return value
        if not isinstance(value, Mapping) and callable(getattr(value, "as_dict", None)):
            value = value.as_dict()
        try:
            cached = value.get("cached_input")
            rates = [Decimal(str(value[kind])) for kind in ("input", "output")]
            rates += [Decimal(str(cached))] if cached is not None else []
            if not all(rate.is_finite() and rate >= 0 for rate in rates):
                raise ArithmeticError("rates must be finite and not negative")
        except (KeyError, TypeError, AttributeError, ArithmeticError) as exc:
            raise ValueError(
                f"the price of {model!r} needs numbers >= 0 for 'input' and 'output' "
                f"(USD per 1M tokens), got {value!r}"
            ) from exc
        return cls(*rates)


def credits_for(usd: Decimal) -> int:
    """Whole credits for an exact USD amount, rounded up (the service never bills a fraction)."""
    return int((usd * CREDITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


def usd_for(credits: int) -> Decimal:
    """The USD a whole number of credits is worth, exactly."""
    return Decimal(credits) / CREDITS_PER_USD


class Prices:
    """Model id -> Rate: what the emulator bills with.

    ``prices`` is a mapping ``model -> {"input", "output"[, "cached_input"]}`` (USD per 1M tokens) laid
    over the listed table, or a whole table: any object with an ``as_dict()`` returning such a mapping
    (a client ``PriceTable``, duck-typed), used as it is, as the emulator always has.
    """

    def __init__(self, prices: Mapping[str, Any] | Any = None) -> None:
        rates: dict[str, Any] = {model: Rate(*map(Decimal, listed)) for model, listed in LISTED.items()}
        if prices is not None and not isinstance(prices, Mapping):
            rates, prices = dict(prices.as_dict()), None
        rates.update(prices or {})
        self._rates = {model: Rate.parse(model, value) for model, value in rates.items()}
        if not self._rates:
            raise ValueError("an empty price table: the emulator needs at least one model's price")

    def get(self, model: str) -> Rate | None:
        """The model's rate by id, id without vendor prefix, or ``alibaba/`` + id."""
        for candidate in (model, model.split("/", 1)[-1], f"alibaba/{model}"):
            if candidate in self._rates:
                return self._rates[candidate]
        return None

    def rate_for(self, model: str) -> Rate:
        """The model's rate; an unlisted model is billed at the dearest listed one."""
        return self.get(model) or max(self._rates.values(), key=lambda r: (r.output, r.input))

    def as_dict(self) -> dict[str, dict[str, str]]:
        """Model -> {"input", "output"[, "cached_input"]}, as text: what ``GET /models`` lists."""
        listed = {}
        for model, rate in sorted(self._rates.items()):
            cached = {"cached_input": str(rate.cached_input)} if rate.cached_input is not None else {}
            listed[model] = {"input": str(rate.input), "output": str(rate.output), **cached}
        return listed

    def bill(self, model: str, prompt_tokens: int, completion_tokens: int) -> tuple[int, Decimal]:
        """(credits, usd) of one answer: whole credits rounded up, usd = credits / 2,000,000."""
        rate = self.rate_for(model)
        credits = credits_for((prompt_tokens * rate.input + completion_tokens * rate.output) / PER_MILLION)
        return credits, usd_for(credits)
