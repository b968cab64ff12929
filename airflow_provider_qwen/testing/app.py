"""The emulator's ASGI app (Starlette): chat completions, models, billing, faults, the request log.

Everything runs on one asyncio loop: latency is ``asyncio.sleep``, so hundreds of requests wait
at once without a thread each. A request is logged first, then checked in the service's order:
key (401), ``X-Emulator-Fault`` syntax (400), model (404), body against the schema (400),
concurrency limit (429 with ``Retry-After``), balance (403); then it takes its fault and is answered.

Charges: one per answer the service finished generating, recorded when the answer is made, so a
stream cut by a ``cut_stream`` fault or a client that timed out is charged (the service bills
finished generations); error answers, dropped connections and ``stream_error`` streams are not.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_qwen.testing import answers, streaming
from airflow_provider_qwen.testing.faults import HEADER, Fault, parse_fault_header
from airflow_provider_qwen.testing.responses import (
    BodyResponse,
    DroppedResponse,
    error_response,
    html_page,
    reason_phrase,
)
from airflow_provider_qwen.testing.schema import request_errors
from airflow_provider_qwen.testing.state import Charge, EmulatorState, LoggedRequest
from airflow_provider_qwen.testing.values import UnsupportedSchema

CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SHAPING_FAULTS = frozenset({"bad_json_args", "schema_invalid_args", "length"})
_MESSAGES = {
    401: "Unauthorized: a valid API key is required (Authorization: Bearer <key>)",
    403: "Insufficient credits: top up your balance to continue",
    429: "Too many requests: rate limit reached, retry later",
    500: "Internal server error",
    502: "Bad gateway: the upstream provider failed",
    503: "Service unavailable",
    504: "Generation timed out",
}


# -- endpoints ------------------------------------------------------------------------------------


def _state(request: Request) -> EmulatorState:
    return request.app.state.emulator


async def _logged(request: Request) -> LoggedRequest:
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    headers = dict(request.headers)
    if "authorization" in headers:
        scheme = headers["authorization"].partition(" ")[0]
        headers["authorization"] = f"{scheme} ***" if scheme.lower() == "bearer" else "***"
    crid = request.headers.get("x-client-request-id")
    entry = LoggedRequest(
        method=request.method,
        path=request.url.path,
        query=request.url.query,
        headers=headers,
        body=body,
        time=time.time(),
        client_request_id=crid if crid and CLIENT_REQUEST_ID.match(crid) else None,
        inference_id=str(uuid.uuid4()),
        peer=f"{request.client.host}:{request.client.port}" if request.client else None,
    )
    if raw and body is None:
        entry.body = raw.decode("utf-8", errors="replace")  # kept as text: the test sees what came
    _state(request).log(entry)
    return entry


def _answered(entry: LoggedRequest, response: Any) -> Any:
    entry.status = response.status_code or None
    return response


def _fault_response(fault: Fault, entry: LoggedRequest) -> Any:
    """The answer a failure fault gives instead of the real one (None for shaping/latency faults)."""
    assert entry.inference_id is not None
    if fault.kind == "status":
        status = fault.status or 500
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        if fault.should_retry is not None:
            headers["x-should-retry"] = str(fault.should_retry).lower()
        message = _MESSAGES.get(status) or reason_phrase(status)
        return error_response(status, message, entry.path, entry.inference_id, headers)
    if fault.kind == "html":
        return html_page(fault.status or 502, entry.inference_id)
    if fault.kind == "drop":
        return DroppedResponse()
    return None


async def chat_completions(request: Request) -> Any:
    started = time.monotonic()
    state = _state(request)
    entry = await _logged(request)
    inference_id = entry.inference_id or ""

    def fail(status: int, message: str | list[str], headers: Mapping[str, str] | None = None) -> Any:
        return _answered(entry, error_response(status, message, entry.path, inference_id, headers))

    if not state.authorized(request.headers.get("authorization")):
        return fail(401, _MESSAGES[401])
    faults: list[Fault] | None = None
    if HEADER in request.headers:
        try:
            faults = parse_fault_header(request.headers[HEADER])
        except ValueError as exc:
            return fail(400, [str(exc)])
    body = entry.body
    if isinstance(body, str):
        return fail(400, ["<body>: the request body is not valid JSON"])
    if not isinstance(body, dict):
        return fail(400, ["<body>: the request body must be a JSON object"])
    model = body.get("model")
    if isinstance(model, str) and not state.knows(model):
        return fail(404, f"Model {model!r} not found")
    problems = request_errors(body, allow_unknown=not state.strict)
    if problems:
        return fail(400, problems)
    if state.max_concurrency is not None and state.in_flight >= state.max_concurrency:
        return fail(
            429, f"Too many concurrent requests: at most {state.max_concurrency}", {"retry-after": "1"}
        )
    if state.balance() <= 0:
        return fail(403, _MESSAGES[403])
    if faults is None:
        queued = state.next_fault(chat=True)
        faults = [queued] if queued else []
    entry.fault = ",".join(f.kind for f in faults) or None
    # The answer is decided on receipt and delivered when the latency has passed, so the latency
    # is the service's whole time from receipt: the emulator's own work does not add to it.
    try:
        decided = _decide(state, body, entry, faults)
    except UnsupportedSchema as exc:
        return fail(400, [str(exc)])
    state.enter()
    handed_over = False
    try:
        delay = state.latency + sum(f.delay for f in faults) - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        if not isinstance(decided, _Planned):
            return _answered(entry, decided)  # the failure a fault gives
        if decided.charge is not None:
            state.charge(decided.charge)
        handed_over = True
        return _answered(entry, decided.response)
    finally:
        if not handed_over:
            state.leave()


class _Planned(NamedTuple):
    """A generated answer: the response to send and the charge to record when it is sent."""

    response: BodyResponse
    charge: Charge | None


def _decide(state: EmulatorState, body: dict[str, Any], entry: LoggedRequest, faults: list[Fault]) -> Any:
    """The failure response a fault gives, else the generated answer (a ``_Planned``)."""
    for fault in faults:
        if fault.kind == "stream_error" and not body.get("stream"):
            fault = Fault.server_error(fault.status or 500)  # no stream to break: fail whole
        response = _fault_response(fault, entry)
        if response is not None:
            return response
    return _answer(state, body, entry, faults)


def _answer(
    state: EmulatorState, body: dict[str, Any], entry: LoggedRequest, faults: list[Fault]
) -> _Planned:
    """Generate the answer, its charge (none if the stream is to fail) and its JSON or stream shape."""
    kinds = {f.kind: f for f in faults}
    answer = answers.plan_answer(body, fault_kind=next((k for k in kinds if k in SHAPING_FAULTS), None))
    model = str(body["model"])
    credits, usd = answers.bill(model, answer, state.prices)
    stream = bool(body.get("stream"))
    charge = None
    if "stream_error" not in kinds:
        charge = Charge(
            inference_id=entry.inference_id or "",
            model=model,
            credits=credits,
            usd=usd,
            client_request_id=entry.client_request_id,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            reasoning_tokens=answer.reasoning_tokens,
            stream=stream,
            complete="cut_stream" not in kinds,
        )
    shape = _stream_response if stream else _json_response
    return _Planned(shape(state, body, entry, answer, (credits, usd), kinds), charge)


def _top_logprobs(body: Mapping[str, Any]) -> int | None:
    return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None


def _stream_response(
    state: EmulatorState,
    body: Mapping[str, Any],
    entry: LoggedRequest,
    answer: answers.Answer,
    cost: tuple[int, Decimal],
    kinds: Mapping[str, Fault],
) -> BodyResponse:
    items = streaming.chunks(
        answer,
        completion_id=f"chatcmpl-{uuid.uuid4()}",
        created=int(time.time()),
        model=str(body["model"]).split("/", 1)[-1],
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        meta={"usage": {"credits_used": cost[0], "usd_spent": cost[1]}},
        top_logprobs=_top_logprobs(body),
    )
    parts = list(streaming.events(items))
    cut_after = None
    if "stream_error" in kinds:
        keep = min(kinds["stream_error"].after_chunks or 0, len(items))
        error = {"message": "The upstream provider failed mid-stream", "type": "server_error", "code": 500}
        parts = [*parts[:keep], streaming.sse({"error": error})]
    elif "cut_stream" in kinds:
        after = kinds["cut_stream"].after_chunks
        cut_after = min(3 if after is None else after, len(items))
    return BodyResponse(
        parts,
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            "x-inference-id": entry.inference_id or "",
        },
        cut_after=cut_after,
        delay=max(f.chunk_delay for f in kinds.values()) if kinds else 0.0,
        on_done=state.leave,
    )


def _json_response(
    state: EmulatorState,
    body: Mapping[str, Any],
    entry: LoggedRequest,
    answer: answers.Answer,
    cost: tuple[int, Decimal],
    kinds: Mapping[str, Fault],
) -> BodyResponse:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content, "refusal": None}
    if answer.reasoning is not None:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    top = _top_logprobs(body)
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": answer.finish_reason,
        "logprobs": None if top is None else answers.logprobs(answer.content, top),
    }
    data = streaming.wire_json(
        {
            "id": f"chatcmpl-{uuid.uuid4()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": str(body["model"]).split("/", 1)[-1],
            "choices": [choice],
            "usage": answer.usage(),
            "meta": {"usage": {"credits_used": cost[0], "usd_spent": cost[1]}},
        }
    )
    headers = {
        "content-type": "application/json",
        "x-inference-id": entry.inference_id or "",
        "x-aimlapi-credits-used": str(cost[0]),
        "x-aimlapi-usd-spent": answers.usd_text(cost[1]),
        "content-length": str(len(data)),
    }
    if "cut_stream" in kinds:  # two writes, so the connection closes after the first
        half = max(len(data) // 2, 1)
        return BodyResponse([data[:half], data[half:]], headers=headers, cut_after=1, on_done=state.leave)
    return BodyResponse([data], headers=headers, on_done=state.leave)


async def _side_fault(request: Request, state: EmulatorState, entry: LoggedRequest) -> Any:
    """A models/billing call's faults (header, else a queued ``scope="any"``): the failure or None."""
    try:
        faults = parse_fault_header(request.headers[HEADER]) if HEADER in request.headers else None
    except ValueError as exc:
        return _answered(entry, error_response(400, [str(exc)], entry.path, entry.inference_id or ""))
    if faults is None:
        queued = state.next_fault(chat=False)
        faults = [queued] if queued else []
    entry.fault = ",".join(f.kind for f in faults) or None
    await asyncio.sleep(sum(f.delay for f in faults))
    for fault in faults:
        response = _fault_response(fault, entry)
        if response is not None:
            return _answered(entry, response)
    return None


