"""The service's own records, read with the same key as the chat client (no Airflow import).

- ``GET /v2/logs``: one row per request, failed ones at cost 0, with ``inference_id`` and the
  ``client_request_id`` we sent; windowed (``period`` or ``start`` + ``end``, at most 92 days) and
  paged by ``limit`` / ``offset``.
- ``GET /v2/billing/transactions``: the account ledger (``reference_id`` = inference id), paged by
  an opaque cursor, passed back verbatim.
- ``GET /v2/usage``: the key's total spend and charged requests over a window.

The ``/v2`` paths live at the API root, not under ``/v1``: the root is the base URL without its
``/v1``. Longer windows are split into legal ones (rows at a boundary are listed once). Every HTTP
call waits its turn under 200 calls a minute, shared by the clients of one key and host in a
process; a 429 (which carries no ``Retry-After``) is retried with a growing backoff. Errors are the
client's ``errors`` tree and never carry the key. See docs/cost.md, "Reconciliation".
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from types import TracebackType
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from airflow_provider_qwen import DEFAULT_BASE_URL, DEFAULT_MODEL
from airflow_provider_qwen.client._base import CONNECT_TIMEOUT, BaseClient, CallTries, new_client_request_id
from airflow_provider_qwen.client.errors import InvalidRequestError, InvalidResponseError
from airflow_provider_qwen.client.pricing import CREDITS_PER_USD, PriceTable, usd_from_credits
from airflow_provider_qwen.client.records_limits import (
    MAX_WINDOW,
    RateLimiter,
    Window,
    iso,
    parse_period,
    shared_limiter,
)
from airflow_provider_qwen.client.retry import RetryPolicy

__all__ = [
    "Amount",
    "LogRow",
    "RateLimiter",
    "RecordsClient",
    "Tokens",
    "Transaction",
    "UsageTotals",
    "Window",
    "api_root",
]

PAGE_SIZE = 100
MAX_MODELS = 50
STATUSES = frozenset({"succeeded", "failed"})
# 2, 4, 8, 16, 32 s: a 429 names no delay, and five retries outlast one rate window.
RECORDS_RETRY = RetryPolicy(max_retries=5, initial_delay=2.0, max_backoff=60.0)
RECORDS_TIMEOUT = 60.0

T = TypeVar("T", bound=BaseModel)


# -- wire types -------------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Amount(_Wire):
    """``{"usd", "credits"}``; credits are exact (1 USD = 2,000,000 credits)."""

    usd: Decimal = Decimal(0)
    credits: int | None = None

    @property
    def exact_credits(self) -> int:
        """The credits; derived from USD (rounded to the nearest credit) when absent."""
        if self.credits is not None:
            return self.credits
        return int((self.usd * CREDITS_PER_USD).to_integral_value())

    @property
    def exact_usd(self) -> Decimal:
        return usd_from_credits(self.exact_credits)


class Tokens(_Wire):
    input: int = 0
    output: int = 0
    total: int = 0


class LogRow(_Wire):
    """One request of ``GET /v2/logs``."""

    created: datetime | None = None
    status: str = ""
    origin: str | None = None
    model: str = ""
    cost: Amount = Field(default_factory=Amount)
    tokens: Tokens = Field(default_factory=Tokens)
    request_id: str | None = None
    inference_id: str | None = None
    client_request_id: str | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        return (self.inference_id, self.request_id, self.created, self.client_request_id, self.model)


class Transaction(_Wire):
    """One ledger entry of ``GET /v2/billing/transactions`` (``amount`` always positive)."""

    created_at: datetime | None = None
    direction: str = ""
    type: str = ""
    amount: Amount = Field(default_factory=Amount)
    model: str | None = None
    reference_id: str | None = None

    @property
    def is_model_charge(self) -> bool:
        return self.direction == "CHARGE" and self.type == "MODEL_USAGE"


class UsageTotals(_Wire):
    """``GET /v2/usage``: total spend (USD) and charged requests of the key over the window."""

    api_key_prefix: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    spend: Decimal = Decimal(0)
    currency: str = "USD"
    requests: int = 0


def api_root(base_url: str) -> str:
    """The API root of a chat base URL: ``https://api.aimlapi.com/v1`` -> ``https://api.aimlapi.com``."""
    url = httpx.URL(str(base_url).rstrip("/"))
    path = url.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return f"{url.scheme}://{url.netloc.decode('ascii')}{path}"


