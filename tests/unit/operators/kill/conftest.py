"""Fixtures of the kill and timeout tests: a task storage of their own, SIGTERM as the task runner
handles it."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def storage(tmp_path, monkeypatch) -> Path:
    base = tmp_path / "qwen-storage"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{base}")
    return base


@pytest.fixture
def sigterm():
    """``sigterm(op)``: SIGTERM calls ``op.on_kill()`` as the task runner's handler does."""
    previous = signal.getsignal(signal.SIGTERM)

    def install(op):
        signal.signal(signal.SIGTERM, lambda signum, frame: op.on_kill())

    yield install
    signal.signal(signal.SIGTERM, previous)
