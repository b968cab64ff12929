"""Calls: every model call of one task try goes through here, sync, async or streamed.

Reserve the worst case against the budgets -> send (a try that may have been paid is not retried
under a budget) -> record the charge, from the answer or from the error -> run the finish checks
(refusal, truncation) -> release the reservation. No Airflow import: operators hand in the client
and the try's ``TaskCost``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client._base import new_client_request_id
from airflow_provider_qwen.client.errors import QwenError
from airflow_provider_qwen.cost.budget import settle

if TYPE_CHECKING:
    from airflow_provider_qwen.client.client import AsyncQwenClient, QwenClient
    from airflow_provider_qwen.client.models import ChatCompletion, ChatCompletionChunk
    from airflow_provider_qwen.client.request import ChatRequest
    from airflow_provider_qwen.cost.record import Estimate
    from airflow_provider_qwen.cost.task import TaskCost

# Earlier sends of one deferred call counted at most (runs of its trigger on restarted triggerers):
# a count above it is not ours (a garbage marker, a tampered event) and would bill that many tries.
MAX_RESENDS = 100

TRUNCATED = (
    "the answer was cut at the token limit (finish_reason='length'); raise max_completion_tokens or "
    "shorten the prompt (a batch: lower max_input_tokens)"
)


@dataclass(frozen=True)
class DeferredCall:
    """A call handed to the triggerer (a deferrable operator): its id, model and the worst case held
    for it over the pause; JSON round-trips it (the task's resume kwargs)."""

    client_request_id: str
    model: str
    held_usd: Decimal = Decimal(0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "client_request_id": self.client_request_id,
            "model": self.model,
            "held_usd": str(self.held_usd),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeferredCall:
        rid, held = data.get("client_request_id"), Decimal(str(data.get("held_usd") or 0))
        if not isinstance(rid, str) or not rid or not held.is_finite() or held < 0:
            raise ValueError(f"not a deferred call: {dict(data)!r}")
        return cls(rid, str(data.get("model") or ""), held)


@dataclass
class _Meter:
    """What one metered call left to settle: its estimate, if its cost had to be estimated;
    ``recorded`` once its answer is being recorded (a stop meanwhile must not count it again)."""

    estimate: Estimate | None = None
    recorded: bool = False


class Calls:
    """The metered calls of one task try.

    :param cost: the try's ledger and budgets.
    :param client: a function returning the sync client (called on the first sync call).
    :param log: where truncation warnings go.
    """

    def __init__(
        self,
        cost: TaskCost,
        *,
        client: Callable[[], QwenClient] | None = None,
        log: logging.Logger | Any = None,
    ) -> None:
        self.cost = cost
        self._get_client = client
        self.log = log or logging.getLogger(__name__)

    @cached_property
    def client(self) -> QwenClient:
        """The sync client, fetched on the first sync call (an async-only task never opens one)."""
        if self._get_client is None:
            raise RuntimeError("these Calls have no sync client")
        return self._get_client()

    @contextmanager
    def _metered(self, request: ChatRequest, held: Decimal, rid: str) -> Iterator[_Meter]:
        """Around one call whose worst case ``held`` is reserved: record what it cost, then release.

        A call stopped by something other than its own error (a timeout of the task, a cancelled
        coroutine, a kill) may have been sent and paid: it counts as one possibly paid try."""
        meter = _Meter()
        try:
            yield meter
        except BaseException as exc:
            if meter.estimate is None and not meter.recorded:
                if isinstance(exc, QwenError):
                    meter.estimate = self.cost.ledger.add_error(exc, request)
                else:
                    meter.estimate = self.cost.ledger.add_interrupted(request, rid)
            raise
        finally:
            self.cost.budget.release(held, meter.estimate)

    @property
    def retry_after_send(self) -> bool:
        """Under a budget a try that failed after being sent is not retried: it may have been paid,
        and the worst case held is for one paid try."""
        return not self.cost.budget.limited

    def send(
        self, request: ChatRequest, *, fail_on_truncation: bool = False, warn: bool = True
    ) -> ChatCompletion:
        """One request on the sync client (a ``stream=True`` one is streamed and assembled)."""
        rid = new_client_request_id()
        with self._metered(request, self.cost.budget.reserve(request), rid) as meter:
            completion = self.client.send(
                request, client_request_id=rid, retry_after_send=self.retry_after_send
            )
            meter.estimate = self.cost.ledger.add(completion, request)
        return self.check(completion, fail_on_truncation=fail_on_truncation, warn=warn)

    async def asend(
        self,
        request: ChatRequest,
        client: AsyncQwenClient,
        *,
        fail_on_truncation: bool = False,
        warn: bool = True,
    ) -> ChatCompletion:
        """One request on an async client; concurrent requests each hold their worst case.

        Token counts (and a run budget's claims) run off the event loop."""
        budget = self.cost.budget
        held = await asyncio.to_thread(budget.reserve, request) if budget.limited else Decimal(0)
        rid = new_client_request_id()
        with self._metered(request, held, rid) as meter:
            completion = await client.send(
                request, client_request_id=rid, retry_after_send=self.retry_after_send
            )
            if completion.cost.estimated:  # priced from its text: count it off the loop
                meter.recorded = True  # the thread records it even if this task is cancelled meanwhile
                meter.estimate = await asyncio.to_thread(self.cost.ledger.add, completion, request)
            else:
                meter.estimate = self.cost.ledger.add(completion, request)
        return self.check(completion, fail_on_truncation=fail_on_truncation, warn=warn)

    def stream(
        self,
        request: ChatRequest,
        on_chunk: Callable[[ChatCompletionChunk], Any],
        *,
        fail_on_truncation: bool = False,
    ) -> ChatCompletion:
        """One streamed request on the sync client; ``on_chunk`` sees every chunk as it arrives."""
        rid = new_client_request_id()
        with (
            self._metered(request, self.cost.budget.reserve(request), rid) as meter,
            self.client.stream(
                request, client_request_id=rid, retry_after_send=self.retry_after_send
            ) as stream,
        ):
            in_callback = False
            try:
                for chunk in stream:
                    in_callback = True
                    on_chunk(chunk)
                    in_callback = False
            except BaseException as exc:
                if isinstance(exc, QwenError) and not in_callback:
                    raise  # the stream's own error: its Charge says what it cost (_metered records it)
                # stopped from our side (a callback, a kill) mid-generation: the service bills it
                meter.estimate = self.cost.ledger.add_cut_stream(stream.partial(), request)
                raise
            completion = stream.completion
            meter.estimate = self.cost.ledger.add(completion, request)
        return self.check(completion, fail_on_truncation=fail_on_truncation)

    def spent_so_far(self) -> dict[str, Any]:
        """This try's record so far, JSON-safe: it travels in a pause's kwargs (see ``restore``)."""
        return self.cost.try_record().to_xcom()

    def start_deferred(self, request: ChatRequest) -> DeferredCall:
        """Before a call is handed to the triggerer: reserve its worst case against the budgets (a
        refusal raises here, unsent) and hold it in the ledger as in flight, so the cost journaled
        when the task defers counts it, and a retry after a kill counts it too."""
        budget = self.cost.budget
        held = budget.reserve(request)
        budget.release(held)  # from here the ledger's in-flight estimate holds it, across processes
        if not held and self.cost.prices.get(request.model) is not None:
            held = budget.worst_case(request)  # unbudgeted: still what a killed try may have cost
        rid = new_client_request_id()
        self.cost.ledger.hold_in_flight(rid, request.model, held)
        return DeferredCall(rid, request.model, held)

    def finish_deferred(
        self,
        call: DeferredCall,
        event: Mapping[str, Any],
        request: ChatRequest | None,
        *,
        fail_on_truncation: bool = False,
    ) -> ChatCompletion:
        """After the pause: record what the triggerer's call cost, from its event (the answer, or the
        error and its charge), then the finish checks. ``resent``: earlier runs of the trigger (a
        triggerer restarted mid-call) that may have sent it, each counted as a possibly paid try.
        ``request``: the call's request as built again (None when it cannot be: the figures reported
        are exact all the same, an estimate then has no prompt to count)."""
        from airflow_provider_qwen.client.errors import error_from_dict
        from airflow_provider_qwen.client.models import CallInfo, ChatCompletion

        ledger = self.cost.ledger
        resent = _count(event.get("resent"))
        status = event.get("status")
        # What the budget would have held for the call in the worker (nothing without a budget): the
        # rest of it stays unsettled after an estimated answer, as there. ``held_usd`` is held anyway,
        # for a kill over the pause.
        reserved = call.held_usd if self.cost.budget.limited else Decimal(0)
        completion, error, unreadable = None, None, ""
        try:
            if status == "success" and isinstance(event.get("completion"), Mapping):
                completion = ChatCompletion.from_dict(event["completion"])
            elif status == "error" and isinstance(event.get("error"), Mapping):
                error = error_from_dict(event["error"])
        except Exception as exc:  # a wrong shape: the call was sent all the same, and may be paid
            unreadable = f"the deferred call's event cannot be read ({type(exc).__name__}: {str(exc)[:300]})"
        if completion is not None:
            info = completion.call or CallInfo(  # unbound: what the body reports, else estimated
                requested_model=call.model, client_request_id=call.client_request_id, cost=completion.cost
            )
            tries = info.unconfirmed_tries + resent
            completion.call = replace(info, client_request_id=call.client_request_id, unconfirmed_tries=tries)
            recorded = ledger.settle(call.client_request_id, lambda: ledger.add(completion, request))
            settle(reserved, recorded)
            return self.check(completion, fail_on_truncation=fail_on_truncation)
        if error is not None:
            error.client_request_id = call.client_request_id
            error.charge = replace(error.charge, unconfirmed_tries=error.charge.unconfirmed_tries + resent)
            recorded = ledger.settle(call.client_request_id, lambda: ledger.add_error(error, request))
            settle(reserved, recorded)
            raise error
        # it may have been sent, by this run of the trigger (unless it says it failed before sending)
        # and the earlier ones: one estimate of the call
        tries = (0 if status == "failed" and event.get("sent") is False else 1) + resent
        ledger.settle(
            call.client_request_id,
            lambda: ledger.add_interrupted(request, call.client_request_id, tries=tries) if tries else None,
        )
        message = unreadable or "the deferred call failed in the triggerer: " + str(
            event.get("message") or f"an event the operator does not know: status={status!r}"
        )
        raise QwenError(message, client_request_id=call.client_request_id)

    def check(
        self, completion: ChatCompletion, *, fail_on_truncation: bool, warn: bool = True
    ) -> ChatCompletion:
        """The finish checks: a refusal is an error; truncation a warning, or an error when asked."""
        if completion.refusal:
            raise QwenError(f"the model refused: {completion.refusal}", inference_id=completion.inference_id)
        if completion.finish_reason == "length":
            if fail_on_truncation:
                raise QwenError(TRUNCATED, inference_id=completion.inference_id)
            if warn:
                self.log.warning(TRUNCATED)
        return completion


def _count(value: Any) -> int:
    """An event's count of earlier sends: a positive int, at most MAX_RESENDS; else 0."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return min(value, MAX_RESENDS)
    return 0
