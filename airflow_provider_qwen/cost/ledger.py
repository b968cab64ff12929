"""What one task try spent: every paid answer, and what a failed call may still have been charged.

Exact where the service reported a cost; estimated (and flagged) for a stream cut before its usage
and for each try that failed after its request was sent (``Charge.unconfirmed_tries``).
"""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import TYPE_CHECKING

from airflow_provider_qwen.client.errors import QwenError
from airflow_provider_qwen.client.models import Usage
from airflow_provider_qwen.client.pricing import Cost, PriceTable
from airflow_provider_qwen.client.tokens import output_cap, request_tokens, text_tokens
from airflow_provider_qwen.cost.record import CostTotals

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest


def estimated_usage(prompt: int, completion: int, reasoning: int = 0) -> Usage:
    """A Usage of estimated token counts (``completion`` includes ``reasoning``, as on the wire)."""
    return Usage.model_validate(
        {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }
    )


def generated_text(completion: ChatCompletion) -> tuple[str, str]:
    """(answer text, reasoning text) a completion holds: content and tool calls, and reasoning."""
    calls = "".join(call.function.name + call.function.arguments for call in completion.tool_calls)
    return (completion.content or "") + calls, completion.reasoning_content or ""


class TryLedger:
    """The spend of one try, in total and per model; safe to share between threads."""

    def __init__(self, prices: PriceTable, model: str | None = None) -> None:
        self.prices = prices
        self.model = model  # the task's model: the name of charges whose model is unknown
        self.total = CostTotals()
        self.by_model: dict[str, CostTotals] = {}
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> Decimal:
        return self.total.usd_spent

    def add(self, completion: ChatCompletion, request: ChatRequest | None = None) -> None:
        """One paid answer, and an estimate for each earlier try of its call that may be paid."""
        self.add_charge(completion.model, completion.cost, completion.usage)
        self.add_unconfirmed(completion.unconfirmed_tries, completion.model, request, completion.usage)

    def add_charge(self, model: str, cost: Cost, usage: Usage | None = None) -> None:
        """A charge that came without a parsed answer."""
        with self._lock:
            self.total.add_charge(model, cost, usage)
            self.by_model.setdefault(model, CostTotals()).add_charge(model, cost, usage)

    def add_unconfirmed(
        self, tries: int, model: str, request: ChatRequest | None, usage: Usage | None = None
    ) -> None:
        """``tries`` that failed after being sent, each as one estimated charge.

        Each is priced as the call's answer (``usage``: the same prompt, the answer's length) when
        one arrived, else as the request's estimated prompt and its output cap (0 if unbounded).
        """
        if tries <= 0:
            return
        if usage is not None:
            tokens = estimated_usage(usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens)
        elif request is not None:
            tokens = estimated_usage(request_tokens(request), output_cap(request))
        else:
            tokens = estimated_usage(0, 0)
        cost = self._estimate(model, tokens)
        for _ in range(tries):
            self.add_charge(model, cost, tokens)

    def add_error(self, error: BaseException, request: ChatRequest | None = None) -> None:
        """What a failed call may still have been charged for, from its error's ``Charge``.

        Exactly when the service said so (a cut stream's usage, an unparsable 200's cost headers);
        estimated for a stream cut before its usage and for every try that failed after being sent.
        """
        if not isinstance(error, QwenError):
            return
        charge = error.charge
        model = (request.model if request is not None else "") or self.model or ""
        partial = charge.partial
        if partial is None:
            if charge.reported is not None:
                self.add_charge(model, charge.reported)
            self.add_unconfirmed(charge.unconfirmed_tries, model, request)
            return
        model = partial.model or model
        if partial.usage is not None or partial.reported_cost is not None:
            self.add(partial, request)  # what the stream reported, and the partial's unconfirmed tries
            self.add_unconfirmed(
                charge.unconfirmed_tries - partial.unconfirmed_tries, model, request, partial.usage
            )
            return
        if not charge.reported_by_service:
            self.add_cut_stream(partial, request)
        self.add_unconfirmed(max(charge.unconfirmed_tries, partial.unconfirmed_tries), model, request)

    def add_cut_stream(self, partial: ChatCompletion, request: ChatRequest | None) -> None:
        """A stream cut before its usage: the request's prompt and the text so far, estimated.

        The completion estimate never passes the request's output cap: the service cannot bill more.
        """
        answer, reasoning = generated_text(partial)
        thinking = text_tokens(reasoning)
        completion = text_tokens(answer) + thinking
        prompt, cap = 0, 0
        if request is not None:
            prompt, cap = request_tokens(request), output_cap(request)
        if cap:
            completion, thinking = min(completion, cap), min(thinking, cap)
        tokens = estimated_usage(prompt, completion, thinking)
        model = partial.model or self.model or ""
        self.add_charge(model, self._estimate(model, tokens), tokens)

    def _estimate(self, model: str, usage: Usage) -> Cost:
        return self.prices.estimate(model, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
