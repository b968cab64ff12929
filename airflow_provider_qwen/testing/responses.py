"""Responses the emulator sends besides plain JSON: the error shape, HTML pages, cut and dropped answers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from http import HTTPStatus
from typing import Any

from starlette.responses import JSONResponse, Response


def error_body(status: int, message: str | list[str], path: str) -> dict[str, Any]:
    """The service's documented error shape."""
    return {
        "message": message,
        "path": path,
        "requestId": str(uuid.uuid4()),
        "statusCode": status,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }


def error_response(
    status: int,
    message: str | list[str],
    path: str,
    inference_id: str,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        error_body(status, message, path), status, headers={"x-inference-id": inference_id, **(headers or {})}
    )


def reason_phrase(status: int) -> str:
    """``Bad Gateway`` for 502; ``HTTP 599`` for a status without a standard phrase."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def html_page(status: int, inference_id: str) -> Response:
    """An nginx-style HTML error page, as a proxy in front of the service answers."""
    phrase = f"{status} {reason_phrase(status)}"
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{phrase}</title></head>\n<body><center><h1>{phrase}</h1>"
        "</center><hr><center>nginx</center></body></html>\n"
    )
    return Response(page, status, media_type="text/html", headers={"x-inference-id": inference_id})


async def close_connection(receive: Any) -> None:
    """Close the client's socket without (the rest of) an answer.

    ASGI has no message for this: the transport is reached through uvicorn's ``receive``, then we
    wait until uvicorn has seen the connection go, so it sends no 500 page of its own.
    """
    cycle = getattr(receive, "__self__", None)
    transport = getattr(cycle, "transport", None)
    if transport is None:
        raise RuntimeError("the drop/cut faults need uvicorn (no transport to close)")
    transport.close()
    for _ in range(1000):
        if getattr(cycle, "disconnected", True):
            return
        await asyncio.sleep(0.001)


class DroppedResponse:
    """No answer at all: the connection is closed."""

    status_code = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await close_connection(receive)


class BodyResponse:
    """Bytes sent in pieces, optionally paced, cut (connection closed) after ``cut_after`` pieces."""

    def __init__(
        self,
        parts: list[bytes],
        *,
        headers: dict[str, str],
        cut_after: int | None = None,
        delay: float = 0.0,
        on_done: Any = None,
    ) -> None:
        self.status_code = 200
        self.raw_headers = [(k.encode(), v.encode()) for k, v in headers.items()]
        self.parts, self.cut_after, self.delay, self.on_done = parts, cut_after, delay, on_done

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await send(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            for index, part in enumerate(self.parts):
                if self.cut_after is not None and index >= self.cut_after:
                    await close_connection(receive)
                    return
                if self.delay and index:
                    await asyncio.sleep(self.delay)
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if self.on_done is not None:
                self.on_done()