# -- the client -------------------------------------------------------------------------------------


class RecordsClient(BaseClient):
    """Synchronous client of ``/v2/logs``, ``/v2/billing/transactions`` and ``/v2/usage``.

    ``base_url`` is the chat client's (``.../v1``); ``limiter`` defaults to the one shared by every
    client of this key and host; ``now`` is the clock windows given as a ``period`` end at.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = RECORDS_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        retry: RetryPolicy | None = None,
        limiter: RateLimiter | None = None,
        http_client: httpx.Client | None = None,
        default_headers: Mapping[str, str] | None = None,
        page_size: int = PAGE_SIZE,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        policy = retry or RECORDS_RETRY
        super().__init__(
            api_key,
            base_url=base_url,
            model=DEFAULT_MODEL,
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_retries=policy.max_retries,
            prices=PriceTable({}),
            default_headers=default_headers,
            retry=policy,
        )
        if not 1 <= page_size <= PAGE_SIZE:
            raise ValueError(f"page_size={page_size} must be 1-{PAGE_SIZE}")
        self.root_url = api_root(self.base_url)
        self.page_size = page_size
        self.limiter = limiter or shared_limiter(self.root_url, api_key)
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._owns_http = http_client is None
        if http_client is None:
            http_client = httpx.Client(timeout=self._timeout, headers=self._base_headers)
            self._send_headers(own_client=True)
        self._http = http_client

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root_url={self.root_url!r})"

    # -- endpoints --------------------------------------------------------------------------------

    def logs(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        period: str | None = None,
        model: Sequence[str] = (),
        status: Sequence[str] = (),
    ) -> list[LogRow]:
        """Every request of the window (newest first per window), each row once.

        ``model`` and ``status`` filter (repeated parameters, never comma-joined); ``end`` defaults
        to now.
        """
        filters = _log_filters(model, status)
        rows: list[LogRow] = []
        seen: set[tuple[Any, ...]] = set()
        for window in self._windows(start, end, period):
            offset = 0
            while True:
                paging = [("limit", str(self.page_size)), ("offset", str(offset))]
                page, more, _ = self._page("/v2/logs", [*window, *filters, *paging], LogRow)
                for row in page:
                    if row.identity not in seen:
                        seen.add(row.identity)
                        rows.append(row)
                offset += len(page)
                if not more or not page:
                    break
        return rows

    def transactions(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        direction: str | None = None,
        type: str | None = None,
    ) -> list[Transaction]:
        """The ledger entries created in ``[start, end)`` (either side open), following the cursor."""
        params: list[tuple[str, str]] = [("limit", str(self.page_size))]
        if start is not None:
            params.append(("from", iso(start)))
        if end is not None:
            params.append(("to", iso(end)))
        params += [(name, value) for name, value in (("direction", direction), ("type", type)) if value]
        entries: list[Transaction] = []
        cursors: set[str] = set()
        cursor: str | None = None
        while True:
            page, more, data = self._page(
                "/v2/billing/transactions", [*params, *([("cursor", cursor)] if cursor else [])], Transaction
            )
            entries += page
            pagination = data.get("pagination")
            next_cursor = pagination.get("next_cursor") if isinstance(pagination, Mapping) else None
            if not more or not isinstance(next_cursor, str) or not next_cursor:
                return entries
            if next_cursor in cursors:
                raise self._bad_answer("/v2/billing/transactions", "the ledger repeated a cursor")
            cursors.add(next_cursor)
            cursor = next_cursor

    def usage(
        self, start: datetime | None = None, end: datetime | None = None, *, period: str | None = None
    ) -> UsageTotals:
        """The key's spend and charged requests over the window (summed over split windows)."""
        parts: list[UsageTotals] = []
        for window in self._windows(start, end, period):
            data = self._get("/v2/usage", window)
            try:
                parts.append(UsageTotals.model_validate(data))
            except ValidationError:
                raise self._bad_answer("/v2/usage", "the usage answer is not a usage total") from None
        return UsageTotals(
            api_key_prefix=parts[0].api_key_prefix,
            start=parts[0].start,
            end=parts[-1].end,
            spend=sum((p.spend for p in parts), Decimal(0)),
            currency=parts[0].currency,
            requests=sum(p.requests for p in parts),
        )

    # -- plumbing ---------------------------------------------------------------------------------

    def _windows(
        self, start: datetime | None, end: datetime | None, period: str | None
    ) -> Iterator[list[tuple[str, str]]]:
        """The query parameters of each legal window: ``period`` as is when it fits, else start/end."""
        if period is not None:
            if start is not None or end is not None:
                raise InvalidRequestError("give either period or start (and end), not both")
            span = parse_period(period)
            if span <= MAX_WINDOW:
                yield [("period", period)]
                return
            now = self._now()
            start, end = now - span, now
        if start is None:
            raise InvalidRequestError("the service's records need a window: give period or start (and end)")
        for part in Window.of(start, end if end is not None else self._now()).split():
            yield part.params()

    def _page(
        self, path: str, params: list[tuple[str, str]], item: type[T]
    ) -> tuple[list[T], bool, dict[str, Any]]:
        """One page: its items, whether another follows, and the whole answer."""
        data = self._get(path, params)
        pagination = data.get("pagination")
        try:
            items = TypeAdapter(list[item]).validate_python(data.get("data"))  # type: ignore[valid-type]
        except ValidationError as exc:
            what = f"a row does not read as {item.__name__} ({exc.error_count()} errors)"
            raise self._bad_answer(path, what) from None
        more = bool(pagination.get("has_more")) if isinstance(pagination, Mapping) else False
        return items, more, data

    def _get(
        self, path: str, params: Sequence[tuple[str, str | int | float | bool | None]]
    ) -> dict[str, Any]:
        """One logical GET: tries (each waiting for the rate limit) until a 2xx, a final error, or
        retries run out; 429 and 5xx are retried with the policy's backoff."""
        rid = new_client_request_id()
        headers = {**self._headers, "X-Client-Request-Id": rid}
        url = f"{self.root_url}{path}"
        query: list[tuple[str, str | int | float | bool | None]] = list(params)
        call = CallTries()
        retries_taken = 0
        while True:
            self.limiter.acquire()
            response: httpx.Response | None = None
            try:
                response = self._http.get(url, params=query, headers=headers, timeout=self._timeout)
                if response.is_success:
                    data = self._json(response, rid)
                    if not isinstance(data, dict):
                        raise self._invalid(response, rid, f"{path} answered no object", response.content)
                    return data
            except httpx.TransportError as exc:
                delay = self._next_try(call, rid, url, retries_taken, response, exc)
            else:
                delay = self._next_try(call, rid, url, retries_taken, response)
            self.retry.sleep(delay)
            retries_taken += 1

    def _bad_answer(self, path: str, what: str) -> InvalidResponseError:
        return InvalidResponseError(self._redact(f"{self.root_url}{path}: {what}"))

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> RecordsClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _log_filters(model: Sequence[str], status: Sequence[str]) -> list[tuple[str, str]]:
    models = [model] if isinstance(model, str) else list(model)
    statuses = [status] if isinstance(status, str) else list(status)
    if len(models) > MAX_MODELS:
        raise InvalidRequestError(f"at most {MAX_MODELS} models per logs query, not {len(models)}")
    for name in models:
        if not name or "," in name:
            raise InvalidRequestError(f"model={name!r}: one model per value (a comma list matches nothing)")
    for value in statuses:
        if value not in STATUSES:
            raise InvalidRequestError(f"status={value!r}: one of {', '.join(sorted(STATUSES))}")
    return [("model", m) for m in models] + [("status", s) for s in statuses]
