"""The emulator's mutable state: settings, fault and script queues, request log, charges; thread-safe.

The server's event loop writes it while the test thread reads it, so every access takes a lock and
readers get snapshots.

Two records of money: ``charges`` (one ``Charge`` per paid answer, what a test sums against the
client's figures) and ``charge_log()`` (one ``ChargeRecord`` per chat completion the account made,
as the service's own records keep them: paid answers, cut streams, and failed requests at cost 0;
a request with a bad key belongs to no account and is not in it). ``/v2/logs`` and friends serve
``charge_log()``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.testing.billing import Prices
from airflow_provider_qwen.testing.faults import Fault
from airflow_provider_qwen.testing.limits import RandomRefusals, RateWindow, retry_after_header
from airflow_provider_qwen.testing.scripts import ScriptBook


@dataclass
class LoggedRequest:
    """One request as the emulator received it.

    ``headers`` have lower-case names and ``authorization`` redacted to ``Bearer ***``; ``body`` is
    the parsed JSON (the raw text when it is not JSON, None when empty); ``time`` is epoch seconds;
    ``status`` the answer's status (None for a dropped connection); ``client_request_id`` the valid
    ``X-Client-Request-Id`` (an invalid one is dropped, as the service does); ``inference_id`` the
    ``x-inference-id`` of the answer; ``fault`` the kinds of the faults it took, comma-separated;
    ``peer`` the client's ``host:port``, one per connection (requests on a kept-alive one share it);
    ``script`` the ``X-Emulator-Script`` id it carried and ``script_turn`` the number of the scripted
    turn it played (1 for a script's first; None when it played none); ``reply`` the assistant
    message it was answered with (``content``, ``tool_calls``, ``reasoning_content`` as sent; None
    for a request that got no generated answer). ``messages`` are the messages it sent.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: Any
    time: float
    status: int | None = None
    client_request_id: str | None = None
    inference_id: str | None = None
    fault: str | None = None
    peer: str | None = None
    script: str | None = None
    script_turn: int | None = None
    reply: dict[str, Any] | None = None

    @property
    def stream(self) -> bool:
        return isinstance(self.body, Mapping) and bool(self.body.get("stream"))

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The ``messages`` of the body ([] when it had none)."""
        messages = self.body.get("messages") if isinstance(self.body, Mapping) else None
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


@dataclass(frozen=True)
class Charge:
    """One billed answer, exactly as reported to the client (``usd == credits / 2,000,000``).

    ``model`` is the requested id; ``complete`` is False for an answer cut by a ``cut_stream``
    fault (billed all the same: the generation had finished).
    """

    inference_id: str
    model: str
    credits: int
    usd: Decimal
    client_request_id: str | None
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    stream: bool
    complete: bool = True
    time: float = field(default_factory=time.time)


@dataclass(frozen=True)
class ChargeRecord:
    """One row of the service's own records of a chat completion (a ``/v2/logs`` row).

    ``time`` is epoch seconds of receipt; ``model`` the requested id ("" when the body named none);
    ``client_request_id`` the valid ``X-Client-Request-Id`` sent (None when absent or invalid);
    ``inference_id`` the ``x-inference-id`` answered; ``status`` the answer's status (None: the
    connection was dropped with no answer; 200 for a stream that later failed or was cut);
    ``credits`` and ``usd`` what was billed, 0 for a failed request; ``complete`` False for a cut
    or failed stream; ``failed`` True when nothing was billed because the request failed.
    """

    time: float
    model: str
    client_request_id: str | None
    inference_id: str
    status: int | None
    prompt_tokens: int
    completion_tokens: int
    credits: int
    usd: Decimal
    stream: bool = False
    complete: bool = True
    failed: bool = False


class EmulatorState:
    """Settings, fault queue, request log and charges of one emulator; safe across threads."""

    def __init__(
        self,
        *,
        api_keys: Sequence[str],
        latency: float,
        prices: Prices,
        max_concurrency: int | None,
        balance_usd: Decimal,
        strict: bool,
        concurrency_retry_after: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        context_windows: Mapping[str, int] | None = None,
        rate_window_s: float = 60.0,
        rate_retry_after: float | str | None = None,
        random_429: float = 0.0,
        random_seed: int = 0,
    ) -> None:
        if not api_keys:
            raise ValueError("api_keys must name at least one accepted key")
        self.api_keys = tuple(api_keys)
        self.prices = prices
        self.strict = strict
        self.context_windows = dict(context_windows or {})
        self.rates = RateWindow(window=rate_window_s)
        self.refusals = RandomRefusals(random_429, seed=random_seed)
        self._defaults = (
            latency,
            max_concurrency,
            balance_usd,
            concurrency_retry_after,
            rpm,
            tpm,
            rate_window_s,
            rate_retry_after,
            random_429,
        )
        self._restore()
        self._lock = threading.Lock()
        self._requests: list[LoggedRequest] = []
        self._charges: list[Charge] = []
        self._log: list[ChargeRecord] = []
        self._faults: deque[Fault] = deque()
        self.scripts = ScriptBook()  # scripted turns per script id (scripts.py)
        self._spent = Decimal(0)
        self.in_flight = 0  # chat completions between admission and their last byte
        self.generating = 0  # of them, those still generated (what the concurrency cap counts)
        self.peak_in_flight = 0

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._charges.clear()
            self._log.clear()
            self._faults.clear()
            self.scripts.clear(everything=True)
            self._spent = Decimal(0)
            self._restore()
            self.peak_in_flight = self.in_flight
        self.rates.clear()
        self.refusals.reset()

    def _restore(self) -> None:
        (
            self.latency,
            self.max_concurrency,
            self.balance_usd,
            self.concurrency_retry_after,
            self.rpm,
            self.tpm,
            self.rates.window,
            self.rate_retry_after,
            self.refusals.fraction,
        ) = self._defaults

    def rate_limit_headers(self, prompt_tokens: int) -> dict[str, str] | None:
        """The ``Retry-After`` of a rate 429: None (the service's way), a fixed number of seconds, or
        with ``"auto"`` the seconds until the window would admit this request."""
        wait = self.rate_retry_after
        if wait is None:
            return None
        if wait == "auto":
            wait = self.rates.wait(prompt_tokens, rpm=self.rpm, tpm=self.tpm)
        return retry_after_header(max(float(wait), 0.001))

    def add_faults(self, faults: Sequence[Fault]) -> None:
        with self._lock:
            self._faults.extend(faults)

    def next_fault(self, *, chat: bool) -> Fault | None:
        """The head of the queue: chat completions take any fault, other paths only ``scope="any"``."""
        with self._lock:
            if self._faults and (chat or self._faults[0].scope == "any"):
                return self._faults.popleft()
        return None

    def pending_faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def log(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._requests.append(entry)

    def charge(self, charge: Charge) -> None:
        with self._lock:
            self._charges.append(charge)
            self._spent += charge.usd

    def record(self, row: ChargeRecord) -> None:
        with self._lock:
            self._log.append(row)

    def charge_log(self) -> list[ChargeRecord]:
        """Every chat completion of the account since the last reset, in order of receipt (a copy)."""
        with self._lock:
            return sorted(self._log, key=lambda row: row.time)

    @property
    def requests(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def charges(self) -> list[Charge]:
        with self._lock:
            return list(self._charges)

    def balance(self) -> Decimal:
        with self._lock:
            return self.balance_usd - self._spent

    def authorized(self, header: str | None) -> bool:
        scheme, _, key = (header or "").partition(" ")
        return scheme.lower() == "bearer" and key.strip() in self.api_keys

    def knows(self, model: str) -> bool:
        return self.prices.get(model) is not None or model.startswith("alibaba/qwen")

    def enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.generating += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def generated(self) -> None:
        """A request's answer is ready: it no longer counts against the concurrency cap."""
        with self._lock:
            self.generating -= 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1
