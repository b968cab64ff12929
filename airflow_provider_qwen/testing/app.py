"""The emulator's ASGI app (Starlette): chat completions, models, billing, faults, the request log.

Everything runs on one asyncio loop: latency is ``asyncio.sleep``, so hundreds of requests wait
at once without a thread each. A request is logged first, then checked in the service's order:
key (401), ``X-Emulator-Fault`` and ``X-Emulator-Script`` syntax (400), model (404), body against
the schema and the conversation (400: ``conversation.py``, e.g. a tool result for no call), context
window (400: the prompt, counted with the Qwen vocabulary, plus the completion budget over the
model's window), random refusal (429 with probability ``random_429``: a flaky gateway in front of
the limits, so it counts against none of them), concurrency limit, requests- and tokens-per-window
limits (429, the same message for all, with no ``Retry-After`` unless ``concurrency_retry_after``
is set for the concurrency one or ``rate_retry_after`` for the rate ones), balance (403); then it
takes its fault and is answered (``replies.py``). A request holds its place under the concurrency
cap while it is generated: until its answer is ready (the latency has passed), a stream until its
last chunk is sent, so no client ever holds an answer whose place the server still counts.

Charges: one per answer the service finished generating, recorded when the answer is made, so a
stream cut by a ``cut_stream`` fault or a client that timed out is charged (the service bills
finished generations); error answers, dropped connections and ``stream_error`` streams are not.
Every chat completion with a valid key also gets a row in the charge log (``state.charge_log()``),
failed ones at cost 0, as the service's own records have it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from airflow_provider_qwen.testing import limits, template, vocabulary
from airflow_provider_qwen.testing.conversation import conversation_errors
from airflow_provider_qwen.testing.faults import HEADER, Fault, parse_fault_header
from airflow_provider_qwen.testing.replies import MESSAGES, Planned, decide, fault_response
from airflow_provider_qwen.testing.responses import error_response
from airflow_provider_qwen.testing.schema import request_errors
from airflow_provider_qwen.testing.scripts import SCRIPT_HEADER, check_script_id
from airflow_provider_qwen.testing.state import Charge, ChargeRecord, EmulatorState, LoggedRequest
from airflow_provider_qwen.testing.values import UnsupportedSchema

CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
BIG_PROMPT_CHARS = 200_000  # a prompt this long is counted in a thread, off the event loop
_MESSAGES = MESSAGES


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


def _raw_headers(request: Request) -> list[tuple[str, str]]:
    """The request's headers as sent, names lower-case, values unredacted (for the echo faults)."""
    return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw]


async def _count_prompt(body: Mapping[str, Any]) -> int:
    await vocabulary.ready()
    if template.prompt_chars(body) > BIG_PROMPT_CHARS:
        return await asyncio.to_thread(template.prompt_tokens, body)
    return template.prompt_tokens(body)


