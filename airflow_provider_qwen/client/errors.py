"""The QwenError tree: one class per way a call can fail, each safe to log (no credential: see scrub.py)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_qwen.client.pricing import Cost
from airflow_provider_qwen.client.scrub import Scrubber, scrub_generic, scrub_value

if TYPE_CHECKING:
    from airflow_provider_qwen.client.models import ChatCompletion


@dataclass(frozen=True)
class Charge:
    """What a failed call may still have cost, set once where its error is built.

    ``reported``: a cost the service reported (the cost headers of an unparsable 200); ``partial``:
    the completion assembled before a stream failed (its usage, if any, was paid for);
    ``unconfirmed_tries``: tries of the call, the last one included, that failed after being sent
    (a read timeout, an answer cut mid-transfer: maybe charged); ``reported_by_service``: the
    service itself reported the failure (an error chunk: a failed generation, documented as unpaid).
    """

    reported: Cost | None = None
    partial: ChatCompletion | None = None
    unconfirmed_tries: int = 0
    reported_by_service: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (a trigger event, a journal)."""
        return {
            "reported": self.reported.to_dict() if self.reported is not None else None,
            "partial": self.partial.to_dict() if self.partial is not None else None,
            "unconfirmed_tries": self.unconfirmed_tries,
            "reported_by_service": self.reported_by_service,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Charge:
        from airflow_provider_qwen.client.models import ChatCompletion

        reported, partial = data.get("reported"), data.get("partial")
        return cls(
            reported=Cost.from_dict(reported) if reported is not None else None,
            partial=ChatCompletion.from_dict(partial) if partial is not None else None,
            unconfirmed_tries=int(data.get("unconfirmed_tries") or 0),
            reported_by_service=bool(data.get("reported_by_service")),
        )


NO_CHARGE = Charge()


class QwenError(Exception):
    """Base of every error this provider raises.

    ``status_code`` is the HTTP status (``None`` before or without an answer), ``inference_id`` the
    service's ``x-inference-id`` (where a charge would be recorded) and ``client_request_id`` the
    ``X-Client-Request-Id`` sent with every try of the call. ``charge`` is what the failed call may
    still have cost (see Charge).
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        inference_id: str | None = None,
        client_request_id: str | None = None,
        body: Any = None,
        charge: Charge = NO_CHARGE,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.inference_id = inference_id
        self.client_request_id = client_request_id
        self.body = body
        self.charge = charge

    @property
    def unconfirmed_tries(self) -> int:
        """Tries of the call that failed after being sent (see Charge)."""
        return self.charge.unconfirmed_tries

    def __str__(self) -> str:
        parts = [self.message]
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.inference_id:
            parts.append(f"inference_id={self.inference_id}")
        if self.client_request_id:
            parts.append(f"client_request_id={self.client_request_id}")
        return parts[0] if len(parts) == 1 else f"{parts[0]} ({', '.join(parts[1:])})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class InvalidRequestError(QwenError, ValueError):
    """Parameters refused on our side, before any (paid) request is sent."""


class APIStatusError(QwenError):
    """The service answered with an error status; ``retry_after`` is the delay it asked for (its
    ``Retry-After`` / ``retry-after-ms`` header), if any."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BadRequestError(APIStatusError):
    """400/422: the service refused the request body."""


class AuthenticationError(APIStatusError):
    """401: the API key is missing or wrong."""


class InsufficientCreditsError(APIStatusError):
    """403: the account is out of credits (the AI/ML API uses 403, not 402)."""


class NotFoundError(APIStatusError):
    """404: unknown path or model."""


class ConflictError(APIStatusError):
    """408/409: retried by the convention, surfaced when retries run out."""


class RateLimitError(APIStatusError):
    """429: rate or concurrency limit; ``retry_after`` is the server's requested delay, if any."""


class ServerError(APIStatusError):
    """5xx: the service or an upstream provider failed."""


class GenerationTimeoutError(ServerError):
    """504: the generation took longer than the gateway allows."""


class APITimeoutError(QwenError):
    """No answer within the client's timeout (the server may still have finished and charged)."""


class APIConnectionError(QwenError):
    """The connection failed or was dropped before a complete answer."""


class InvalidResponseError(QwenError):
    """A 2xx answer we cannot parse (not JSON, wrong shape); ``charge.reported`` is what its headers
    reported."""


class StreamError(QwenError):
    """An error chunk, or a stream cut or timed out after its first byte.

    ``charge.partial`` is the completion assembled so far; ``charge.reported_by_service`` is true
    for an error chunk (a failed generation, unpaid), false for a cut (may follow a paid generation).
    """

    @property
    def partial(self) -> ChatCompletion | None:
        return self.charge.partial


class StructuredOutputError(QwenError):
    """A tool call's arguments could not be parsed or validated; ``errors`` lists the violations."""

    def __init__(self, message: str, *, errors: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.errors = list(errors or [])


class BudgetExceededError(QwenError):
    """A request was not sent because its worst-case cost would pass a budget."""


_STATUS_CLASSES: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: InsufficientCreditsError,
    404: NotFoundError,
    408: ConflictError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
    504: GenerationTimeoutError,
}

_TAGS = re.compile(r"<[^>]+>")
_SPACES = re.compile(r"\s+")


def error_message_from_body(body: Any, status_code: int, reason: str = "") -> str:
    """The human message of an error body: the AI/ML API shape, the OpenAI shape, or plain text."""
    if isinstance(body, Mapping):
        err = body.get("error")
        if isinstance(err, Mapping) and err.get("message"):
            details = [f"{k}={err[k]}" for k in ("type", "code", "param") if err.get(k)]
            return str(err["message"]) + (f" [{', '.join(details)}]" if details else "")
        if isinstance(err, str) and err:
            return err
        message = body.get("message")
        if isinstance(message, list):  # validation errors can come as a list of strings
            return "; ".join(str(m) for m in message)
        if message:
            return str(message)
    if isinstance(body, str) and body.strip():
        text = _SPACES.sub(" ", _TAGS.sub(" ", body)).strip()
        return f"HTTP {status_code} {reason}".strip() + f" (non-JSON body: {text[:200]!r})"
    return f"HTTP {status_code} {reason}".strip()


def parse_error_body(content: bytes) -> Any:
    """Decode an error body to JSON where it is JSON, else to text; never raises."""
    text = content.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def error_for_status(
    status_code: int,
    content: bytes,
    *,
    reason: str = "",
    inference_id: str | None = None,
    client_request_id: str | None = None,
    retry_after: float | None = None,
    redact: str | Callable[[str], str] | None = None,
    charge: Charge = NO_CHARGE,
) -> APIStatusError:
    """Build the QwenError for an error answer.

    ``redact`` is the key, or a client's ``Scrubber``: the body is scrubbed as parsed, before any of
    it is cut to a message's length; the reason phrase and the message are scrubbed too.
    """
    scrub: Callable[[str], str] = Scrubber(redact) if isinstance(redact, str) else (redact or scrub_generic)
    body = scrub_value(parse_error_body(content), scrub)
    message = scrub(error_message_from_body(body, status_code, scrub(reason)))
    cls = _STATUS_CLASSES.get(status_code)
    if cls is None:
        cls = ServerError if status_code >= 500 else APIStatusError
    kwargs: dict[str, Any] = {
        "status_code": status_code,
        "inference_id": inference_id,
        "client_request_id": client_request_id,
        "body": body,
        "charge": charge,
    }
    return cls(message, retry_after=retry_after, **kwargs)


def error_to_dict(error: QwenError) -> dict[str, Any]:
    """A QwenError as JSON-safe data (a trigger event): class, message, ids, charge, and of its body
    only the error's ``code`` and ``type`` (what a retry decision reads; a body may be large)."""
    data: dict[str, Any] = {
        "type": type(error).__name__,
        "message": error.message,
        "status_code": error.status_code,
        "inference_id": error.inference_id,
        "client_request_id": error.client_request_id,
        "charge": error.charge.to_dict(),
    }
    if isinstance(error, APIStatusError):
        data["retry_after"] = _delay_to_json(error.retry_after)
        if codes := _error_codes(error.body):
            data["body"] = {"error": codes}
    if isinstance(error, StructuredOutputError):
        data["errors"] = list(error.errors)
    return data


def error_from_dict(data: Mapping[str, Any]) -> QwenError:
    """The QwenError ``error_to_dict`` described (an unknown class name: a plain QwenError)."""
    cls = _ERROR_CLASSES.get(str(data.get("type")), QwenError)
    status = data.get("status_code")
    kwargs: dict[str, Any] = {
        "status_code": status if isinstance(status, int) and not isinstance(status, bool) else None,
        "inference_id": _text_or_none(data.get("inference_id")),
        "client_request_id": _text_or_none(data.get("client_request_id")),
        "charge": Charge.from_dict(data["charge"]) if isinstance(data.get("charge"), Mapping) else NO_CHARGE,
    }
    message = str(data.get("message") or "the call failed")
    if issubclass(cls, APIStatusError):
        body = data.get("body")
        codes = _error_codes(body)
        kwargs["body"] = {"error": codes} if codes else None
        return cls(message, retry_after=_delay_or_none(data.get("retry_after")), **kwargs)
    if cls is StructuredOutputError:
        errors = data.get("errors")
        return StructuredOutputError(
            message, errors=[str(e) for e in errors] if isinstance(errors, list) else None, **kwargs
        )
    return cls(message, **kwargs)


def _error_codes(body: Any) -> dict[str, str]:
    """The ``code`` and ``type`` strings of an OpenAI-shaped error body (each at most 200 characters)."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(err, Mapping):
        return {}
    return {k: err[k] for k in ("code", "type") if isinstance(err.get(k), str) and len(err[k]) <= 200}


def _delay_to_json(delay: float | None) -> float | str | None:
    """JSON has no infinity: an unbounded delay travels as ``"inf"``; -inf and NaN (no delay) as None."""
    if delay is None or isinstance(delay, bool) or not isinstance(delay, (int, float)):
        return None
    if delay == math.inf:
        return "inf"
    return float(delay) if math.isfinite(delay) else None


def _delay_or_none(value: Any) -> float | None:
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if not math.isnan(value) and value >= 0 else None


def _text_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _subclasses(cls: type[QwenError]) -> list[type[QwenError]]:
    return [cls, *(c for sub in cls.__subclasses__() for c in _subclasses(sub))]


# Every error class of this module by name (a class defined elsewhere arrives as its nearest base).
_ERROR_CLASSES: dict[str, type[QwenError]] = {
    c.__name__: c for c in _subclasses(QwenError) if c.__module__ == __name__
}
