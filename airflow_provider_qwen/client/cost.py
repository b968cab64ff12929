"""What a response cost, and a ledger that sums many exactly.

Credits are the service's exact unit (1 USD = 2,000,000 credits): sums are integer credits and
Decimal dollars, never floats. Where the service reports no cost (a cut stream, another
OpenAI-compatible server) the cost is estimated from tokens and a price table and flagged.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion, MetaUsage, Usage
    from airflow_provider_qwen.client.request import ChatRequest

CREDITS_PER_USD = 2_000_000
PER_MILLION = Decimal(1_000_000)
ZERO = Decimal(0)


@dataclass(frozen=True)
class Price:
    """USD per 1M tokens. Reasoning tokens are billed as output."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None

    @classmethod
    def parse(cls, value: Mapping[str, Any]) -> Price:
        try:
            cached = value.get("cached_input")
            price = cls(
                input=Decimal(str(value["input"])),
                output=Decimal(str(value["output"])),
                cached_input=Decimal(str(cached)) if cached is not None else None,
            )
            rates = [price.input, price.output, *([price.cached_input] if cached is not None else [])]
            if not all(rate.is_finite() and rate >= 0 for rate in rates):
                raise ArithmeticError("rates must be finite and not negative")
        except (KeyError, ArithmeticError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"a price needs numbers >= 0 for 'input' and 'output' (USD per 1M tokens), got {value!r}"
            ) from exc
        return price

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> Decimal:
        cached_price = self.cached_input if self.cached_input is not None else self.input
        fresh = max(prompt_tokens - cached_tokens, 0)
        total = fresh * self.input + cached_tokens * cached_price + completion_tokens * self.output
        return total / PER_MILLION


class PriceTable:
    """Model id -> Price; the shipped table, optionally overridden (connection extras, live refresh)."""

    def __init__(self, prices: Mapping[str, Price] | None = None) -> None:
        self._prices: dict[str, Price] = dict(_shipped_prices() if prices is None else prices)

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> PriceTable:
        merged = dict(self._prices)
        for model, value in (overrides or {}).items():
            merged[model] = value if isinstance(value, Price) else Price.parse(value)
        return PriceTable(merged)

    def get(self, model: str) -> Price | None:
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

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {
            model: {
                "input": str(p.input),
                "output": str(p.output),
                **({"cached_input": str(p.cached_input)} if p.cached_input is not None else {}),
            }
            for model, p in sorted(self._prices.items())
        }


@lru_cache(maxsize=1)
def _shipped_prices() -> dict[str, Price]:
    data = json.loads(resources.files("airflow_provider_qwen.client").joinpath("prices.json").read_text())
    return {model: Price.parse(value) for model, value in data["models"].items()}


def usd_text(amount: Decimal) -> str:
    """An exact USD amount as plain decimal text ("0.0000005", never "5E-7"): how records carry USD."""
    return format(amount.normalize(), "f")


def usd_from_credits(credits: int) -> Decimal:
    return Decimal(credits) / CREDITS_PER_USD


def credits_from_usd(usd: Decimal) -> int:
    return int((usd * CREDITS_PER_USD).to_integral_value(rounding=ROUND_CEILING))


