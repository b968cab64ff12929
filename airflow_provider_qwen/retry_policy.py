"""QwenRetryPolicy: Airflow 3.3's retry policy (``retry_policy=``) for tasks that call Qwen.

A task's ``retries`` are spent well only on failures another try can cure. Set next to them::

    QwenChatOperator(..., retries=3, retry_policy=QwenRetryPolicy())

or for a whole DAG in ``default_args``. The policy runs in the worker on the task's exception
(and the exceptions it was raised from) and decides:

- **fail at once**: 400/422 (the service refused the request), 401 (the API key), 403 (out of
  credits, or the key may not do this), 404 (unknown model or path), another 4xx, a 429 that says
  the quota is spent, a redirect (3xx: the connection's host is wrong), a budget refusal, a request
  our own checks refused before sending: another try would fail the same way, and may be paid for;
- **retry**: 429, 408/409, 5xx, timeouts, dropped connections, cut streams and unreadable answers,
  after the delay the server asked for (``Retry-After``, capped at ``max_retry_delay``), else the
  task's own ``retry_delay``;
- anything else (a structured output still invalid after its repairs, unless
  ``on_structured_output_error`` says otherwise; a refusal; a non-Qwen error): the task's standard
  behaviour.

A retry never pays twice for what an earlier try finished: batches resume from their checkpoint,
agents from their journal, and ``qwen_cost`` counts every try.

The module imports no client code at DAG parse time (the error classes are imported when a task
fails). On Airflow < 3.3, which has no retry policies, it still imports: ``default_args`` drop a
``retry_policy`` that the operators do not accept, so a DAG written for 3.3 parses on 3.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context
    from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision, RetryPolicy
else:
    try:
        from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision, RetryPolicy
    except ImportError:  # Airflow < 3.3: the same names, so the module and DAGs using it still import
        import enum
        from dataclasses import dataclass

        class RetryAction(enum.Enum):
            RETRY = "retry"
            FAIL = "fail"
            DEFAULT = "default"

        @dataclass(frozen=True)
        class RetryDecision:
            action: RetryAction = RetryAction.DEFAULT
            retry_delay: timedelta | None = None
            reason: str | None = None

            @classmethod
            def fail(cls, reason: str | None = None) -> RetryDecision:
                return cls(action=RetryAction.FAIL, reason=reason)

            @classmethod
            def retry(cls, delay: timedelta | None = None, reason: str | None = None) -> RetryDecision:
                return cls(action=RetryAction.RETRY, retry_delay=delay, reason=reason)

            @classmethod
            def default(cls) -> RetryDecision:
                return cls(action=RetryAction.DEFAULT)

        class RetryPolicy:
            """Stand-in base: this Airflow never evaluates a policy."""


DEFAULT_MAX_RETRY_DELAY = timedelta(minutes=15)
_CHAIN_LIMIT = 32  # exceptions looked at through __cause__ / __context__ / an exception group
_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")  # what an X-Client-Request-Id may hold
_QUOTA_CODES = frozenset({"insufficient_quota", "quota_exceeded", "billing_hard_limit_reached"})
_ACTIONS = {action.value: action for action in RetryAction}


class QwenRetryPolicy(RetryPolicy):
    """Fail at once on errors another try cannot cure; retry the transient ones after the server's
    delay.

    :param max_retry_delay: the longest server-requested delay honoured (a ``timedelta`` > 0, at
        most a day); a longer ``Retry-After`` waits this long, and says so in the decision's reason.
    :param on_structured_output_error: what a ``StructuredOutputError`` (the model's arguments still
        invalid after ``max_repairs``) does: ``"default"`` (the task's ``retries``, the default),
        ``"retry"`` (a new try samples again) or ``"fail"`` (fail at once); a ``RetryAction`` too.
    """

    def __init__(
        self,
        *,
        max_retry_delay: timedelta = DEFAULT_MAX_RETRY_DELAY,
        on_structured_output_error: RetryAction | str = RetryAction.DEFAULT,
    ) -> None:
        if (
            not isinstance(max_retry_delay, timedelta)
            or max_retry_delay <= timedelta(0)
            or max_retry_delay > timedelta(days=1)
        ):
            raise ValueError(
                f"QwenRetryPolicy: max_retry_delay={max_retry_delay!r} must be a timedelta > 0 and at "
                "most 1 day, e.g. timedelta(minutes=15)"
            )
        self.max_retry_delay = max_retry_delay
        self.on_structured_output_error = _action("on_structured_output_error", on_structured_output_error)

    def __repr__(self) -> str:
        return (
            f"QwenRetryPolicy(max_retry_delay={self.max_retry_delay!r}, "
            f"on_structured_output_error={self.on_structured_output_error.value!r})"
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QwenRetryPolicy) and self.serialize() == other.serialize()

    def __hash__(self) -> int:
        return hash((self.max_retry_delay, self.on_structured_output_error))

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        """The decision of the first QwenError in the exception's chain that has one (a wrapper that
        says nothing, such as a batch's failure, lets the error it was raised from decide)."""
        for error in _qwen_errors(exception):
            decision = self.decide(error)
            if decision.action is not RetryAction.DEFAULT:
                return decision
        return RetryDecision.default()

    def decide(self, error: Any) -> RetryDecision:
        """The decision for one QwenError (``evaluate`` finds it in the exception chain)."""
        from airflow_provider_qwen.client import errors

        name = _describe(error)
        if isinstance(error, errors.BudgetExceededError):
            return RetryDecision.fail(f"{name}: a budget refused the request; another try would too")
        if isinstance(error, errors.InvalidRequestError):
            return RetryDecision.fail(
                f"{name}: the request is invalid; fix the task, another try fails alike"
            )
        if isinstance(error, errors.APIStatusError):
            return self._status(error, name)
        if isinstance(
            error,
            (
                errors.APITimeoutError,
                errors.APIConnectionError,
                errors.StreamError,
                errors.InvalidResponseError,
            ),
        ):
            return RetryDecision.retry(reason=f"{name}: transient, retried after the task's retry_delay")
        if isinstance(error, errors.StructuredOutputError):
            action = self.on_structured_output_error
            if action is RetryAction.RETRY:
                return RetryDecision.retry(
                    reason=f"{name}: invalid structured output; another try samples again"
                )
            if action is RetryAction.FAIL:
                return RetryDecision.fail(
                    f"{name}: invalid structured output (on_structured_output_error='fail')"
                )
        return RetryDecision.default()

    def _status(self, error: Any, name: str) -> RetryDecision:
        status = error.status_code
        if not isinstance(status, int) or isinstance(status, bool):
            return RetryDecision.default()
        if status == 429 and _quota_spent(error.body):
            return RetryDecision.fail(
                f"{name}: the quota or credits are spent (429); another try fails alike"
            )
        if status in (408, 409, 429) or 500 <= status <= 599:
            return self._retry(error, name)
        if 400 <= status <= 499:
            why = _CLIENT_ERRORS.get(status, f"the service refused the request ({status})")
            return RetryDecision.fail(f"{name}: {why}; another try would fail the same way")
        if 300 <= status <= 399:
            return RetryDecision.fail(
                f"{name}: the server redirected ({status}); check the connection's host, another try "
                "is redirected too"
            )
        return RetryDecision.default()

    def _retry(self, error: Any, name: str) -> RetryDecision:
        after = getattr(error, "retry_after", None)
        if isinstance(after, bool) or not isinstance(after, (int, float)) or math.isnan(after) or after < 0:
            return RetryDecision.retry(reason=f"{name}: transient, retried after the task's retry_delay")
        cap = self.max_retry_delay.total_seconds()
        if after > cap:  # compared as seconds: timedelta(seconds=1e15) would overflow
            return RetryDecision.retry(
                delay=self.max_retry_delay,
                reason=f"{name}: the server asked for {_seconds(after)}; waiting {self.max_retry_delay} "
                "(max_retry_delay)",
            )
        return RetryDecision.retry(
            delay=timedelta(seconds=after), reason=f"{name}: retried after the server's {_seconds(after)}"
        )

    def serialize(self) -> dict[str, Any]:
        return {
            "max_retry_delay": self.max_retry_delay.total_seconds(),
            "on_structured_output_error": self.on_structured_output_error.value,
        }

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> QwenRetryPolicy:
        if not isinstance(data, Mapping):
            raise ValueError(f"QwenRetryPolicy.deserialize: {type(data).__name__} is not a dict")
        seconds = data.get("max_retry_delay", DEFAULT_MAX_RETRY_DELAY.total_seconds())
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError(f"QwenRetryPolicy.deserialize: max_retry_delay={seconds!r} is not seconds")
        return cls(
            max_retry_delay=timedelta(seconds=seconds),
            on_structured_output_error=data.get("on_structured_output_error", RetryAction.DEFAULT.value),
        )


_CLIENT_ERRORS = {
    400: "the service refused the request (400)",
    401: "the API key is missing or wrong (401)",
    403: "forbidden (403): the account is out of credits or the key may not do this",
    404: "unknown model or path (404)",
    413: "the request is too large (413)",
    422: "the service refused the request (422)",
}


def _action(name: str, value: Any) -> RetryAction:
    if isinstance(value, RetryAction):
        return value
    if isinstance(value, str) and value.strip().lower() in _ACTIONS:
        return _ACTIONS[value.strip().lower()]
    raise ValueError(
        f"QwenRetryPolicy: {name}={value!r} is not one of {', '.join(map(repr, _ACTIONS))} (or a RetryAction)"
    )


def _seconds(value: float) -> str:
    return "an unbounded delay" if math.isinf(value) else f"{value:g} s"


def _quota_spent(body: Any) -> bool:
    """Whether an error body (OpenAI-shaped, passed through from upstream) says the quota is spent:
    a 429 that no wait cures."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return False
    return any(isinstance(err.get(k), str) and err[k].lower() in _QUOTA_CODES for k in ("code", "type"))


def _qwen_errors(exception: BaseException) -> Iterator[Any]:
    """The QwenErrors of the exception and what it was raised from, outermost first: its
    ``__cause__``, its ``__context__`` unless suppressed (``raise ... from None``), and the members
    of an exception group."""
    from airflow_provider_qwen.client.errors import QwenError

    seen: set[int] = set()
    pending: list[BaseException] = [exception]
    while pending and len(seen) < _CHAIN_LIMIT:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, QwenError):
            yield current
        linked: list[Any] = list(getattr(current, "exceptions", None) or ())  # an ExceptionGroup
        linked.append(current.__cause__)
        if not current.__suppress_context__:
            linked.append(current.__context__)
        pending.extend(e for e in linked if isinstance(e, BaseException))


def _describe(error: Any) -> str:
    """The error's class and ids for the decision's reason (never its message: that is the log's)."""
    parts = [type(error).__name__]
    status = getattr(error, "status_code", None)
    if isinstance(status, int) and not isinstance(status, bool):
        parts.append(f"status={status}")
    rid = getattr(error, "client_request_id", None)
    if isinstance(rid, str) and _ID.match(rid):
        parts.append(f"client_request_id={rid}")
    return " ".join(parts)


# RetryAction and RetryDecision are re-exported for DAG authors who combine this policy with their own.
__all__ = ["DEFAULT_MAX_RETRY_DELAY", "QwenRetryPolicy", "RetryAction", "RetryDecision"]
