"""QwenCallOperator: the operators whose work is a chain of single calls (a chat answer; a tool call
and its repair turns), each call made in the worker or, deferrable, in the triggerer.

A subclass describes its turns: ``first_state`` (JSON-safe), ``turn_request`` (the request of a
state) and ``after_turn`` (the next state, or ``Done`` with the result). ``run`` drives them in the
worker; with ``deferrable=True`` every call is handed to ``QwenChatTrigger`` and the task resumes
in ``execute_complete`` with the state in the trigger's event, so a minutes-long call holds no
worker slot.
The worst case of a deferred call is reserved and journaled before the task defers, and settled
from the trigger's event when it resumes (``Calls.start_deferred`` / ``finish_deferred``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_qwen.operators.base import QwenBaseOperator
from airflow_provider_qwen.operators.review import ReviewMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_qwen.calls import Calls, DeferredCall
    from airflow_provider_qwen.client.models import ChatCompletion
    from airflow_provider_qwen.client.request import ChatRequest

State = dict[str, Any]


@dataclass(frozen=True)
class Done:
    """The last turn's outcome: the task's result."""

    value: Any


def default_deferrable() -> bool:
    """``[operators] default_deferrable``, as the ASF operators read it (default False)."""
    from airflow.sdk import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


class QwenCallOperator(ReviewMixin, QwenBaseOperator):
    """Base of QwenChatOperator and QwenToolCallOperator.

    :param deferrable: make each call in the triggerer, holding no worker slot while it runs
        (default: ``[operators] default_deferrable``). The result, ``qwen_cost`` and the budgets
        are the same as without.
    :param fail_on_truncation: fail when an answer was cut at the token limit (default: warn).
    :param require_approval: show the result to a person before it is pushed (see ReviewMixin).
    """

    def __init__(
        self,
        *,
        deferrable: bool | None = None,
        fail_on_truncation: bool = False,
        require_approval: bool = False,
        review_timeout: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(require_approval=require_approval, review_timeout=review_timeout, **kwargs)
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.fail_on_truncation = fail_on_truncation
        self.check_flags(deferrable=self.deferrable, fail_on_truncation=fail_on_truncation)

    # -- the turns, defined by subclasses ---------------------------------------------------

    def first_state(self, context: Context) -> State:
        """The state before the first call (JSON-safe: it travels in the resume kwargs)."""
        return {}

    def turn_request(self, context: Context, state: State) -> ChatRequest:
        raise NotImplementedError

    def after_turn(self, state: State, completion: ChatCompletion) -> Done | State:
        raise NotImplementedError

    def send_turn(self, calls: Calls, request: ChatRequest) -> ChatCompletion:
        """One call in the worker (a subclass may stream it)."""
        return calls.send(request, fail_on_truncation=self.fail_on_truncation)

    # -- driving them ------------------------------------------------------------------------

    def run(self, context: Context, calls: Calls) -> Any:
        state = self.first_state(context)
        while True:
            request = self.turn_request(context, state)
            if self.deferrable:
                self._defer(context, calls, request, state)
            outcome = self.after_turn(state, self.send_turn(calls, request))
            if isinstance(outcome, Done):
                return self.deliver(context, outcome.value, calls=calls)
            state = outcome

    def execute_complete(self, context: Context, event: Mapping[str, Any], spent: Any = None) -> Any:
        """Resume after the triggerer's call: record its cost, then the next turn or the result.
        ``spent``: what the try spent before the pause (in ``next_kwargs``)."""
        from airflow_provider_qwen.calls import DeferredCall

        resume = event.get("resume") if isinstance(event, Mapping) else None
        if not isinstance(resume, Mapping) or not isinstance(resume.get("state"), dict):
            raise TypeError(
                f"{type(self).__name__} {self.task_id!r}: not a Qwen trigger's event: {event!r:.200}"
            )
        deferred, state = DeferredCall.from_dict(resume.get("call") or {}), resume["state"]
        return self.metered(
            context,
            lambda ctx, calls: self._resume_turn(ctx, calls, event, deferred, state),
            resumed=True,
            carried=spent,
        )

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Airflow resumes a task whose trigger timed out (``execution_timeout``) or failed only to fail
        it: the call in flight may have been sent and billed, so it is counted first, as one possibly
        paid try at the worst case held for it (a timeout in the worker counts its call the same way)."""
        from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR

        if next_method == TRIGGER_FAIL_REPR:
            spent = (next_kwargs or {}).get("spent")
            try:
                self.metered(context, self._abandon_in_flight, resumed=True, carried=spent)
            except Exception:  # counting is a courtesy here: never hide why the task fails
                self.log.exception("could not count the deferred call whose trigger gave no answer")
        return super().resume_execution(next_method, next_kwargs, context)

    def _abandon_in_flight(self, context: Context, calls: Calls) -> None:
        from airflow_provider_qwen.client.pricing import usd_text

        for held in calls.cost.ledger.abandon_in_flight():
            self.log.warning(
                "deferred call %s got no answer from the triggerer (its trigger timed out or failed); "
                "counted as one possibly paid try at its worst case, %s USD, until reconciled",
                held.client_request_id,
                usd_text(held.unsettled_usd),
            )

    def _resume_turn(
        self, context: Context, calls: Calls, event: Mapping[str, Any], call: DeferredCall, state: State
    ) -> Any:
        # The request again, for its cost (estimates count its prompt). It was sent as built before the
        # pause; rendered again here it can fail (a param or an upstream XCom that changed meanwhile):
        # the paid call is then recorded all the same, from the event alone.
        request: ChatRequest | None = None
        unbuilt: Exception | None = None
        try:
            try:
                request = self.turn_request(context, state)
            except Exception as exc:
                unbuilt = exc
                self.log.warning(
                    "the request of deferred call %s cannot be built again on resume (%s); its cost is "
                    "recorded from the triggerer's event alone",
                    call.client_request_id,
                    exc,
                )
            try:
                completion = calls.finish_deferred(
                    call, event, request, fail_on_truncation=self.fail_on_truncation
                )
            finally:
                _forget_sends(context, call.client_request_id)
        except BaseException as exc:
            if not isinstance(exc, Exception):  # stopped (a kill, a timeout), maybe before the
                _record_if_held(calls, call, event, request)  # event was recorded: it is now, exactly
            raise
        try:
            outcome = self.after_turn(state, completion)
        except Exception:
            if unbuilt is not None:
                raise unbuilt from None
            raise
        if isinstance(outcome, Done):
            return self.deliver(context, outcome.value, calls=calls)
        self._defer(context, calls, self.turn_request(context, outcome), outcome)

    def _defer(self, context: Context, calls: Calls, request: ChatRequest, state: State) -> NoReturn:
        from airflow_provider_qwen.client.pricing import usd_text
        from airflow_provider_qwen.triggers.qwen import QwenChatTrigger, resume_guard_s

        guard = resume_guard_s()
        call = calls.start_deferred(request)  # a budget refusal raises here, before deferring
        marker, storage_conn_id = _sends_marker(context, call.client_request_id, self.log)
        self.log.info(
            "deferring call %s to the triggerer (no worker slot is held while it runs); up to %s USD held",
            call.client_request_id,
            usd_text(call.held_usd),
        )
        self.defer(
            trigger=QwenChatTrigger(
                request=request.to_dict(),
                client_request_id=call.client_request_id,
                qwen_conn_id=self.qwen_conn_id,
                retry_after_send=calls.retry_after_send,
                marker=marker,
                storage_conn_id=storage_conn_id,
                resume={"call": call.to_dict(), "state": state},
                not_before=time.time() + guard,
            ),
            method_name="execute_complete",
            kwargs={"spent": calls.spent_so_far()},  # also for a resume after the trigger failed
            timeout=self.execution_timeout,
        )


