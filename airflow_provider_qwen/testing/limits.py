"""The service's limits: each model's context window, and per-minute request and token limits.

Context windows are copied from the AI/ML API model list (docs snapshot of 2026-08-21; the
emulator cannot read the repository's notes at run time). A request whose prompt, or prompt plus
the completion budget it asks for (``max_completion_tokens``, else ``max_tokens``), is over the
model's window answers 400 in the service's error shape. A model missing from the table gets
``DEFAULT_CONTEXT_WINDOW``.

``RateWindow`` counts the requests and tokens of a sliding window, 60 seconds by default (the
service's minute; ``window`` shortens it so a benchmark of seconds meets a per-minute style limit):
above ``rpm`` requests or ``tpm`` tokens in the window (prompt tokens on admission, completion tokens
once generated) the service answers 429, with no ``Retry-After``: it documents none.
``RateWindow.wait`` says when a refused request would fit, for the optional ``Retry-After``
(``rate_retry_after="auto"``) a kinder server might send.

``RandomRefusals`` is a load-independent 429 (a flaky gateway, not a limit): each chat completion
is refused with probability ``fraction``, from a seeded generator so a run can be replayed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

DEFAULT_CONTEXT_WINDOW = 131_072
CONTEXT_WINDOWS: dict[str, int] = {
    "alibaba/qwen3.8-max": 1_000_000,
    "alibaba/qwen3.8-27b": 262_144,
    "alibaba/qwen3.8-2.4t-a95b": 262_144,
    "alibaba/qwen3.7-max": 1_000_000,
    "alibaba/qwen3.7-plus": 1_000_000,
    "alibaba/qwen3.6-max-preview": 262_144,
    "alibaba/qwen3.6-plus": 1_000_000,
    "alibaba/qwen3.6-flash": 1_000_000,
    "alibaba/qwen3.6-27b": 262_144,
    "alibaba/qwen3.6-35b-a3b": 262_144,
    "alibaba/qwen3.5-plus-20260218": 1_000_000,
    "alibaba/qwen3.5-omni-plus": 256_000,
    "alibaba/qwen3.5-omni-flash": 256_000,
    "alibaba/qwen3.5-flash": 262_144,
    "alibaba/qwen3-max-preview": 258_000,
    "alibaba/qwen3-max-instruct": 262_000,
    "alibaba/qwen3-32b": 131_000,
    "alibaba/qwen3-coder-480b-a35b-instruct": 262_000,
    "alibaba/qwen3-235b-a22b-thinking-2507": 262_000,
    "alibaba/qwen3-next-80b-a3b-instruct": 262_000,
    "alibaba/qwen3-next-80b-a3b-thinking": 262_000,
    "alibaba/qwen3-vl-32b-instruct": 126_000,
    "alibaba/qwen3-vl-32b-thinking": 126_000,
    "qwen-plus": 131_000,
    "qwen-turbo": 1_000_000,
    "qwen-max": 32_000,
    "qwen-max-2025-01-25": 32_000,
    "Qwen/Qwen2.5-7B-Instruct-Turbo": 32_000,
    "Qwen/Qwen2.5-72B-Instruct-Turbo": 32_000,
    "Qwen/Qwen2.5-Coder-32B-Instruct": 131_000,
    "Qwen/QwQ-32B": 131_000,
}
WINDOW_SECONDS = 60.0


def context_window(model: str, overrides: Mapping[str, int] | None = None) -> int:
    """The model's context window in tokens (by id, id without ``alibaba/``, or ``alibaba/`` + id)."""
    table = {**CONTEXT_WINDOWS, **(overrides or {})}
    for candidate in (model, model.removeprefix("alibaba/"), f"alibaba/{model}"):
        if candidate in table:
            return table[candidate]
    return DEFAULT_CONTEXT_WINDOW


def completion_budget(body: Mapping[str, Any]) -> int:
    budget = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return int(budget) if isinstance(budget, (int, float)) and not isinstance(budget, bool) else 0


def window_error(model: str, prompt_tokens: int, budget: int, window: int) -> str | None:
    """The service's message for a request over the window, else None."""
    if prompt_tokens + budget <= window:
        return None
    return (
        f"This model's maximum context length is {window} tokens. However, you requested "
        f"{prompt_tokens + budget} tokens ({prompt_tokens} in the messages, {budget} in the completion). "
        f"Please reduce the length of the messages or completion. (model: {model})"
    )


class RateWindow:
    """Requests and tokens of the last ``window`` seconds, against ``rpm`` / ``tpm`` (None: no limit).

    ``rpm`` and ``tpm`` are per window: per minute with the default window of 60 s.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, *, window: float = WINDOW_SECONDS
    ) -> None:
        if window <= 0:
            raise ValueError(f"rate window={window} must be > 0 seconds")
        self._clock = clock
        self.window = window
        self._lock = threading.Lock()
        self._requests: deque[float] = deque()
        self._tokens: deque[tuple[float, int]] = deque()
        self._token_sum = 0

    def _purge(self, now: float) -> None:
        while self._requests and self._requests[0] <= now - self.window:
            self._requests.popleft()
        while self._tokens and self._tokens[0][0] <= now - self.window:
            self._token_sum -= self._tokens.popleft()[1]

    def admit(self, tokens: int, *, rpm: int | None, tpm: int | None) -> bool:
        """Count one request of ``tokens`` prompt tokens, unless it would break a limit (then False)."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            if rpm is not None and len(self._requests) >= rpm:
                return False
            if tpm is not None and self._token_sum + tokens > tpm:
                return False
            self._requests.append(now)
            self._tokens.append((now, tokens))
            self._token_sum += tokens
            return True

    def wait(self, tokens: int, *, rpm: int | None, tpm: int | None) -> float:
        """Seconds until a request of ``tokens`` prompt tokens would be admitted (0: now; ``window``
        when it never fits the token limit on its own)."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            until = now
            if rpm is not None and len(self._requests) >= rpm:
                until = max(until, self._requests[len(self._requests) - rpm] + self.window)
            if tpm is not None and self._token_sum + tokens > tpm:
                if tokens > tpm:
                    return self.window
                excess = self._token_sum + tokens - tpm
                for when, count in self._tokens:
                    excess -= count
                    if excess <= 0:
                        until = max(until, when + self.window)
                        break
            return max(0.0, until - now)

    def add_tokens(self, tokens: int) -> None:
        """Count generated tokens against the token limit."""
        if tokens <= 0:
            return
        with self._lock:
            now = self._clock()
            self._tokens.append((now, tokens))
            self._token_sum += tokens

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._tokens.clear()
            self._token_sum = 0


def retry_after_header(seconds: float) -> dict[str, str]:
    """A ``Retry-After`` of ``seconds``, rounded up to the millisecond (never 0 for a real wait)."""
    return {"retry-after": f"{math.ceil(seconds * 1000) / 1000:g}"}


class RandomRefusals:
    """429s with no relation to load: each call of ``refuse()`` is True with probability ``fraction``.

    Seeded (``seed``) and replayable: ``reset()`` starts the same sequence again.
    """

    def __init__(self, fraction: float = 0.0, *, seed: int = 0) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"random_429={fraction} must be a fraction between 0 and 1")
        self.fraction = fraction
        self.seed = seed
        self._lock = threading.Lock()
        self._random = random.Random(seed)

    def refuse(self) -> bool:
        if self.fraction <= 0.0:
            return False
        with self._lock:
            return self._random.random() < self.fraction

    def reset(self) -> None:
        with self._lock:
            self._random = random.Random(self.seed)
