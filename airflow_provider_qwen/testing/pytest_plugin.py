"""pytest plugin (entry point ``qwen_emulator``): fixtures that run the AI/ML API emulator.

Installed with the provider, so every pytest session that has ``airflow-provider-qwen`` installed
gets two fixtures:

- ``qwen_emulator_server`` (session scope): one emulator on a free 127.0.0.1 port, started on first
  use and stopped at the end of the session. Key ``test-key``.
- ``qwen_emulator`` (function scope): that same emulator, reset (no logged requests, charges,
  queued faults or scripted turns; default latency, concurrency limit and balance), with
  ``AIRFLOW_CONN_QWEN_DEFAULT`` set for the test so the ``qwen_default`` connection points at it.

A DAG test of your own::

    from airflow_provider_qwen.testing import Fault

    def test_summary_dag(qwen_emulator):
        my_dag.test()
        (request,) = qwen_emulator.chat_requests()
        assert "invoice 8841" in request.body["messages"][-1]["content"]
        credits, usd = qwen_emulator.total_charged()
        assert credits > 0

    def test_summary_dag_survives_a_rate_limit(qwen_emulator):
        qwen_emulator.add_faults(Fault.rate_limited(retry_after=0.1))
        my_dag.test()
        assert [r.status for r in qwen_emulator.chat_requests()] == [429, 200]

A test with another connection id can use ``monkeypatch.setenv("AIRFLOW_CONN_MY_QWEN",
qwen_emulator.conn_json())``. See ``airflow_provider_qwen.testing.emulator`` for the emulator itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from airflow_provider_qwen.testing.emulator import QwenEmulator

CONN_ENV = "AIRFLOW_CONN_QWEN_DEFAULT"


@pytest.fixture(scope="session")
def qwen_emulator_server() -> Iterator[QwenEmulator]:
    """One AI/ML API emulator for the whole session (key ``test-key``)."""
    from airflow_provider_qwen.testing.emulator import QwenEmulator

    with QwenEmulator() as emulator:
        yield emulator


@pytest.fixture
def qwen_emulator(qwen_emulator_server: QwenEmulator, monkeypatch: pytest.MonkeyPatch) -> QwenEmulator:
    """The session's emulator, reset, with ``qwen_default`` pointing at it for this test."""
    qwen_emulator_server.reset()
    monkeypatch.setenv(CONN_ENV, qwen_emulator_server.conn_json())
    return qwen_emulator_server
