"""``python -m airflow_provider_qwen.testing.emulator``: serves until told to stop, with its options."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

MODULE = "airflow_provider_qwen.testing.emulator"
BANNER = re.compile(r"serving on (http://127\.0\.0\.1:(\d+)/v1) \(API key: (.+)\)")


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """Start the CLI and wait for its banner; returns the process and the base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", MODULE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = process.stdout.readline() if process.stdout else ""
    match = BANNER.search(line)
    if not match:
        process.kill()
        raise AssertionError(f"no banner: {line!r} {process.communicate(timeout=10)}")
    return process, match.group(1)


@pytest.fixture
def cli() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_cli_serves_with_its_options_and_stops_on_sigterm(cli):
    process, base_url = start(
        "--port", "0", "--api-key", "ci-key", "--latency", "0.2", "--max-concurrency", "5"
    )
    cli.append(process)
    body = {"model": "alibaba/qwen3.7-max", "messages": [{"role": "user", "content": "Ping. Pong."}]}

    started = time.monotonic()
    ok = httpx.post(f"{base_url}/chat/completions", json=body, headers={"Authorization": "Bearer ci-key"})
    assert time.monotonic() - started >= 0.2
    assert ok.status_code == 200
    assert ok.json()["choices"][0]["message"]["content"] == "Ping. Pong."
    assert (
        httpx.post(
            f"{base_url}/chat/completions", json=body, headers={"Authorization": "Bearer test-key"}
        ).status_code
        == 401
    )
    faulted = httpx.post(
        f"{base_url}/chat/completions",
        json=body,
        headers={"Authorization": "Bearer ci-key", "X-Emulator-Fault": "status;status=503"},
    )
    assert faulted.status_code == 503
    assert httpx.get(f"{base_url}/models").status_code == 200

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/models")


def test_cli_limits_answer_429_without_retry_after_unless_asked(cli):
    process, base_url = start("--port", "0", "--rpm", "1", "--tpm", "1000", "--concurrency-retry-after", "3")
    cli.append(process)
    body = {
        "model": "alibaba/qwen3.7-max",
        "messages": [{"role": "user", "content": "Hi! What do you think about mankind?"}],
    }
    headers = {"Authorization": "Bearer test-key"}
    first = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers)
    assert first.status_code == 200
    assert first.json()["usage"]["prompt_tokens"] == 19  # the Qwen vocabulary in the CLI too
    limited = httpx.post(f"{base_url}/chat/completions", json=body, headers=headers)
    assert limited.status_code == 429
    assert "retry-after" not in limited.headers  # the rate limit has none; only concurrency gets 3 s


def test_cli_banner_shows_the_default_test_key_but_never_a_custom_one(cli):
    process, _ = start("--port", "0")
    cli.append(process)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 0

    process, _ = start("--port", "0", "--api-key", "sk-real-looking-SECRET")
    cli.append(process)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=15)
    assert "sk-real-looking-SECRET" not in out + err


def test_cli_fixed_port_and_busy_port(cli):
    with httpx.Client() as client:
        process, base_url = start("--port", "0")
        cli.append(process)
        port = base_url.rsplit(":", 1)[1].split("/")[0]
        assert client.get(f"{base_url}/models").status_code == 200
        busy = subprocess.run(
            [sys.executable, "-m", MODULE, "--port", port], capture_output=True, text=True, timeout=60
        )
    assert busy.returncode == 1
    assert f"cannot serve on 127.0.0.1:{port}" in busy.stderr


def test_cli_help():
    result = subprocess.run(
        [sys.executable, "-m", MODULE, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for option in ("--port", "--latency", "--api-key", "--max-concurrency", "--lenient"):
        assert option in result.stdout