async def chat_completions(request: Request) -> Any:
    started = time.monotonic()
    state = _state(request)
    entry = await _logged(request)
    inference_id = entry.inference_id or ""
    authorized = state.authorized(request.headers.get("authorization"))
    counted = 0

    def finish(response: Any, charge: Charge | None = None, *, failed: bool = True) -> Any:
        _answered(entry, response)
        if authorized:
            body = entry.body if isinstance(entry.body, Mapping) else {}
            model = body.get("model")
            state.record(
                ChargeRecord(
                    time=entry.time,
                    model=model if isinstance(model, str) else "",
                    client_request_id=entry.client_request_id,
                    inference_id=inference_id,
                    status=entry.status,
                    prompt_tokens=charge.prompt_tokens if charge else counted,
                    completion_tokens=charge.completion_tokens if charge else 0,
                    credits=charge.credits if charge else 0,
                    usd=charge.usd if charge else Decimal(0),
                    stream=bool(body.get("stream")),
                    complete=charge.complete if charge else not failed,
                    failed=charge is None and failed,
                )
            )
        return response

    def fail(status: int, message: str | list[str], headers: Mapping[str, str] | None = None) -> Any:
        return finish(error_response(status, message, entry.path, inference_id, headers))

    if not authorized:
        return fail(401, _MESSAGES[401])
    faults: list[Fault] | None = None
    if HEADER in request.headers:
        try:
            faults = parse_fault_header(request.headers[HEADER])
        except ValueError as exc:
            return fail(400, [str(exc)])
    if SCRIPT_HEADER in request.headers:
        try:
            entry.script = check_script_id(request.headers[SCRIPT_HEADER])
        except ValueError as exc:
            return fail(400, [f"X-Emulator-Script: {exc}"])
    body = entry.body
    if isinstance(body, str):
        return fail(400, ["<body>: the request body is not valid JSON"])
    if not isinstance(body, dict):
        return fail(400, ["<body>: the request body must be a JSON object"])
    model = body.get("model")
    if isinstance(model, str) and not state.knows(model):
        return fail(404, f"Model {model!r} not found")
    problems = request_errors(body, allow_unknown=not state.strict)
    problems += conversation_errors(body, strict=state.strict)
    if problems:
        return fail(400, problems)
    counted = await _count_prompt(body)
    window = limits.context_window(str(model), state.context_windows)
    too_long = limits.window_error(str(model), counted, limits.completion_budget(body), window)
    if too_long:
        return fail(400, too_long)
    if state.refusals.refuse():
        return fail(429, _MESSAGES[429])
    if state.max_concurrency is not None and state.generating >= state.max_concurrency:
        wait = state.concurrency_retry_after
        return fail(429, _MESSAGES[429], None if wait is None else {"retry-after": f"{wait:g}"})
    if not state.rates.admit(counted, rpm=state.rpm, tpm=state.tpm):
        return fail(429, _MESSAGES[429], state.rate_limit_headers(counted))
    if state.balance() <= 0:
        return fail(403, _MESSAGES[403])
    if faults is None:
        queued = state.next_fault(chat=True)
        faults = [queued] if queued else []
    entry.fault = ",".join(f.kind for f in faults) or None
    # The answer is decided on receipt and delivered when the latency has passed, so the latency
    # is the service's whole time from receipt: the emulator's own work does not add to it.
    try:
        decided = decide(state, body, entry, faults, prompt_tokens=counted, raw_headers=_raw_headers(request))
    except UnsupportedSchema as exc:
        return fail(400, [str(exc)])
    if isinstance(decided, Planned) and decided.charge is not None:
        state.rates.add_tokens(decided.charge.completion_tokens)
    state.enter()
    handed_over = False
    try:
        delay = state.latency + sum(f.delay for f in faults) - (time.monotonic() - started)
        if delay > 0:
            await asyncio.sleep(delay)
        if not isinstance(decided, Planned):
            return finish(decided)  # the failure a fault gives
        if decided.charge is not None:
            state.charge(decided.charge)
        handed_over = True
        response = finish(decided.response, decided.charge)
        if entry.stream:
            return _ThenCall(response, state.generated)  # a stream is generated until its last chunk
        state.generated()  # the answer is ready: its place under the cap is free before it is sent
        return response
    finally:
        if not handed_over:
            state.leave()
            state.generated()


class _ThenCall:
    """An ASGI response that calls ``done`` once it has been sent (or failed to be)."""

    def __init__(self, response: Any, done: Any) -> None:
        self.response, self.done = response, done
        self.status_code = getattr(response, "status_code", None)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await self.response(scope, receive, send)
        finally:
            self.done()


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
        response = fault_response(fault, entry, _raw_headers(request))
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
    from airflow_provider_qwen.testing.control import control_routes  # /_emulator/scripts, requests
    from airflow_provider_qwen.testing.records import records_routes  # /v2/logs, ledger, usage

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/models", models, methods=["GET"]),
            Route("/v2/billing", billing, methods=["GET"]),
            *records_routes(),
            *control_routes(),
        ],
        exception_handlers={404: _unknown_path, 405: _unknown_path},
    )
    app.state.emulator = state
    return app