@dataclass(frozen=True)
class Cost:
    """The cost of one or more responses."""

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
        return cls(credits_value, usd_value, False)

    @classmethod
    def estimate(cls, model: str, usage: Usage | None, prices: PriceTable | None = None) -> Cost:
        """Estimate from token counts; always flagged ``estimated``."""
        if usage is None:
            return cls(0, ZERO, True)
        price, _ = (prices or default_prices()).price_for(model)
        usd = price.usd(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        return cls(credits_from_usd(usd), usd, True)


def cost_from_meta(meta_usage: MetaUsage | None) -> Cost | None:
    if meta_usage is None:
        return None
    return Cost.from_reported(meta_usage.credits_used, meta_usage.usd_spent)


def cost_from_headers(headers: Mapping[str, str]) -> Cost | None:
    credits = headers.get("x-aimlapi-credits-used")
    usd = headers.get("x-aimlapi-usd-spent")
    try:
        return Cost.from_reported(credits, usd)
    except (ValueError, ArithmeticError):
        return None


@lru_cache(maxsize=1)
def default_prices() -> PriceTable:
    return PriceTable()


def estimate_prompt_tokens(text: str) -> int:
    """A deliberately high token estimate for budgets: one token per two UTF-8 bytes, plus framing."""
    return len(text.encode("utf-8")) // 2 + 8


def estimate_text_tokens(text: str) -> int:
    """Tokens of generated text, estimated high like the prompt: one per two UTF-8 bytes, rounded up."""
    return -(-len(text.encode("utf-8")) // 2)


def request_text(request: ChatRequest) -> str:
    """All the text a request sends, tools included: the input to a conservative token estimate."""
    body = request.to_body()
    return json.dumps(body.get("messages", []), ensure_ascii=False) + json.dumps(
        body.get("tools", []), ensure_ascii=False
    )


def output_cap(request: ChatRequest) -> int:
    """The request's output token cap (``max_completion_tokens``, else ``max_tokens``); 0 if unbounded."""
    return int(request.max_completion_tokens or request.max_tokens or 0)


def worst_case_usd(request: ChatRequest, prices: PriceTable) -> Decimal:
    """The most a request can cost: estimated prompt tokens plus the output cap at the output price.

    Without ``max_completion_tokens``/``max_tokens`` the output is unbounded; only the prompt counts.
    """
    price, _ = prices.price_for(request.model)
    return price.usd(estimate_prompt_tokens(request_text(request)), output_cap(request))


def generated_text(completion: ChatCompletion) -> tuple[str, str]:
    """(answer text, reasoning text) a completion holds: content and tool calls, and reasoning."""
    calls = "".join(call.function.name + call.function.arguments for call in completion.tool_calls)
    return (completion.content or "") + calls, completion.reasoning_content or ""


def estimated_usage(prompt: int, completion: int, reasoning: int = 0) -> Usage:
    """A Usage of estimated token counts (``completion`` includes ``reasoning``, as on the wire)."""
    from airflow_provider_qwen.client.models import Usage

    return Usage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )


@dataclass
class CostLedger:
    """Sums usage and cost of many responses exactly; safe to share between threads."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost: Cost = field(default_factory=Cost)
    models: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, completion: ChatCompletion) -> Cost:
        """Record one paid response; returns its cost."""
        return self.add_charge(completion.model, completion.cost, completion.usage)

    def add_charge(self, model: str, cost: Cost, usage: Usage | None = None) -> Cost:
        """Record a charge that may come without a parsed response (a cut stream, an unparsable body)."""
        with self._lock:
            self.requests += 1
            if usage is not None:
                self.prompt_tokens += usage.prompt_tokens
                self.completion_tokens += usage.completion_tokens
                self.reasoning_tokens += usage.reasoning_tokens
                self.total_tokens += usage.total_tokens
            self.cost = self.cost + cost
            self.models.add(model)
        return cost

    def merge(self, other: CostLedger) -> None:
        with self._lock:
            self.requests += other.requests
            self.prompt_tokens += other.prompt_tokens
            self.completion_tokens += other.completion_tokens
            self.reasoning_tokens += other.reasoning_tokens
            self.total_tokens += other.total_tokens
            self.cost = self.cost + other.cost
            self.models |= other.models

    @property
    def usd_spent(self) -> Decimal:
        return self.cost.usd_spent

    def record(self, *, model: str | None = None, try_number: int | None = None) -> dict[str, Any]:
        """The ``qwen_cost`` XCom record: JSON-safe, USD as an exact decimal string."""
        return {
            "model": model or ",".join(sorted(self.models)),
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
            "credits_used": self.cost.credits_used,
            "usd_spent": usd_text(self.cost.usd_spent),
            "estimated": self.cost.estimated,
            "try_number": try_number,
        }
