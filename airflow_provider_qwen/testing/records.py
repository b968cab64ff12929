"""The emulator's records endpoints, served from its own request log and charges.

- ``GET /v2/logs``: one row per chat request (failed ones at cost 0), newest first, ``limit`` /
  ``offset`` paging, ``model`` / ``status`` filters (repeated, never comma-split).
- ``GET /v2/billing/transactions``: one ``CHARGE`` / ``MODEL_USAGE`` entry per charge,
  ``reference_id`` = inference id, newest first, an opaque cursor accepted only as issued.
- ``GET /v2/usage``: the spend and charged requests of the window.

Windows as the service has them: ``period`` (``24h``, ``7d``) or ``start`` + ``end``, never both,
at most 92 days; more than 200 calls to these routes in 60 seconds answer 429 with no
``Retry-After``. Amounts are the emulator's own charges (its own arithmetic: nothing here imports
the client's money code). Every read of the emulator's money is in ``service_rows``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from airflow_provider_qwen.testing.billing import usd_for
from airflow_provider_qwen.testing.responses import error_response
from airflow_provider_qwen.testing.state import EmulatorState, LoggedRequest
from airflow_provider_qwen.testing.streaming import wire_json

LOGS, LEDGER, USAGE = "/v2/logs", "/v2/billing/transactions", "/v2/usage"
PATHS = (LOGS, LEDGER, USAGE)
RATE_LIMIT = 200  # calls to the records routes per RATE_PERIOD seconds
RATE_PERIOD = 60.0
MAX_WINDOW = timedelta(days=92)
PERIOD = re.compile(r"^([1-9][0-9]*)([hd])$")
DIRECTIONS = ("TOPUP", "CHARGE")
TYPES = ("PAYMENT", "BONUS", "REFUND", "ADJUSTMENT", "MODEL_USAGE", "CREDITS_EXPIRED", "INIT")
LEDGER_PARAMS = frozenset({"from", "to", "direction", "type", "limit", "cursor"})


class Refused(Exception):
    """A request the service refuses: its status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ServiceRow:
    """One request as the service's records show it, with what it was charged (0 if nothing)."""

    time: float  # when the request was made (epoch seconds)
    charged_at: float | None  # when its charge was recorded; None: failed, nothing billed
    model: str
    credits: int
    prompt_tokens: int
    completion_tokens: int
    inference_id: str
    client_request_id: str | None

    @property
    def usd(self) -> Decimal:
        return usd_for(self.credits)


def service_rows(state: EmulatorState) -> list[ServiceRow]:
    """Every chat completion the account made, from the state's charge log (failed ones at 0); a
    charge's ledger time is when the emulator recorded it (``charges``), else the request's."""
    charged_at = {charge.inference_id: charge.time for charge in state.charges}
    return [
        ServiceRow(
            time=row.time,
            charged_at=None if row.failed else charged_at.get(row.inference_id, row.time),
            model=row.model,
            credits=row.credits,
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            inference_id=row.inference_id,
            client_request_id=row.client_request_id,
        )
        for row in state.charge_log()
    ]


def records_calls(state: EmulatorState, since: float) -> int:
    """Calls made to the records routes since ``since`` (epoch seconds), from the request log."""
    return sum(1 for entry in state.requests if entry.path in PATHS and entry.time >= since)


# -- parameters -------------------------------------------------------------------------------------


