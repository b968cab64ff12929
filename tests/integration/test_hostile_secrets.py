"""A QwenChatOperator task run with ``dag.test()`` against a server answering malformed HTTP that
echoes the request (the key among its headers): the whole task log holds the key 0 times.

Before the scrubber the key appeared in that log through the chained httpcore/httpx exceptions
(the task's traceback) and httpcore's DEBUG trace.
"""

from __future__ import annotations

import json
import logging

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenChatOperator
from tests.unit.client.test_secrets_hostile import KEY, HostileServer, echo_status_line

CONN_ENV = "AIRFLOW_CONN_QWEN_DEFAULT"


@pytest.fixture
def malformed_server(monkeypatch) -> HostileServer:
    server = HostileServer(echo_status_line)
    conn = {"conn_type": "qwen", "host": server.base_url, "password": KEY, "extra": {"max_retries": 1}}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))
    yield server
    server.close()


def test_a_task_log_never_holds_the_key(run_dag, malformed_server, capfd, caplog):
    caplog.set_level(logging.DEBUG)
    start = pendulum.datetime(2025, 1, 1, tz="UTC")
    with DAG("qwen_hostile_secrets", schedule=None, start_date=start) as dag:
        QwenChatOperator(task_id="ask", prompt="hello", max_completion_tokens=100, retries=0)

    result = run_dag(dag)

    assert result.state == "failed", result.task_states
    assert len(malformed_server.requests) == 2  # a try and its retry, each echoed with the key
    assert all(KEY in raw.decode("latin-1") for raw in malformed_server.requests)
    out, err = capfd.readouterr()
    records = "\n".join(logging.Formatter().format(record) for record in caplog.records)
    log = "\n".join([out, err, caplog.text, records])
    assert "illegal status line" in log or "Bad status line" in log  # the failure is in the log
    assert log.count(KEY) == 0
    assert log.count(KEY[:16]) == 0
