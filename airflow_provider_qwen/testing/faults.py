"""Faults the emulator injects: queued per instance (``QwenEmulator.add_faults``) or per request.

A request picks its faults from the ``X-Emulator-Fault`` header when present (several separated by
commas, all applied to that request), otherwise the next queued fault, in order. The header form is
``<kind>[;key=value...]``, e.g. ``status;status=503;retry_after=0.1`` or ``cut_stream;after_chunks=2``
(``Fault.header_value()`` writes it).

Kinds: ``latency`` (wait ``delay`` s, then answer), ``status`` (an error answer in the service's
shape, optional ``Retry-After`` / ``retry-after-ms`` / ``x-should-retry``), ``html`` (an HTML error
page, as a proxy sends), ``drop`` (close the connection without any answer), ``cut_stream`` (close
after ``after_chunks`` stream events; a non-streamed body is cut in half), ``stream_error`` (a chunk
with an ``error`` key after ``after_chunks`` events; a 500 for a non-streamed request),
``bad_json_args`` (tool-call arguments that are not JSON), ``schema_invalid_args`` (JSON arguments
that break the tool's schema), ``unknown_tool`` (the call names a function that was not offered),
``length`` (the answer cut short with ``finish_reason: "length"``). The three tool-call faults
apply to every call of the answer, agent calls and scripted ones too (``agent_play.py``,
``scripts.py``).
``delay`` applies to every kind; ``chunk_delay`` paces stream events.

Faults that break the reporting, not the answer (the answer is generated and billed as usual):
``no_usage`` (a 200 without ``usage``, ``meta.usage`` or cost headers; streamed: no usage chunk
and no ``meta`` though ``include_usage`` was asked), ``cut_after_finish`` (the stream closes right
after the chunk with ``finish_reason``, before its usage chunk; a non-streamed body is cut in half).

Faults that leak the request's secrets back, for the tests that a client never shows them:
``malformed_http`` (the server writes a broken HTTP response whose garbage status line and
headers echo every request header, ``Authorization: Bearer <key>`` included, then closes),
``echo_headers`` (an error answer, 400 unless ``status`` says otherwise, in the service's JSON
error shape whose ``message`` quotes every request header, the key included), ``proxy_echo`` (a
407 HTML page quoting the request headers, as a misconfigured proxy sends). None is billed.

Models and billing calls take faults from their own ``X-Emulator-Fault`` header, or a queued fault
with ``scope="any"`` at the head of the queue (status, html, drop and latency apply there).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

FAULT_KINDS = (
    "latency",
    "status",
    "html",
    "drop",
    "cut_stream",
    "stream_error",
    "bad_json_args",
    "schema_invalid_args",
    "unknown_tool",
    "length",
    "no_usage",
    "cut_after_finish",
    "malformed_http",
    "echo_headers",
    "proxy_echo",
)
SCOPES = ("chat", "any")
HEADER = "x-emulator-fault"
_DEFAULT_STATUS = {"status": 500, "html": 502, "echo_headers": 400, "proxy_echo": 407}


@dataclass(frozen=True)
class Fault:
    """One scripted failure; ``scope``: taken by chat completions only (``"chat"``) or by any request."""

    kind: str
    status: int | None = None
    retry_after: float | None = None
    retry_after_ms: float | None = None
    should_retry: bool | None = None
    after_chunks: int | None = None
    delay: float = 0.0
    chunk_delay: float = 0.0
    scope: str = "chat"

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind {self.kind!r} is unknown; allowed: {', '.join(FAULT_KINDS)}")
        if self.scope not in SCOPES:
            raise ValueError(f"fault scope {self.scope!r} is unknown; allowed: {', '.join(SCOPES)}")
        if self.status is None and self.kind in _DEFAULT_STATUS:
            object.__setattr__(self, "status", _DEFAULT_STATUS[self.kind])
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError(f"fault status={self.status} must be an error status between 400 and 599")
        if self.after_chunks is not None and self.after_chunks < 0:
            raise ValueError(f"fault after_chunks={self.after_chunks} must be >= 0")
        for name in ("delay", "chunk_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"fault {name}={getattr(self, name)} must be >= 0")

    # -- helpers for the common cases ----------------------------------------------------------
    @classmethod
    def latency(cls, delay: float, *, chunk_delay: float = 0.0) -> Fault:
        """Answer normally after ``delay`` seconds (and ``chunk_delay`` between stream events)."""
        return cls("latency", delay=delay, chunk_delay=chunk_delay)

    @classmethod
    def rate_limited(cls, retry_after: float | None = None, *, retry_after_ms: float | None = None) -> Fault:
        """429 with no delay header, as the service; ``Retry-After`` / ``retry-after-ms`` if given."""
        return cls("status", status=429, retry_after=retry_after, retry_after_ms=retry_after_ms)

    @classmethod
    def server_error(cls, status: int = 500, *, retry_after: float | None = None) -> Fault:
        """A 5xx answer in the service's JSON error shape."""
        return cls("status", status=status, retry_after=retry_after)

    @classmethod
    def error(cls, status: int, **kwargs: Any) -> Fault:
        """Any error status (400/401/403/404/408/409/422/429/5xx) in the service's JSON error shape."""
        return cls("status", status=status, **kwargs)

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """An HTML error page, as a proxy in front of the service sends."""
        return cls("html", status=status)

    @classmethod
    def drop(cls, *, delay: float = 0.0) -> Fault:
        """Close the connection without sending any answer."""
        return cls("drop", delay=delay)

    @classmethod
    def cut(cls, after_chunks: int = 3) -> Fault:
        """Close a stream after ``after_chunks`` events (charged: generation had finished)."""
        return cls("cut_stream", after_chunks=after_chunks)

    @classmethod
    def stream_error(cls, after_chunks: int = 1) -> Fault:
        """Send a chunk with an ``error`` key after ``after_chunks`` events, then end the stream."""
        return cls("stream_error", after_chunks=after_chunks)

    @classmethod
    def bad_json_args(cls) -> Fault:
        """Tool-call arguments that are not valid JSON."""
        return cls("bad_json_args")

    @classmethod
    def schema_invalid_args(cls) -> Fault:
        """Tool-call arguments that are JSON but break the tool's parameters schema."""
        return cls("schema_invalid_args")

    @classmethod
    def unknown_tool(cls) -> Fault:
        """Tool calls that name a function the request did not offer (``<name>_unoffered``)."""
        return cls("unknown_tool")

    @classmethod
    def length(cls) -> Fault:
        """The answer cut short, ``finish_reason: "length"``."""
        return cls("length")

    @classmethod
    def no_usage(cls) -> Fault:
        """A normal (billed) answer that reports no usage and no cost, streamed or not."""
        return cls("no_usage")

    @classmethod
    def cut_after_finish(cls) -> Fault:
        """A stream closed right after its ``finish_reason`` chunk, before the usage chunk (billed)."""
        return cls("cut_after_finish")

    @classmethod
    def malformed_http(cls) -> Fault:
        """Broken HTTP bytes that echo the request's headers (the API key included), then a close."""
        return cls("malformed_http")

    @classmethod
    def echo_headers(cls, status: int = 400) -> Fault:
        """An error in the service's JSON shape whose message quotes every request header."""
        return cls("echo_headers", status=status)

    @classmethod
    def proxy_echo(cls, status: int = 407) -> Fault:
        """A proxy's HTML error page (407 by default) quoting the request headers."""
        return cls("proxy_echo", status=status)

    def header_value(self) -> str:
        """This fault in ``X-Emulator-Fault`` form."""
        parts = [self.kind]
        for spec in fields(self):
            if spec.name in {"kind", "scope"}:
                continue
            value = getattr(self, spec.name)
            if value is not None and value != spec.default:
                parts.append(f"{spec.name}={str(value).lower() if isinstance(value, bool) else value}")
        return ";".join(parts)


