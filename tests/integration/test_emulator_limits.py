"""The emulator's knobs for rate-limit benchmarks: load-independent random 429s (seeded, replayable),
a rate window shorter than the service's minute, and an optional ``Retry-After`` on rate 429s.

None is kinder than the service by default: no random 429s, a window of 60 s, no ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from airflow_provider_qwen.testing import QwenEmulator
from airflow_provider_qwen.testing.limits import RandomRefusals, RateWindow

MODEL = "alibaba/qwen3.7-max"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hi! What do you think about mankind?"}]}
HEADERS = {"Authorization": "Bearer test-key"}


def post(emulator: Any) -> httpx.Response:
    return httpx.post(f"{emulator.base_url}/chat/completions", json=BODY, headers=HEADERS, timeout=30)


def statuses(emulator: Any, count: int) -> list[int]:
    """Statuses of ``count`` requests sent one after another (never two in flight)."""
    with httpx.Client(timeout=30) as client:
        url = f"{emulator.base_url}/chat/completions"
        return [client.post(url, json=BODY, headers=HEADERS).status_code for _ in range(count)]


def test_defaults_are_the_services_no_random_429_a_minute_window_no_retry_after():
    emulator = QwenEmulator()
    assert (emulator.random_429, emulator.rate_window_s, emulator.rate_retry_after) == (0.0, 60.0, None)


def test_random_429s_refuse_the_fraction_asked_without_retry_after_and_replay_after_reset():
    with QwenEmulator(random_429=0.3, random_seed=7) as emulator:
        first = statuses(emulator, 100)
        refused = first.count(429)
        assert 15 <= refused <= 45  # Binomial(100, 0.3): mean 30, sd 4.6
        assert set(first) == {200, 429}
        limited = [r for r in emulator.chat_requests() if r.status == 429]
        assert len(limited) == refused
        assert len(emulator.charges) == 100 - refused  # a refused request is not billed
        emulator.reset()
        assert statuses(emulator, 100) == first  # seeded: the same run again
    with QwenEmulator(random_429=0.3, random_seed=8) as other:
        assert statuses(other, 100) != first


def test_random_429s_carry_no_retry_after_and_have_nothing_to_do_with_load():
    with QwenEmulator(random_429=1.0) as emulator:
        answer = post(emulator)
        assert answer.status_code == 429
        assert answer.json()["statusCode"] == 429
        assert "retry-after" not in answer.headers
        assert "retry-after-ms" not in answer.headers
        emulator.random_429 = 0.0
        assert post(emulator).status_code == 200


def test_a_random_429_counts_against_no_limit():
    refusals = RandomRefusals(0.5, seed=1)
    draws = [refusals.refuse() for _ in range(40)]
    admitted = draws.count(False)
    assert 0 < admitted < 40
    # an rpm of exactly the admitted ones: had a refusal counted, a later admitted one would be a 429
    with QwenEmulator(random_429=0.5, random_seed=1, rpm=admitted) as emulator:
        got = statuses(emulator, 40)
        assert got == [429 if refused else 200 for refused in draws]  # the generator's own draws
        assert statuses(emulator, 40).count(200) == 0  # now the window is full: every one a 429


def test_a_shorter_rate_window_lets_a_per_minute_limit_bite_in_seconds():
    with QwenEmulator(rpm=3, rate_window_s=0.5) as emulator:
        assert statuses(emulator, 4) == [200, 200, 200, 429]
        time.sleep(0.6)
        assert statuses(emulator, 3) == [200, 200, 200]
        assert "retry-after" not in post(emulator).headers  # a rate 429 has none by default
        time.sleep(0.6)
        emulator.rate_window_s = 60.0  # a minute again: the requests of a second ago count again
        assert statuses(emulator, 1) == [429]


def test_rate_retry_after_fixed_or_until_the_window_admits_again():
    with QwenEmulator(rpm=2, rate_window_s=1.0, rate_retry_after=0.25) as emulator:
        statuses(emulator, 2)
        assert post(emulator).headers["retry-after"] == "0.25"
        emulator.rate_retry_after = "auto"
        wait = float(post(emulator).headers["retry-after"])
        assert 0 < wait <= 1.0
        time.sleep(wait + 0.02)
        assert post(emulator).status_code == 200  # it said when: it was so


def test_rate_retry_after_auto_for_tokens():
    window = RateWindow(clock=lambda: 100.0, window=10.0)
    assert window.admit(40, rpm=None, tpm=100)
    assert window.admit(50, rpm=None, tpm=100)
    assert window.wait(20, rpm=None, tpm=100) == 10.0  # the first 40 tokens must leave the window
    assert window.wait(5, rpm=None, tpm=100) == 0.0
    assert window.wait(101, rpm=None, tpm=100) == 10.0  # never fits on its own: a window, not 0


def test_concurrency_retry_after_is_unchanged_by_a_rate_retry_after():
    async def burst(emulator: QwenEmulator) -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            url = f"{emulator.base_url}/chat/completions"
            return await asyncio.gather(*(client.post(url, json=BODY, headers=HEADERS) for _ in range(4)))

    with QwenEmulator(max_concurrency=1, latency=0.3, rate_retry_after="auto") as emulator:
        limited = [r for r in asyncio.run(burst(emulator)) if r.status_code == 429]
        assert limited
        assert all("retry-after" not in r.headers for r in limited)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"random_429": 1.5}, "random_429=1.5 must be a fraction"),
        ({"random_429": -0.1}, "random_429=-0.1 must be a fraction"),
        ({"rate_window_s": 0}, "window=0 must be > 0"),
        ({"rate_retry_after": -1}, "rate_retry_after=-1"),
        ({"rate_retry_after": "soon"}, "rate_retry_after='soon'"),
    ],
)
def test_bad_knobs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QwenEmulator(**kwargs)


BANNER = re.compile(r"serving on (http://127\.0\.0\.1:\d+/v1)")


@pytest.fixture
def cli() -> Iterator[list[str]]:
    """Start the CLI with options (call ``cli.start(...)``); every process is killed after the test."""
    processes: list[subprocess.Popen[str]] = []

    def start(*args: str) -> str:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_qwen.testing.emulator", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        processes.append(process)
        line = process.stdout.readline() if process.stdout else ""
        match = BANNER.search(line)
        assert match, line
        return match.group(1)

    yield start  # type: ignore[misc]
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def test_cli_flags_random_429_window_and_rate_retry_after(cli):
    class At:
        def __init__(self, base_url: str) -> None:
            self.base_url = base_url

    always = At(cli("--random-429", "1", "--seed", "3"))
    assert statuses(always, 3) == [429, 429, 429]
    windowed = At(cli("--rpm", "1", "--rate-window-s", "0.4", "--rate-retry-after", "auto"))
    assert statuses(windowed, 1) == [200]
    limited = post(windowed)
    assert limited.status_code == 429
    assert 0 < float(limited.headers["retry-after"]) <= 0.4
    time.sleep(0.45)
    assert statuses(windowed, 1) == [200]


def test_a_client_that_keeps_to_the_cap_never_meets_a_429():
    """A request's place under the cap is free once its answer is ready, before the client has it:
    a semaphore of the cap (the next request sent the moment an answer arrived) is never refused."""

    async def keep_to(emulator: QwenEmulator, cap: int, count: int) -> list[int]:
        gate = asyncio.Semaphore(cap)
        limits = httpx.Limits(max_connections=cap, max_keepalive_connections=cap)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            url = f"{emulator.base_url}/chat/completions"

            async def one() -> int:
                async with gate:
                    return (await client.post(url, json=BODY, headers=HEADERS)).status_code

            return await asyncio.gather(*(one() for _ in range(count)))

    with QwenEmulator(max_concurrency=4, latency=0.02) as emulator:
        assert asyncio.run(keep_to(emulator, 4, 400)) == [200] * 400
        assert emulator.peak_in_flight <= 5  # one may still be sending its last bytes


def test_a_stream_keeps_its_place_under_the_cap_until_its_last_chunk():
    with QwenEmulator(max_concurrency=1) as emulator:
        headers = {**HEADERS, "X-Emulator-Fault": "latency;chunk_delay=0.1"}
        body = dict(BODY, stream=True)
        url = f"{emulator.base_url}/chat/completions"
        with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            next(lines)  # the stream is under way
            assert post(emulator).status_code == 429  # its place is still taken
            for _ in lines:
                pass
        assert post(emulator).status_code == 200