def iso(when: float) -> str:
    stamp = datetime.fromtimestamp(when, timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _date(name: str, value: str, *, offset_required: bool = False) -> datetime:
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise Refused(400, f"{name}={value!r} is not an ISO-8601 date") from None
    if when.tzinfo is None:
        if offset_required:
            raise Refused(400, f"{name}={value!r} needs a UTC offset")
        when = when.replace(tzinfo=timezone.utc)
    return when


def window(request: Request) -> tuple[datetime, datetime]:
    """``period`` or ``start`` + ``end``: the window, or the service's 400."""
    query = request.query_params
    period, start, end = query.get("period"), query.get("start"), query.get("end")
    if period is not None and (start is not None or end is not None):
        raise Refused(400, "Provide either period or start and end, not both")
    now = datetime.now(timezone.utc)
    if period is not None:
        match = PERIOD.match(period)
        if not match:
            raise Refused(400, f"period={period!r}: a positive integer followed by h or d")
        amount = int(match.group(1))
        span = timedelta(hours=amount) if match.group(2) == "h" else timedelta(days=amount)
        first, last = now - span, now
    elif start is not None and end is not None:
        first, last = _date("start", start), _date("end", end)
    else:
        raise Refused(400, "Provide period, or both start and end")
    if last < first:
        raise Refused(400, "end must not be earlier than start")
    if last - first > MAX_WINDOW:
        raise Refused(400, "The window must not exceed 92 days")
    return first, last


def _int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise Refused(400, f"{name}={value!r} is not an integer") from None
    if number < low or (high is not None and number > high):
        raise Refused(400, f"{name}={number} must be {low}-{high}" if high else f"{name} must be >= {low}")
    return number


def _own_prefix(request: Request) -> str | None:
    """``key_prefix``: only the caller's own key here (the emulator has no management keys)."""
    prefix = request.query_params.get("key_prefix")
    if prefix is None:
        return None
    key = request.headers.get("authorization", "").partition(" ")[2].strip()
    if not key.startswith(prefix):
        raise Refused(403, "A regular key cannot report on another key")
    return prefix


# -- endpoints --------------------------------------------------------------------------------------


def _log_rows(request: Request, state: EmulatorState) -> dict[str, Any]:
    first, last = window(request)
    _own_prefix(request)
    statuses = request.query_params.getlist("status")
    for status in statuses:
        if status not in ("succeeded", "failed"):
            raise Refused(400, f"status={status!r}: succeeded or failed")
    models = request.query_params.getlist("model")
    if len(models) > 50:
        raise Refused(400, "At most 50 model values")
    limit = _int_param(request, "limit", 50, 1, 100)
    offset = _int_param(request, "offset", 0, 0)
    rows = []
    for row in sorted(service_rows(state), key=lambda r: (r.time, r.inference_id), reverse=True):
        status = "succeeded" if row.charged_at is not None else "failed"
        created = datetime.fromtimestamp(row.time, timezone.utc)
        if not first <= created <= last or (statuses and status not in statuses):
            continue
        if models and row.model not in models and row.model.split("/", 1)[-1] not in models:
            continue
        rows.append(
            {
                "created": iso(row.time),
                "status": status,
                "origin": "api",
                "model": row.model,
                "cost": {"usd": row.usd, "credits": row.credits},
                "tokens": {
                    "input": row.prompt_tokens,
                    "output": row.completion_tokens,
                    "total": row.prompt_tokens + row.completion_tokens,
                },
                "request_id": f"req-{row.inference_id}",
                "inference_id": row.inference_id,
                "client_request_id": row.client_request_id,
            }
        )
    page = rows[offset : offset + limit]
    more = offset + len(page) < len(rows)
    return {
        "data": page,
        "pagination": {"limit": limit, "offset": offset, "total": len(rows), "has_more": more},
    }


def _cursor(position: tuple[float, str]) -> str:
    text = json.dumps({"v": 1, "t": position[0], "i": position[1]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _position(cursor: str) -> tuple[float, str]:
    """The position a cursor we issued names; anything else (re-encoded too) is a 400."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        position = (float(data["t"]), str(data["i"]))
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise Refused(400, "Malformed cursor") from None
    if _cursor(position) != cursor:
        raise Refused(400, "Malformed cursor: pass next_cursor back exactly as issued")
    return position


def _ledger(request: Request, state: EmulatorState) -> dict[str, Any]:
    query = request.query_params
    unknown = sorted(set(query) - LEDGER_PARAMS)
    if unknown:
        raise Refused(400, f"Unknown query parameter: {', '.join(unknown)}")
    start = _date("from", query["from"], offset_required=True) if "from" in query else None
    end = _date("to", query["to"], offset_required=True) if "to" in query else None
    if start is not None and end is not None and end <= start:
        raise Refused(400, "to must be later than from")
    direction, kind = query.get("direction"), query.get("type")
    if direction is not None and direction not in DIRECTIONS:
        raise Refused(400, f"direction={direction!r}: one of {', '.join(DIRECTIONS)}")
    if kind is not None and kind not in TYPES:
        raise Refused(400, f"type={kind!r}: one of {', '.join(TYPES)}")
    limit = _int_param(request, "limit", 50, 1, 100)
    after = _position(query["cursor"]) if "cursor" in query else None
    charged = [r for r in service_rows(state) if r.charged_at is not None]
    entries = []
    for row in sorted(charged, key=lambda r: (r.charged_at or 0.0, r.inference_id), reverse=True):
        position = (row.charged_at or 0.0, row.inference_id)
        created = datetime.fromtimestamp(position[0], timezone.utc)
        if (start is not None and created < start) or (end is not None and created >= end):
            continue
        if direction not in (None, "CHARGE") or kind not in (None, "MODEL_USAGE"):
            continue
        if after is not None and position >= after:
            continue
        entries.append((position, row))
    page = entries[:limit]
    more = len(entries) > limit
    data = [
        {
            "created_at": iso(position[0]),
            "direction": "CHARGE",
            "type": "MODEL_USAGE",
            "amount": {"usd": row.usd, "credits": row.credits},
            "model": row.model,
            "reference_id": row.inference_id,
        }
        for position, row in page
    ]
    next_cursor = _cursor(page[-1][0]) if more and page else None
    return {"data": data, "pagination": {"next_cursor": next_cursor, "has_more": more}}


def _usage(request: Request, state: EmulatorState) -> dict[str, Any]:
    if "group_by" in request.query_params:
        raise Refused(400, "group_by is accepted on /v2/usage/detail only")
    first, last = window(request)
    prefix = _own_prefix(request)
    charged = [
        r
        for r in service_rows(state)
        if r.charged_at is not None and first <= datetime.fromtimestamp(r.time, timezone.utc) <= last
    ]
    return {
        "api_key_prefix": prefix,
        "start": first.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "end": last.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "spend": sum((r.usd for r in charged), Decimal(0)),
        "currency": "USD",
        "requests": len(charged),
    }


ANSWERS = {LOGS: _log_rows, LEDGER: _ledger, USAGE: _usage}


async def records(request: Request) -> Response:
    """One records call: logged, then key (401), rate limit (429), parameters (400), answer."""
    state: EmulatorState = request.app.state.emulator
    path = request.url.path
    headers = dict(request.headers)
    if "authorization" in headers:
        headers["authorization"] = "Bearer ***"
    entry = LoggedRequest(
        method=request.method,
        path=path,
        query=request.url.query,
        headers=headers,
        body=None,
        time=time.time(),
    )
    state.log(entry)
    try:
        if not state.authorized(request.headers.get("authorization")):
            raise Refused(401, "Unauthorized: a valid API key is required (Authorization: Bearer <key>)")
        if records_calls(state, entry.time - RATE_PERIOD) > RATE_LIMIT:
            raise Refused(429, f"Too many requests: at most {RATE_LIMIT} per {RATE_PERIOD:g} seconds")
        body = ANSWERS[path](request, state)
    except Refused as refused:
        entry.status = refused.status
        return error_response(refused.status, refused.message, path, "")
    entry.status = 200
    return Response(wire_json(body), 200, media_type="application/json")


def records_routes() -> list[Route]:
    """The routes ``build_app`` adds."""
    return [Route(path, records, methods=["GET"]) for path in PATHS]