def _sends_marker(context: Context, client_request_id: str, log: Any) -> tuple[str | None, str | None]:
    """Where the trigger counts its sends (the task's storage folder), or None when it cannot."""
    try:
        from airflow_provider_qwen.storage import task_folder

        folder = task_folder(context) / "deferred"
        return str(folder / f"{client_request_id}.json"), getattr(folder, "conn_id", None)
    except Exception as exc:
        log.warning(
            "no storage folder for the deferred call's send count (%s): a resend after a triggerer "
            "restart would not be counted in qwen_cost",
            exc,
        )
        return None, None


def _record_if_held(
    calls: Calls, call: DeferredCall, event: Mapping[str, Any], request: ChatRequest | None
) -> None:
    """Record the triggerer's event for ``call`` unless it was already (else the try's end counts the
    call at its worst case held, as one possibly paid try)."""
    if any(e.client_request_id == call.client_request_id for e in calls.cost.ledger.in_flight):
        with contextlib.suppress(Exception):  # the call's own error: recorded, the stop goes on
            calls.finish_deferred(call, event, request)


def _forget_sends(context: Context, client_request_id: str) -> None:
    """Drop the send count of a call that is settled (best effort: a leftover file is harmless)."""
    try:
        from airflow_provider_qwen.storage import task_folder

        (task_folder(context) / "deferred" / f"{client_request_id}.json").unlink(missing_ok=True)
    except Exception:
        pass
