"""What a chat completion answers once admitted: a fault's failure, or the generated answer shaped.

``decide`` returns either a failure response (a fault's) or a ``Planned`` answer: the response to
send and the ``Charge`` to record when it is sent. Shaping faults change the answer (``length``,
bad or schema-breaking arguments), reporting faults change what is reported of it (``no_usage``,
``cut_stream``, ``cut_after_finish``) and are billed all the same; ``stream_error`` is not billed.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from airflow_provider_qwen.testing import answers, streaming
from airflow_provider_qwen.testing.faults import Fault
from airflow_provider_qwen.testing.responses import (
    BodyResponse,
    DroppedResponse,
    MalformedResponse,
    echo_error,
    error_response,
    html_page,
    proxy_page,
    reason_phrase,
)
from airflow_provider_qwen.testing.state import Charge, EmulatorState, LoggedRequest

SHAPING_FAULTS = frozenset({"bad_json_args", "schema_invalid_args", "unknown_tool", "length"})
CUT_FAULTS = frozenset({"cut_stream", "cut_after_finish"})
MESSAGES = {
    401: "Unauthorized: a valid API key is required (Authorization: Bearer <key>)",
    403: "Insufficient credits: top up your balance to continue",
    429: "Too many requests: rate limit reached, retry later",
    500: "Internal server error",
    502: "Bad gateway: the upstream provider failed",
    503: "Service unavailable",
    504: "Generation timed out",
}


class Planned(NamedTuple):
    """A generated answer: the response to send and the charge to record when it is sent."""

    response: BodyResponse
    charge: Charge | None


def fault_response(fault: Fault, entry: LoggedRequest, raw_headers: list[tuple[str, str]]) -> Any:
    """The answer a failure fault gives instead of the real one (None for the other faults)."""
    inference_id = entry.inference_id or ""
    if fault.kind == "status":
        status = fault.status or 500
        headers: dict[str, str] = {}
        if fault.retry_after is not None:
            headers["retry-after"] = f"{fault.retry_after:g}"
        if fault.retry_after_ms is not None:
            headers["retry-after-ms"] = f"{fault.retry_after_ms:g}"
        if fault.should_retry is not None:
            headers["x-should-retry"] = str(fault.should_retry).lower()
        message = MESSAGES.get(status) or reason_phrase(status)
        return error_response(status, message, entry.path, inference_id, headers)
    if fault.kind == "html":
        return html_page(fault.status or 502, inference_id)
    if fault.kind == "drop":
        return DroppedResponse()
    if fault.kind == "malformed_http":
        return MalformedResponse(raw_headers)
    if fault.kind == "echo_headers":
        return echo_error(fault.status or 400, raw_headers, entry.path, inference_id)
    if fault.kind == "proxy_echo":
        return proxy_page(fault.status or 407, raw_headers)
    return None


def decide(
    state: EmulatorState,
    body: dict[str, Any],
    entry: LoggedRequest,
    faults: list[Fault],
    *,
    prompt_tokens: int,
    raw_headers: list[tuple[str, str]],
) -> Any:
    """The failure response a fault gives, else the generated answer (a ``Planned``)."""
    for fault in faults:
        if fault.kind == "stream_error" and not body.get("stream"):
            fault = Fault.server_error(fault.status or 500)  # no stream to break: fail whole
        response = fault_response(fault, entry, raw_headers)
        if response is not None:
            return response
    return answer(state, body, entry, faults, prompt_tokens=prompt_tokens)


def answer(
    state: EmulatorState,
    body: dict[str, Any],
    entry: LoggedRequest,
    faults: list[Fault],
    *,
    prompt_tokens: int,
) -> Planned:
    """Generate the answer, its charge (none if the stream is to fail) and its JSON or stream shape.

    The request's script (``entry.script``) gives the turn to play when it has one queued; it is
    taken here, after every refusal and failure fault, so only an answered request uses a turn.
    """
    kinds = {f.kind: f for f in faults}
    shaping = next((k for k in kinds if k in SHAPING_FAULTS), None)
    taken = state.scripts.take(entry.script)
    try:
        planned = answers.plan_answer(
            body, fault_kind=shaping, prompt_tokens=prompt_tokens, turn=taken[0] if taken else None
        )
    except Exception:
        if taken:
            state.scripts.give_back(entry.script, taken[0])  # refused (400): the turn stays queued
        raise
    entry.script_turn = taken[1] if taken else None
    entry.reply = assistant_message(planned)
    model = str(body["model"])
    credits, usd = answers.bill(model, planned, state.prices)
    stream = bool(body.get("stream"))
    charge = None
    if "stream_error" not in kinds:
        charge = Charge(
            inference_id=entry.inference_id or "",
            model=model,
            credits=credits,
            usd=usd,
            client_request_id=entry.client_request_id,
            prompt_tokens=planned.prompt_tokens,
            completion_tokens=planned.completion_tokens,
            reasoning_tokens=planned.reasoning_tokens,
            stream=stream,
            complete=not CUT_FAULTS & kinds.keys(),
        )
    shape = stream_response if stream else json_response
    return Planned(shape(state, body, entry, planned, (credits, usd), kinds), charge)


def _top_logprobs(body: Mapping[str, Any]) -> int | None:
    return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None


def _meta(cost: tuple[int, Decimal]) -> dict[str, Any]:
    return {"usage": {"credits_used": cost[0], "usd_spent": cost[1]}}


def stream_response(
    state: EmulatorState,
    body: Mapping[str, Any],
    entry: LoggedRequest,
    planned: answers.Answer,
    cost: tuple[int, Decimal],
    kinds: Mapping[str, Fault],
) -> BodyResponse:
    silent = "no_usage" in kinds
    items = streaming.chunks(
        planned,
        completion_id=f"chatcmpl-{uuid.uuid4()}",
        created=int(time.time()),
        model=str(body["model"]).split("/", 1)[-1],
        include_usage=bool((body.get("stream_options") or {}).get("include_usage")) and not silent,
        meta=None if silent else _meta(cost),
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
    elif "cut_after_finish" in kinds:
        finish = next(i for i, c in enumerate(items) if c["choices"] and c["choices"][0]["finish_reason"])
        cut_after = finish + 1
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


def assistant_message(planned: answers.Answer) -> dict[str, Any]:
    """The ``message`` of a non-streamed answer (also what the request log keeps as ``reply``)."""
    message: dict[str, Any] = {"role": "assistant", "content": planned.content, "refusal": None}
    if planned.reasoning is not None:
        message["reasoning_content"] = planned.reasoning
    if planned.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in planned.tool_calls
        ]
    return message


def json_response(
    state: EmulatorState,
    body: Mapping[str, Any],
    entry: LoggedRequest,
    planned: answers.Answer,
    cost: tuple[int, Decimal],
    kinds: Mapping[str, Fault],
) -> BodyResponse:
    top = _top_logprobs(body)
    choice = {
        "index": 0,
        "message": assistant_message(planned),
        "finish_reason": planned.finish_reason,
        "logprobs": None if top is None else answers.logprobs(planned.content, top),
    }
    document: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body["model"]).split("/", 1)[-1],
        "choices": [choice],
    }
    headers = {"content-type": "application/json", "x-inference-id": entry.inference_id or ""}
    if "no_usage" not in kinds:
        document.update(usage=planned.usage(), meta=_meta(cost))
        headers["x-aimlapi-credits-used"] = str(cost[0])
        headers["x-aimlapi-usd-spent"] = answers.usd_text(cost[1])
    data = streaming.wire_json(document)
    headers["content-length"] = str(len(data))
    if CUT_FAULTS & kinds.keys():  # two writes, so the connection closes after the first
        half = max(len(data) // 2, 1)
        return BodyResponse([data[:half], data[half:]], headers=headers, cut_after=1, on_done=state.leave)
    return BodyResponse([data], headers=headers, on_done=state.leave)
