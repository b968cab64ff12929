"""QwenRetryPolicy: Airflow 3.3's retry policy (``retry_policy=``) for tasks that call Qwen.

A task's ``retries`` are spent well only on failures another try can cure. Set next to them::

    QwenChatOperator(..., retries=3, retry_policy=QwenRetryPolicy())

or for a whole DAG in ``default_args``. The policy runs in the worker on the task's exception
(and the exceptions it was raised from) and decides:

- **fail at once**: 400/422 (the service refused the request), 401 (the API key), 403 (out of
  credits), 404 (unknown model or path), another 4xx, a budget refusal, a request our own checks
  refused before sending: another try would fail the same way, and may be paid for;
- **retry**: 429, 408/409, 5xx, timeouts, dropped connections, cut streams and unreadable answers,
  after the delay the server asked for (``Retry-After``, capped at ``max_retry_delay``), else the
  task's own ``retry_delay``;
- anything else (a structured output still invalid after its repairs, a refusal, a non-Qwen
  error): the task's standard behaviour.

A retry never pays twice for what an earlier try finished: batches resume from their checkpoint,
agents from their journal, and ``qwen_cost`` counts every try.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions.retry_policy import RetryAction, RetryDecision, RetryPolicy

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

DEFAULT_MAX_RETRY_DELAY = timedelta(minutes=15)
_CHAIN_LIMIT = 16  # exceptions followed through __cause__ / __context__


class QwenRetryPolicy(RetryPolicy):
    """Fail at once on errors another try cannot cure; retry the transient ones after the server's
    delay.

    :param max_retry_delay: the longest server-requested delay honoured (a ``timedelta`` > 0);
        a longer ``Retry-After`` waits this long, and says so in the decision's reason.
    """

    def __init__(self, *, max_retry_delay: timedelta = DEFAULT_MAX_RETRY_DELAY) -> None:
        if not isinstance(max_retry_delay, timedelta) or max_retry_delay <= timedelta(0):
            raise ValueError(f"QwenRetryPolicy: max_retry_delay={max_retry_delay!r} must be a timedelta > 0")
        self.max_retry_delay = max_retry_delay

    def __repr__(self) -> str:
        return f"QwenRetryPolicy(max_retry_delay={self.max_retry_delay!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QwenRetryPolicy) and other.max_retry_delay == self.max_retry_delay

    def __hash__(self) -> int:
        return hash(self.max_retry_delay)

    def evaluate(
        self,
        exception: BaseException,
        try_number: int,
        max_tries: int,
        context: Context | None = None,
    ) -> RetryDecision:
        error = _qwen_error(exception)
        if error is None:
            return RetryDecision.default()
        return self.decide(error)

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
        if isinstance(error, (errors.RateLimitError, errors.ConflictError, errors.ServerError)):
            return self._retry(error, name)
        if isinstance(error, errors.APIStatusError):
            status = error.status_code
            if status is not None and 400 <= status < 500:
                why = _CLIENT_ERRORS.get(status, "the service refused the request")
                return RetryDecision.fail(f"{name}: {why}; another try would fail the same way")
            return self._retry(error, name)
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
        return RetryDecision.default()

    def _retry(self, error: Any, name: str) -> RetryDecision:
        after = getattr(error, "retry_after", None)
        if (
            isinstance(after, bool)
            or not isinstance(after, (int, float))
            or not math.isfinite(after)
            or after < 0
        ):
            return RetryDecision.retry(reason=f"{name}: transient, retried after the task's retry_delay")
        asked = timedelta(seconds=after)
        if asked > self.max_retry_delay:
            return RetryDecision.retry(
                delay=self.max_retry_delay,
                reason=f"{name}: the server asked for {after:g} s; waiting {self.max_retry_delay} "
                "(max_retry_delay)",
            )
        return RetryDecision.retry(delay=asked, reason=f"{name}: retried after the server's {after:g} s")

    def serialize(self) -> dict[str, Any]:
        return {"max_retry_delay": self.max_retry_delay.total_seconds()}

    @classmethod
    def deserialize(cls, data: dict[str, Any]) -> QwenRetryPolicy:
        return cls(max_retry_delay=timedelta(seconds=float(data["max_retry_delay"])))


_CLIENT_ERRORS = {
    400: "the service refused the request (400)",
    401: "the API key is missing or wrong (401)",
    403: "the account is out of credits (403)",
    404: "unknown model or path (404)",
    413: "the request is too large (413)",
    422: "the service refused the request (422)",
}


def _qwen_error(exception: BaseException) -> Any:
    """The first QwenError in the exception and what it was raised from (cause, then context)."""
    from airflow_provider_qwen.client.errors import QwenError

    seen: set[int] = set()
    current: BaseException | None = exception
    while current is not None and id(current) not in seen and len(seen) < _CHAIN_LIMIT:
        if isinstance(current, QwenError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _describe(error: Any) -> str:
    """The error's class and ids for the decision's reason (never its message: that is the log's)."""
    parts = [type(error).__name__]
    if error.status_code is not None:
        parts.append(f"status={error.status_code}")
    if error.client_request_id:
        parts.append(f"client_request_id={error.client_request_id}")
    return " ".join(parts)


# RetryAction is re-exported for DAG authors who combine this policy with their own.
__all__ = ["DEFAULT_MAX_RETRY_DELAY", "QwenRetryPolicy", "RetryAction"]
