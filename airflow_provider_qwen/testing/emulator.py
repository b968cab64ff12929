"""An emulator of the AI/ML API chat-completions service, on loopback, for tests and the demo.

From Python::

    from airflow_provider_qwen.testing.emulator import Fault, QwenEmulator

    with QwenEmulator() as emulator:            # a free port on 127.0.0.1
        emulator.add_faults(Fault.rate_limited(retry_after=0.1), Fault.server_error(502))
        ...                                      # point a client at emulator.base_url, key "test-key"
        assert len(emulator.requests) == 3
        credits, usd = emulator.total_charged()

From a shell (serves until interrupted)::

    python -m airflow_provider_qwen.testing.emulator --port 8765 [--latency 0.2] [--api-key KEY]

Serves ``POST /v1/chat/completions`` (and ``/chat/completions``), ``GET /v1/models``
(``?include=pricing``) and ``GET /v2/billing``. What it answers is described in ``answers.py``
(tools: ``agent_play.py``; scripted turns: ``scripts.py``, ``control.py``), faults in ``faults.py``,
validation in ``schema.py`` and ``conversation.py``, the order of checks and charges in ``app.py``.
It runs uvicorn in a background thread: asyncio only, no thread per request, so hundreds of
concurrent requests with injected latency cost almost nothing.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from airflow_provider_qwen.testing import vocabulary
from airflow_provider_qwen.testing.app import build_app
from airflow_provider_qwen.testing.billing import Prices
from airflow_provider_qwen.testing.control import AgentControls  # script(), chat_requests() ...
from airflow_provider_qwen.testing.faults import Fault
from airflow_provider_qwen.testing.scripts import Turn
from airflow_provider_qwen.testing.state import Charge, ChargeRecord, EmulatorState, LoggedRequest

__all__ = ["Charge", "ChargeRecord", "Fault", "LoggedRequest", "QwenEmulator", "Turn", "main"]

DEFAULT_API_KEY = "test-key"
BACKLOG = 4096
STARTUP_TIMEOUT = 15.0


class QwenEmulator(AgentControls):
    """The emulator as a context manager: a uvicorn server in a daemon thread on ``host:port``.

    ``port=0`` picks a free port. ``prices`` (model -> {"input", "output"} USD per 1M tokens)
    override the emulator's own table; an object with ``as_dict()`` returning that mapping (a client
    ``PriceTable``) replaces it. ``max_concurrency`` answers 429 above N requests in flight, with no
    ``Retry-After`` (the service documents none) unless ``concurrency_retry_after`` gives one
    (seconds). ``rpm`` / ``tpm`` answer 429 (no ``Retry-After``) above that many requests / tokens
    in the last ``rate_window_s`` seconds (60: the service's minute; a shorter window lets a benchmark
    of seconds meet a per-minute style limit); ``rate_retry_after`` adds a ``Retry-After`` to those
    429s: seconds, or ``"auto"`` for the time until the window would admit the request.
    ``random_429`` refuses that fraction of chat completions with a 429 that has nothing to do with
    load (a flaky gateway; before any limit is counted), drawn from a generator seeded with
    ``random_seed`` and re-seeded by ``reset()``, so a run replays. ``context_windows`` (model ->
    tokens) override the per-model windows of ``limits.CONTEXT_WINDOWS`` a request must fit.
    ``balance_usd`` is what ``/v2/billing`` starts from; charges lower it and at zero chat
    completions answer 403. ``strict=False`` drops unknown fields (the gateway's behaviour) instead
    of answering 400, which is the default so tests catch them.
    """

    def __init__(
        self,
        *,
        api_keys: Sequence[str] = (DEFAULT_API_KEY,),
        latency: float = 0.0,
        port: int = 0,
        prices: Mapping[str, Any] | Any = None,
        max_concurrency: int | None = None,
        balance_usd: Decimal | float | str = Decimal("12.5"),
        strict: bool = True,
        host: str = "127.0.0.1",
        concurrency_retry_after: float | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        context_windows: Mapping[str, int] | None = None,
        rate_window_s: float = 60.0,
        rate_retry_after: float | str | None = None,
        random_429: float = 0.0,
        random_seed: int = 0,
    ) -> None:
        if latency < 0:
            raise ValueError(f"latency={latency} must be >= 0 seconds")
        for name, limit in (("max_concurrency", max_concurrency), ("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{name}={limit} must be >= 1 or None")
        if concurrency_retry_after is not None and concurrency_retry_after < 0:
            raise ValueError(f"concurrency_retry_after={concurrency_retry_after} must be >= 0 or None")
        _check_rate_retry_after(rate_retry_after)
        self.host = host
        self.port = port
        self._state = EmulatorState(
            api_keys=list(api_keys),
            latency=latency,
            prices=Prices(prices),
            max_concurrency=max_concurrency,
            balance_usd=Decimal(str(balance_usd)),
            strict=strict,
            concurrency_retry_after=concurrency_retry_after,
            rpm=rpm,
            tpm=tpm,
            context_windows=context_windows,
            rate_window_s=rate_window_s,
            rate_retry_after=rate_retry_after,
            random_429=random_429,
            random_seed=random_seed,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def _config(self) -> Any:
        import uvicorn

        try:
            import httptools  # noqa: F401

            http = "httptools"
        except ImportError:  # pragma: no cover - httptools comes with uvicorn[standard]
            http = "h11"
        return uvicorn.Config(
            build_app(self._state),
            http=http,
            loop="auto",  # uvloop when installed (uvicorn[standard]): less emulator CPU per request
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            log_level="warning",
            backlog=BACKLOG,
            limit_concurrency=None,
            timeout_keep_alive=30,
            timeout_graceful_shutdown=2,
        )

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections; without it
        # Nagle's algorithm adds ~40 ms to every answer.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(BACKLOG)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock

    def start(self) -> QwenEmulator:
        """Start serving in a background thread; returns once the server accepts connections."""
        import uvicorn

        if self._thread is not None:
            raise RuntimeError("this emulator is already running")
        if not vocabulary.loaded():
            vocabulary.preload()  # ~1 s, in its own thread: the server's loop never loads it
        sock = self._bind()
        self._server = uvicorn.Server(self._config())
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name=f"qwen-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the Qwen emulator did not start on {self.host}:{self.port}")
            time.sleep(0.005)
        return self

    def stop(self) -> None:
        """Stop the server and wait for its thread (open streams get two seconds to finish)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(timeout=5)
        self._server, self._thread = None, None

    def __enter__(self) -> QwenEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- connection -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://host:port`` (the ``/v2/billing`` base)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-style base URL, ``http://host:port/v1``."""
        return f"{self.url}/v1"

    @property
    def api_key(self) -> str:
        """The first accepted key."""
        return self._state.api_keys[0]

    def conn_json(self) -> str:
        """The ``qwen`` connection as JSON, for ``AIRFLOW_CONN_QWEN_DEFAULT``."""
        return json.dumps({"conn_type": "qwen", "host": self.base_url, "password": self.api_key})

    def conn_uri(self) -> str:
        """The ``qwen`` connection as an Airflow URI (host is the URL-encoded base URL)."""
        from urllib.parse import quote

        return f"qwen://:{quote(self.api_key, safe='')}@{quote(self.base_url, safe='')}"

    # -- settings, faults, log --------------------------------------------------------------------
    @property
    def prices(self) -> Prices:
        """The price table answers are billed with (see ``billing.Prices``)."""
        return self._state.prices

    @property
    def latency(self) -> float:
        return self._state.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._state.latency = float(value)

    @property
    def max_concurrency(self) -> int | None:
        return self._state.max_concurrency

    @max_concurrency.setter
    def max_concurrency(self, value: int | None) -> None:
        self._state.max_concurrency = value

    @property
    def concurrency_retry_after(self) -> float | None:
        """The ``Retry-After`` of a concurrency 429 (None: no header, as the service)."""
        return self._state.concurrency_retry_after

    @concurrency_retry_after.setter
    def concurrency_retry_after(self, value: float | None) -> None:
        self._state.concurrency_retry_after = value

    @property
    def rpm(self) -> int | None:
        """Requests per minute above which chat completions answer 429 (None: no limit)."""
        return self._state.rpm

    @rpm.setter
    def rpm(self, value: int | None) -> None:
        self._state.rpm = value

    @property
    def tpm(self) -> int | None:
        """Tokens per minute (prompt and completion) above which chat completions answer 429."""
        return self._state.tpm

    @tpm.setter
    def tpm(self, value: int | None) -> None:
        self._state.tpm = value

    @property
    def rate_window_s(self) -> float:
        """Length of the window ``rpm`` and ``tpm`` count over, in seconds (60: per minute)."""
        return self._state.rates.window

    @rate_window_s.setter
    def rate_window_s(self, value: float) -> None:
        if value <= 0:
            raise ValueError(f"rate_window_s={value} must be > 0 seconds")
        self._state.rates.window = float(value)

    @property
    def rate_retry_after(self) -> float | str | None:
        """The ``Retry-After`` of a rate 429: None (no header, as the service), seconds, or ``"auto"``."""
        return self._state.rate_retry_after

    @rate_retry_after.setter
    def rate_retry_after(self, value: float | str | None) -> None:
        _check_rate_retry_after(value)
        self._state.rate_retry_after = value

    @property
    def random_429(self) -> float:
        """Fraction of chat completions refused with a load-independent 429 (0: none)."""
        return self._state.refusals.fraction

    @random_429.setter
    def random_429(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"random_429={value} must be a fraction between 0 and 1")
        self._state.refusals.fraction = float(value)

    @property
    def balance_usd(self) -> Decimal:
        """The balance ``/v2/billing`` reports now (start balance minus charges)."""
        return self._state.balance()

    @balance_usd.setter
    def balance_usd(self, value: Decimal | float | str) -> None:
        """Set the start balance (``0`` makes chat completions answer 403)."""
        self._state.balance_usd = Decimal(str(value))

    @property
    def peak_in_flight(self) -> int:
        """Most chat completions in progress at once since the last reset."""
        return self._state.peak_in_flight

    def add_faults(self, *faults: Fault) -> None:
        """Queue faults: the next requests take them, one each, in order."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError(f"add_faults takes Fault objects, got {fault!r}")
        self._state.add_faults(faults)

    @property
    def pending_faults(self) -> list[Fault]:
        """Queued faults no request has taken yet."""
        return self._state.pending_faults()

    @property
    def requests(self) -> list[LoggedRequest]:
        """Every request received since the last reset, in arrival order (a snapshot)."""
        return self._state.requests

    @property
    def charges(self) -> list[Charge]:
        """One per billed answer since the last reset, as reported to the client."""
        return self._state.charges

    def charge_log(self) -> list[ChargeRecord]:
        """The service's own records: one row per chat completion with a valid key, failed ones at 0."""
        return self._state.charge_log()

    def total_charged(self) -> tuple[int, Decimal]:
        """(credits, usd) billed since the last reset."""
        charges = self.charges
        return sum(c.credits for c in charges), sum((c.usd for c in charges), Decimal(0))

    def reset(self) -> None:
        """Forget requests, charges, queued faults and scripts; restore latency, limits and balance."""
        self._state.reset()

    def __repr__(self) -> str:
        state = "running" if self._thread is not None else "stopped"
        return f"QwenEmulator({self.base_url}, {state})"


def _check_rate_retry_after(value: float | str | None) -> None:
    if value is None or value == "auto":
        return
    if isinstance(value, str) or value < 0:
        raise ValueError(f"rate_retry_after={value!r} must be seconds >= 0, 'auto' or None")


def _rate_retry_after(text: str) -> float | str:
    return "auto" if text == "auto" else float(text)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m airflow_provider_qwen.testing.emulator``: serve until interrupted."""
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_qwen.testing.emulator",
        description="Serve an emulator of the AI/ML API chat-completions service on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one; default 8765)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every chat completion")
    parser.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help=f"accepted key, repeatable (default {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=None, help="answer 429 above N requests in flight"
    )
    parser.add_argument(
        "--concurrency-retry-after",
        type=float,
        default=None,
        help="seconds of Retry-After on a concurrency 429 (default: none, as the service)",
    )
    parser.add_argument("--rpm", type=int, default=None, help="answer 429 above N requests a minute")
    parser.add_argument("--tpm", type=int, default=None, help="answer 429 above N tokens a minute")
    parser.add_argument(
        "--rate-window-s",
        type=float,
        default=60.0,
        help="seconds the --rpm / --tpm limits count over (default 60: per minute)",
    )
    parser.add_argument(
        "--rate-retry-after",
        type=_rate_retry_after,
        default=None,
        help="Retry-After on a rate 429: seconds, or 'auto' (until the window admits); default none",
    )
    parser.add_argument(
        "--random-429",
        type=float,
        default=0.0,
        help="fraction of chat completions refused with a load-independent 429 (default 0)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the --random-429 draws (default 0)")
    parser.add_argument("--lenient", action="store_true", help="drop unknown request fields instead of a 400")
    parser.add_argument(
        "--balance-usd", default="12.5", help="the account's start balance (default 12.5; 0: every call 403)"
    )
    args = parser.parse_args(argv)
    emulator = QwenEmulator(
        api_keys=args.api_keys or [DEFAULT_API_KEY],
        latency=args.latency,
        port=args.port,
        max_concurrency=args.max_concurrency,
        concurrency_retry_after=args.concurrency_retry_after,
        rpm=args.rpm,
        tpm=args.tpm,
        rate_window_s=args.rate_window_s,
        rate_retry_after=args.rate_retry_after,
        random_429=args.random_429,
        random_seed=args.seed,
        strict=not args.lenient,
        host=args.host,
        balance_usd=args.balance_usd,
    )
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    shown_key = emulator.api_key if emulator.api_key == DEFAULT_API_KEY else "<your --api-key>"
    try:
        emulator.start()
    except OSError as exc:
        print(f"cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(f"Qwen emulator serving on {emulator.base_url} (API key: {shown_key})", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
