"""What QwenClient and AsyncQwenClient share: configuration, request encoding, answer parsing, errors.

Nothing here waits on the network, so the sync and async clients stay thin loops around it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pydantic_core
from pydantic import ValidationError

from airflow_provider_qwen import DEFAULT_BASE_URL, DEFAULT_MODEL
from airflow_provider_qwen import __version__ as _version
from airflow_provider_qwen.client.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    Charge,
    InvalidRequestError,
    InvalidResponseError,
    QwenError,
    error_for_status,
)
from airflow_provider_qwen.client.estimate import billable_usage
from airflow_provider_qwen.client.models import CallInfo, ChatCompletion
from airflow_provider_qwen.client.pricing import Cost, PriceTable, default_prices
from airflow_provider_qwen.client.request import ChatRequest, StreamOptions, build_request
from airflow_provider_qwen.client.retry import RetryPolicy, server_delay
from airflow_provider_qwen.client.scrub import ID_SHAPE, Scrubber, server_id, strip_userinfo
from airflow_provider_qwen.client.window import check_window, may_pass_window

log = logging.getLogger("airflow_provider_qwen.client")

CONNECT_TIMEOUT = 5.0
CLIENT_REQUEST_ID = ID_SHAPE
USER_AGENT = f"airflow-provider-qwen/{_version}"

# Failures after the whole request went out: the server may have generated (and charged) the answer.
FAILED_AFTER_SEND = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)


def new_client_request_id() -> str:
    """A fresh ``X-Client-Request-Id``: ``qwen-`` and 32 hex digits."""
    return "qwen-" + os.urandom(16).hex()


@dataclass
class CallTries:
    """The tries of one logical call: whether one that failed after sending may be retried, and how
    many did fail after sending (each possibly charged by the service)."""

    retry_after_send: bool = True
    unconfirmed: int = 0


class BaseClient:
    """Configuration and everything that does not wait on the network, shared by both clients."""

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str,
        model: str,
        timeout: float,
        connect_timeout: float,
        max_retries: int,
        prices: PriceTable | None,
        default_headers: Mapping[str, str] | None,
        retry: RetryPolicy | None,
    ) -> None:
        if api_key is not None and not isinstance(api_key, str):
            raise TypeError(f"api_key must be a string or None, not {type(api_key).__name__}")
        if api_key and not (api_key.isprintable() and api_key == api_key.strip() and " " not in api_key):
            # an HTTP library would refuse the header and quote the key in its error: say it here instead
            raise ValueError(
                "api_key has whitespace or control characters (a pasted newline?); allowed: the key "
                "alone, printable, without spaces (the key is not shown)"
            )
        base_url = str(base_url or DEFAULT_BASE_URL).rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url={strip_userinfo(base_url)!r} must start with http:// or https://")
        self.base_url = base_url
        self.model = model or DEFAULT_MODEL
        self.retry = replace(retry or RetryPolicy(), max_retries=max_retries)
        self.prices = prices if prices is not None else default_prices()
        self._secret = api_key or None
        self._scrub = Scrubber(self._secret, urls=[base_url])  # every message and chain goes through it
        self._scrub.watch_logs()
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self._chat_url = f"{base_url}/chat/completions"
        url = httpx.URL(base_url)
        self._billing_url = f"{url.scheme}://{url.netloc.decode('ascii')}/v2/billing"
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **(default_headers or {})}
        if self._secret:
            headers["Authorization"] = f"Bearer {self._secret}"
        self._base_headers: dict[str, str] = {**headers, "Content-Type": "application/json"}
        self._sse = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        self._send_headers(own_client=False)

    def _send_headers(self, *, own_client: bool) -> None:
        """Headers to send per request: on a client we created, ``_base_headers`` are its defaults."""
        self._headers = {} if own_client else dict(self._base_headers)
        self._sse_headers = {**self._headers, **self._sse}

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        name = type(self).__name__
        base_url = strip_userinfo(self.base_url)
        return f"{name}(base_url={base_url!r}, model={self.model!r}, max_retries={self.max_retries})"

    # -- requests -------------------------------------------------------------------------

    def _build(
        self, messages: str | Sequence[Mapping[str, Any]], model: str | None, params: Any
    ) -> ChatRequest:
        return build_request(messages, model=model or self.model, **params)

    def _stream_request(
        self, request: ChatRequest | str | Sequence[Mapping[str, Any]], model: str | None, params: Any
    ) -> ChatRequest:
        """The request to stream; asks for the usage chunk unless ``stream_options`` says otherwise."""
        if isinstance(request, ChatRequest):
            if model or params:
                raise InvalidRequestError("stream(request, ...): pass parameters to build_request, not here")
            if request.stream:
                return request
            update: dict[str, Any] = {"stream": True}
            if request.stream_options is None:
                update["stream_options"] = StreamOptions(include_usage=True)
            return request.model_copy(update=update)
        params = {"stream": True, **params}
        if params.get("stream") is not True:
            raise InvalidRequestError(f"stream={params['stream']!r}: stream() always streams")
        params.setdefault("stream_options", {"include_usage": True})
        return self._build(request, model, params)

    def _prepare(
        self, request: ChatRequest, client_request_id: str | None, *, count: bool = True
    ) -> tuple[bytes, dict[str, str], str]:
        """The body, headers and request id of a send; refuses a request over its window
        (``count=False``: the async client counts off its event loop, see ``window_check_needed``)."""
        if not isinstance(request, ChatRequest):
            raise TypeError(f"send() takes a ChatRequest (see build_request), not {type(request).__name__}")
        rid = client_request_id or new_client_request_id()
        if not CLIENT_REQUEST_ID.match(rid):
            raise InvalidRequestError(
                f"client_request_id={rid!r} is invalid: 1-128 characters of A-Z a-z 0-9 . _ : - "
                "(the service silently drops any other value)"
            )
        if request.extra_body:
            content = json.dumps(request.to_body(), ensure_ascii=False).encode()
        else:
            content = pydantic_core.to_json(request, exclude_none=True)
        if count and may_pass_window(request, len(content)):
            check_window(request)
        base = self._sse_headers if request.stream else self._headers
        return content, {**base, "X-Client-Request-Id": rid}, rid

    # -- answers --------------------------------------------------------------------------

    def _redact(self, text: str) -> str:
        """``text`` without this client's credentials, in any form (see scrub.Scrubber)."""
        return self._scrub(text)

    def _finish(
        self,
        completion: ChatCompletion,
        headers: httpx.Headers,
        request: ChatRequest,
        rid: str,
        unconfirmed_tries: int = 0,
    ) -> ChatCompletion:
        """Bind the answer to its call; its cost is the one chain: the body's ``meta.usage``, then the
        cost headers, then an estimate at the price table (flagged ``estimated``) from its usage, or,
        when the service sent none, from the request and the text received."""
        cost = completion.reported_cost or Cost.from_headers(headers) or self._estimate(request, completion)
        completion.call = CallInfo(
            requested_model=request.model,
            inference_id=server_id(headers.get("x-inference-id"), self._scrub),
            client_request_id=rid,
            cost=cost,
            unconfirmed_tries=unconfirmed_tries,
        )
        return completion

    def _estimate(self, request: ChatRequest, completion: ChatCompletion) -> Cost:
        usage = billable_usage(request, completion)
        return self.prices.estimate(
            request.model, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
        )

    def _completion(
        self, response: httpx.Response, request: ChatRequest, rid: str, call: CallTries
    ) -> ChatCompletion:
        content = response.content
        try:
            completion = ChatCompletion.model_validate_json(content)
        except ValidationError:
            completion = None
        if completion is None or not completion.choices:
            # a 200 the service billed: without cost headers, its try counts as possibly paid
            paid = 0 if Cost.from_headers(response.headers) else 1
            raise self._invalid(
                response, rid, "the answer is not a chat completion", content, call.unconfirmed + paid
            )
        return self._finish(completion, response.headers, request, rid, call.unconfirmed)

    def _invalid(
        self, response: httpx.Response, rid: str, what: str, content: bytes, unconfirmed_tries: int = 0
    ) -> InvalidResponseError:
        text = self._scrub.cut(content.decode("utf-8", "replace"), 300)  # scrubbed before cut
        return InvalidResponseError(
            self._redact(f"{what}: {text!r}"),
            status_code=response.status_code,
            inference_id=server_id(response.headers.get("x-inference-id"), self._scrub),
            client_request_id=rid,
            # it was paid: what its headers reported
            charge=Charge(reported=Cost.from_headers(response.headers), unconfirmed_tries=unconfirmed_tries),
        )

    def _status_error(self, response: httpx.Response, rid: str, unconfirmed_tries: int = 0) -> APIStatusError:
        return error_for_status(
            response.status_code,
            response.content,
            reason=response.reason_phrase,
            inference_id=server_id(response.headers.get("x-inference-id"), self._scrub),
            client_request_id=rid,
            retry_after=server_delay(response.headers),
            redact=self._scrub,
            charge=Charge(unconfirmed_tries=unconfirmed_tries),
        )

    def _next_try(
        self,
        call: CallTries,
        rid: str,
        url: str,
        retries_taken: int,
        response: httpx.Response | None,
        exc: httpx.TransportError | None = None,
    ) -> float:
        """After a failed try (``exc``, or an error ``response``): the wait before the next try, or
        the try's error raised when the call gives up. Shared by the sync and async retry loops."""
        if exc is not None:
            unconfirmed = call.unconfirmed
            error, delay = self._transport_failure(
                exc, url, rid, call, retries_taken, answered=response is not None
            )
            maybe_paid = call.unconfirmed > unconfirmed
        else:
            assert response is not None
            error = self._status_error(response, rid, call.unconfirmed)
            delay = self.retry.next_delay(
                retries_taken, status_code=response.status_code, headers=response.headers
            )
            maybe_paid = False
        if delay is None:
            # the foreign error, re-told without secrets (its message and chain may quote the request)
            raise error from (self._scrub.stand_in(exc) if exc is not None else None)
        self._log_retry(rid, error, retries_taken, delay, maybe_paid=maybe_paid)
        return delay

    def _transport_failure(
        self,
        exc: httpx.TransportError,
        url: str,
        rid: str,
        call: CallTries,
        retries_taken: int,
        *,
        answered: bool,
    ) -> tuple[QwenError, float | None]:
        """A try that failed in transport: its error, and the delay before a retry (None: give up).

        A failure after the request was sent, before any answer (``answered``: an error status whose
        body could not be read, never charged), is counted on ``call``: the service may have charged
        it. It is retried only when ``call.retry_after_send``.
        """
        if not answered and isinstance(exc, FAILED_AFTER_SEND):
            call.unconfirmed += 1
        error = self._transport_error(exc, url, rid, Charge(unconfirmed_tries=call.unconfirmed))
        if not answered and isinstance(exc, FAILED_AFTER_SEND) and not call.retry_after_send:
            return error, None
        return error, self.retry.next_delay(retries_taken)

    def _transport_error(self, exc: httpx.TransportError, url: str, rid: str, charge: Charge) -> QwenError:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(
                self._redact(f"no answer from {url} in time ({detail})"), client_request_id=rid, charge=charge
            )
        if isinstance(exc, FAILED_AFTER_SEND):
            message = f"the connection to {url} broke after the request was sent, before a whole answer"
            return APIConnectionError(
                self._redact(f"{message} ({detail})"), client_request_id=rid, charge=charge
            )
        return APIConnectionError(
            self._redact(f"could not reach {url} ({detail})"), client_request_id=rid, charge=charge
        )

    def _json(self, response: httpx.Response, rid: str) -> Any:
        try:
            return json.loads(response.content)
        except ValueError:
            pass  # raised outside the except block: the decode error (holding the text) is not chained
        raise self._invalid(response, rid, "the answer is not JSON", response.content)

    def _balance(self, response: httpx.Response, rid: str) -> dict[str, Any]:
        data = self._json(response, rid)
        if not isinstance(data, dict) or "current_balance" not in data:
            raise self._invalid(response, rid, "the billing answer has no current_balance", response.content)
        return data

    def _models(self, response: httpx.Response, rid: str) -> list[dict[str, Any]]:
        data = self._json(response, rid)
        entries = data.get("data") if isinstance(data, dict) else data
        if not isinstance(entries, list):
            raise self._invalid(response, rid, "the models answer has no model list", response.content)
        return [entry for entry in entries if isinstance(entry, dict)]

    def _price_table(self, models: list[dict[str, Any]], response: httpx.Response, rid: str) -> PriceTable:
        prices = PriceTable.from_listing(models)
        if not len(prices):
            raise self._invalid(
                response, rid, "the models answer carries no usable pricing", response.content
            )
        return prices

    def _log_retry(
        self, rid: str, error: QwenError, retries_taken: int, delay: float, *, maybe_paid: bool = False
    ) -> None:
        log.log(
            logging.WARNING if maybe_paid else logging.INFO,
            "Qwen request %s failed (%s)%s; retry %d of %d in %.2f s",
            rid,
            error,
            "; the service may have charged that try" if maybe_paid else "",
            retries_taken + 1,
            self.retry.max_retries,
            delay,
        )