async def models(request: Request) -> Any:
    """``GET /v1/models`` (no key needed); ``?include=pricing`` adds prices, ``?id=`` filters."""
    state = _state(request)
    entry = await _logged(request)
    failure = await _side_fault(request, state, entry)
    if failure is not None:
        return failure
    wanted = request.query_params.get("id")
    pricing = "pricing" in ",".join(request.query_params.getlist("include")).split(",")
    data = []
    for model_id, price in sorted(state.prices.as_dict().items()):
        if wanted and wanted not in {model_id, model_id.split("/", 1)[-1]}:
            continue
        item: dict[str, Any] = {"id": model_id, "object": "model", "type": "chat-completion"}
        if pricing:
            item["pricing"] = {
                kind: {"price": float(value), "per": 1_000_000} for kind, value in price.items()
            }
        data.append(item)
    return _answered(
        entry,
        JSONResponse({"object": "list", "data": data}, headers={"x-inference-id": entry.inference_id or ""}),
    )


async def billing(request: Request) -> Any:
    """``GET /v2/billing``: the balance left (start balance minus charges); 401 without a valid key."""
    state = _state(request)
    entry = await _logged(request)
    if not state.authorized(request.headers.get("authorization")):
        return _answered(entry, error_response(401, _MESSAGES[401], entry.path, entry.inference_id or ""))
    failure = await _side_fault(request, state, entry)
    if failure is not None:
        return failure
    body = {"current_balance": float(state.balance()), "currency": "USD"}
    return _answered(entry, JSONResponse(body, headers={"x-inference-id": entry.inference_id or ""}))


async def _unknown_path(request: Request, exc: Exception) -> Response:
    entry = await _logged(request)
    status = getattr(exc, "status_code", 404)
    message = f"Cannot {request.method} {request.url.path}"
    return _answered(entry, error_response(status, message, entry.path, entry.inference_id or ""))


def build_app(state: EmulatorState) -> Starlette:
    """The ASGI app serving one emulator ``state``."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/v2/billing", billing, methods=["GET"]),
        ],
        exception_handlers={404: _unknown_path, 405: _unknown_path},
    )
    app.state.emulator = state
    return app
