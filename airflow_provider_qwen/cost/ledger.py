"""What one task try spent: every paid answer, and what a failed call may still have been charged.

Exact where the service reported a cost; estimated (and flagged) otherwise: a stream that ended
without its usage, an answer without usage, each try that failed after its request was sent
(``Charge.unconfirmed_tries``). Every call with an estimate leaves an ``Estimate`` entry, so its
figure can later be replaced by the service's own (``cost/reconcile.py``, by ``client_request_id``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client.errors import QwenError
from airflow_provider_qwen.client.estimate import answer_usage, billable_usage, unsent_answer_usage, usage_of
from airflow_provider_qwen.client.pricing import Cost, PriceTable, credits_from_usd
from airflow_provider_qwen.cost.record import IN_FLIGHT, CostTotals, Estimate

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion, Usage
    from airflow_provider_qwen.client.request import ChatRequest


INFERENCE_IDS_KEPT = 1000  # a 100,000-item batch keeps the first ones, not 100,000 strings


class TryLedger:
    """The spend of one try, in total and per model; safe to share between threads."""

    def __init__(self, prices: PriceTable, model: str | None = None) -> None:
        self.prices = prices
        self.model = model  # the task's model: the name of charges whose model is unknown
        self.total = CostTotals()
        self.by_model: dict[str, CostTotals] = {}
        self.inference_ids: list[str] = []  # the first INFERENCE_IDS_KEPT answers' ids (lineage, logs)
        self.in_flight: list[Estimate] = []  # calls held in flight over the pause carried (see carry)
        self.carried_requests = 0  # requests made before a pause, elsewhere: their ids are not kept
        self._lock = threading.Lock()

    @property
    def spent_usd(self) -> Decimal:
        return self.total.usd_spent

    def add(self, completion: ChatCompletion, request: ChatRequest | None = None) -> Estimate | None:
        """One paid answer, and an estimate for each earlier try of its call that may be paid.

        An answer without a reported cost is priced from its usage, or without usage from the
        request and the text received; a stream without its usage is then a cut stream for cost
        purposes, even after its finish chunk. Returns the call's ``Estimate`` when any of its
        figures is estimated.
        """
        model = completion.model or (request.model if request is not None else "") or self.model or ""
        cost = completion.cost
        usage = billable_usage(request, completion)
        estimate = Estimate.of(completion.client_request_id, model, completion.inference_id)
        self._keep_inference_id(completion.inference_id)
        if cost.estimated:
            cost = self._estimate(model, usage)
            streamed = request is not None and bool(request.stream)
            estimate.kind = "cut_stream" if streamed and completion.usage is None else "no_usage"
        self._charge(model, cost, usage, estimate)
        self._unconfirmed(completion.unconfirmed_tries, model, request, estimate, completion.usage)
        return self._file(estimate)

    def _keep_inference_id(self, inference_id: str | None) -> None:
        if inference_id and len(self.inference_ids) < INFERENCE_IDS_KEPT:
            with self._lock:
                self.inference_ids.append(inference_id)

    def carry(self, totals: CostTotals) -> None:
        """What this try spent before a pause (journaled then), counted again after it. Only in the
        total: ``by_model`` feeds the metrics, which the paused part already emitted. A call in
        flight over the pause (deferred) is left out: its answer or error is recorded after it."""
        carried = CostTotals()
        carried.merge(totals)
        carried.tries = carried.instances = 0  # the same try, not another one
        carried.estimates = [e for e in carried.estimates if e.kind != IN_FLIGHT]  # settled now
        with self._lock:
            self.total.merge(carried)
            self.in_flight.extend(e for e in totals.estimates if e.kind == IN_FLIGHT)
            self.carried_requests += carried.requests

    def hold_in_flight(self, client_request_id: str, model: str, worst_usd: Decimal) -> None:
        """A call sent elsewhere (a deferred one, in the triggerer) and not answered yet: its worst
        case counts as unsettled until its answer or error is recorded after the pause."""
        estimate = Estimate(
            client_request_id, model or self.model or "", kind=IN_FLIGHT, unsettled_usd=worst_usd
        )
        with self._lock:
            self.total.estimates.append(estimate)

    def settle(self, client_request_id: str, record: Callable[[], Any]) -> Any:
        """Record what a call held in flight over the pause cost (``record``), then drop its hold:
        one step for a stop (none is raised while this module runs), so the call is never both
        counted and still held, nor neither."""
        try:
            return record()
        finally:
            with self._lock:
                self.in_flight = [e for e in self.in_flight if e.client_request_id != client_request_id]

    def abandon_in_flight(self) -> list[Estimate]:
        """Count every call still held in flight over the pause as abandoned (its answer or error was
        never recorded: its trigger gave none, or the try stopped first); returns what was held."""
        with self._lock:
            held, self.in_flight = self.in_flight, []
        for estimate in held:
            self.add_abandoned(estimate)
        return held

    def add_abandoned(self, held: Estimate) -> Estimate | None:
        """A call held in flight over a pause whose answer never came (its trigger timed out or
        failed): it may have been sent and billed, so one possibly paid try at the worst case held."""
        worst = held.unsettled_usd
        estimate = Estimate.of(held.client_request_id, held.model or self.model or "")
        estimate.kind = "unconfirmed"
        self._charge(estimate.model, Cost(credits_from_usd(worst), worst, True), None, estimate)
        return self._file(estimate)

    def add_charge(self, model: str, cost: Cost, usage: Usage | None = None) -> None:
        """A charge that came without a parsed answer (or a test's hand-made one)."""
        with self._lock:
            self.total.add_charge(model, cost, usage)
            self.by_model.setdefault(model, CostTotals()).add_charge(model, cost, usage)

    def add_error(self, error: BaseException, request: ChatRequest | None = None) -> Estimate | None:
        """What a failed call may still have been charged for, from its error's ``Charge``.

        Exactly when the service said so (a cut stream's usage, an unparsable 200's cost headers);
        estimated for a stream cut before its usage and for every try that failed after being sent.
        """
        if not isinstance(error, QwenError):
            return None
        charge = error.charge
        model = (request.model if request is not None else "") or self.model or ""
        partial = charge.partial
        if partial is not None and (partial.usage is not None or partial.reported_cost is not None):
            estimate = self.add(partial, request)  # what the stream reported, and its unconfirmed tries
            extra = charge.unconfirmed_tries - partial.unconfirmed_tries
            estimate = estimate or Estimate.of(error.client_request_id, partial.model or model)
            self._unconfirmed(extra, partial.model or model, request, estimate, partial.usage)
            return self._file(estimate)
        estimate = Estimate.of(error.client_request_id, model, error.inference_id)
        self._keep_inference_id(error.inference_id)
        if partial is None:
            if charge.reported is not None:
                self._charge(model, charge.reported, None, estimate)
            self._unconfirmed(charge.unconfirmed_tries, model, request, estimate)
            return self._file(estimate)
        if not charge.reported_by_service:
            self._cut(partial, request, estimate)
        unconfirmed = max(charge.unconfirmed_tries, partial.unconfirmed_tries)
        self._unconfirmed(unconfirmed, partial.model or model, request, estimate)
        return self._file(estimate)

    def add_interrupted(
        self, request: ChatRequest | None, client_request_id: str | None = None, *, tries: int = 1
    ) -> Estimate | None:
        """A call stopped from our side before its answer (a task timeout, a cancelled coroutine):
        it may have been sent, so one possibly paid try at its prompt and output cap (``tries``: as
        many, all in the call's one estimate, as reconciliation matches one entry per call)."""
        estimate = Estimate.of(
            client_request_id, (request.model if request is not None else "") or self.model or ""
        )
        self._unconfirmed(tries, estimate.model, request, estimate)
        return self._file(estimate)

    def add_cut_stream(self, partial: ChatCompletion, request: ChatRequest | None) -> Estimate | None:
        """A stream cut before its usage (stopped from our side): its prompt and the text so far."""
        estimate = Estimate.of(partial.client_request_id, partial.model or self.model or "")
        self._cut(partial, request, estimate)
        return self._file(estimate)

    def _cut(self, partial: ChatCompletion, request: ChatRequest | None, estimate: Estimate) -> None:
        usage = answer_usage(request, partial)
        model = partial.model or (request.model if request is not None else "") or self.model or ""
        estimate.kind = "cut_stream"
        self._charge(model, self._estimate(model, usage), usage, estimate)

    def _unconfirmed(
        self,
        tries: int,
        model: str,
        request: ChatRequest | None,
        estimate: Estimate,
        usage: Usage | None = None,
    ) -> None:
        """``tries`` that failed after being sent, each as one estimated charge.

        Each is priced as the call's answer (``usage``: the same prompt, the answer's length) when
        one arrived, else as the request's prompt and its output cap (0 if unbounded).
        """
        if tries <= 0:
            return
        if usage is not None:
            tokens = usage_of(usage.prompt_tokens, usage.completion_tokens, usage.reasoning_tokens)
        else:
            tokens = unsent_answer_usage(request)
        cost = self._estimate(model, tokens)
        estimate.kind = estimate.kind or "unconfirmed"
        for _ in range(tries):
            self._charge(model, cost, tokens, estimate)

    def _charge(self, model: str, cost: Cost, usage: Usage | None, estimate: Estimate) -> None:
        self.add_charge(model, cost, usage)
        estimate.add(cost)

    def _file(self, estimate: Estimate) -> Estimate | None:
        if not estimate.kind:
            return None
        with self._lock:
            self.total.estimates.append(estimate)
        return estimate

    def _estimate(self, model: str, usage: Usage) -> Cost:
        return self.prices.estimate(model, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
