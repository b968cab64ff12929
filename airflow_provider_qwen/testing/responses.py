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


# -- responses that leak the request's secrets (faults for the secret-leak tests) ------------------


def quoted_headers(headers: list[tuple[str, str]]) -> str:
    """``Name: value`` of every request header, values as sent (the API key included)."""
    return "; ".join(f"{name}: {value}" for name, value in headers)


def echo_error(status: int, headers: list[tuple[str, str]], path: str, inference_id: str) -> JSONResponse:
    """An error in the service's shape whose message quotes every request header."""
    message = f"Invalid request headers: {quoted_headers(headers)}"
    return error_response(status, message, path, inference_id)


def proxy_page(status: int, headers: list[tuple[str, str]]) -> Response:
    """A proxy's HTML error page (407: authentication required) quoting the request it refused."""
    phrase = f"{status} {reason_phrase(status)}"
    quoted = "\n".join(f"{name}: {value}" for name, value in headers)
    page = (
        f"<!DOCTYPE html>\n<html><head><title>{phrase}</title></head>\n<body><h1>{phrase}</h1>\n"
        f"<p>The proxy refused this request:</p>\n<pre>\n{quoted}\n</pre>\n<hr>squid</body></html>\n"
    )
    extra = {"proxy-authenticate": 'Basic realm="proxy"'} if status == 407 else {}
    return Response(page, status, media_type="text/html", headers=extra)


class MalformedResponse:
    """Bytes that are not HTTP: a garbage status line and header lines echoing the request's headers."""

    status_code = 0

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers

    def raw(self) -> bytes:
        echoed = "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        line = f"HTTP/1.1 2OO ECHO {quoted_headers(self.headers)}\r\n"
        return (line + echoed + "\r\n").encode("utf-8", errors="replace")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        cycle = getattr(receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise RuntimeError("the malformed_http fault needs uvicorn (no transport to write to)")
        transport.write(self.raw())
        await close_connection(receive)