_CONVERTERS: dict[str, Any] = {
    "status": int,
    "retry_after": float,
    "retry_after_ms": float,
    "after_chunks": int,
    "delay": float,
    "chunk_delay": float,
}


def _boolean(value: str) -> bool:
    if value.lower() in {"true", "1", "yes"}:
        return True
    if value.lower() in {"false", "0", "no"}:
        return False
    raise ValueError(f"{value!r} is not a boolean (true/false)")


def parse_fault_header(value: str) -> list[Fault]:
    """``X-Emulator-Fault`` -> faults; ValueError naming the bad part."""
    faults = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        kind, *options = [p.strip() for p in item.split(";") if p.strip()]
        kwargs: dict[str, Any] = {}
        for option in options:
            key, sep, raw = option.partition("=")
            key = key.strip()
            if not sep or key not in {*_CONVERTERS, "should_retry"}:
                allowed = ", ".join([*_CONVERTERS, "should_retry"])
                raise ValueError(
                    f"X-Emulator-Fault option {option!r} is not key=value with key in: {allowed}"
                )
            convert = _boolean if key == "should_retry" else _CONVERTERS[key]
            try:
                kwargs[key] = convert(raw.strip())
            except ValueError:
                raise ValueError(
                    f"X-Emulator-Fault option {option!r}: {raw!r} is not a valid {key}"
                ) from None
        faults.append(Fault(kind, scope="any", **kwargs))
    return faults
