"""QwenAgentOperator against the emulator over real sockets: the example DAG under ``dag.test()``,
the read-only SQL tool refusing a write, and a task SIGKILLed during turn 3 then retried."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.testing.schema import assert_valid_request
from tests.integration.conftest import load_dag

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sales_db(tmp_path, monkeypatch):
    path = tmp_path / "agent_report.db"
    monkeypatch.setenv(
        "AIRFLOW_CONN_QWEN_AGENT_REPORT_DB", json.dumps({"conn_type": "sqlite", "host": str(path)})
    )
    return path


def _chat_bodies(emulator):
    return [r.body for r in emulator.requests if r.path.endswith("/chat/completions")]


def test_the_agent_report_dag_queries_the_database_and_reports_from_the_rows(
    run_dag, qwen_emulator, sales_db
):
    result = run_dag(load_dag("agent_report.py"))

    assert result.state == "success", result.task_states
    bodies = _chat_bodies(qwen_emulator)
    assert len(bodies) == 2  # the model calls sql_query, then answers from its rows
    for body in bodies:
        assert_valid_request(body)
    first, second = bodies
    assert [t["function"]["name"] for t in first["tools"]] == ["sql_query"]
    assistant = second["messages"][-2]
    assert assistant["role"] == "assistant"
    assert "reasoning_content" not in assistant
    (call,) = assistant["tool_calls"]
    assert "GROUP BY region, product, quarter" in json.loads(call["function"]["arguments"])["query"]
    tool_message = second["messages"][-1]
    assert tool_message["role"] == "tool"
    assert tool_message["tool_call_id"] == call["id"]
    rows = json.loads(tool_message["content"])
    assert ["AMER", "Analytics Pro", "2026-Q3", 61295.0] in rows["rows"]

    report = result.xcom("report")
    assert "sql_query" in report
    assert "61295" in report  # the answer draws on the rows the tool returned
    summary = result.xcom("report", "qwen_agent")
    assert summary["turns"] == 2
    assert [c["outcome"] for c in summary["per_turn"][0]["tool_calls"]] == ["ok"]
    cost = result.xcom("report", "qwen_cost")
    credits, usd = qwen_emulator.total_charged()
    assert cost["requests"] == 2
    assert cost["credits_used"] == credits
    assert Decimal(cost["usd_spent"]) == usd
    assert [Decimal(t["usd_spent"]) for t in summary["per_turn"]] == [c.usd for c in qwen_emulator.charges]


def test_the_read_only_sql_tool_refuses_a_write_and_the_model_hears_why(run_dag, qwen_emulator, sales_db):
    from airflow_provider_qwen.operators import QwenAgentOperator
    from airflow_provider_qwen.tools import sql_tool

    with sqlite3.connect(sales_db) as db:
        db.execute("CREATE TABLE sales (region TEXT)")
        db.execute("INSERT INTO sales VALUES ('EMEA')")
    with DAG("qwen_agent_write", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        QwenAgentOperator(
            task_id="agent",
            prompt='Call sql_query with {"query": "DELETE FROM sales"} and say what happened.',
            tools=[sql_tool("qwen_agent_report_db")],
            max_completion_tokens=300,
        )

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    summary = result.xcom("agent", "qwen_agent")
    assert [c["outcome"] for c in summary["per_turn"][0]["tool_calls"]] == ["error"]
    refusal = _chat_bodies(qwen_emulator)[1]["messages"][-1]["content"]
    assert "read-only" in refusal
    assert "DELETE" in refusal
    with sqlite3.connect(sales_db) as db:
        assert db.execute("SELECT count(*) FROM sales").fetchone() == (1,)  # nothing deleted


def _child(try_number: int, tools_log: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.agent_child", str(try_number), str(tools_log)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_a_kill_during_turn_3_then_a_retry_neither_pays_nor_runs_turns_1_and_2_again(qwen_emulator, tmp_path):
    tools_log = tmp_path / "tools.log"
    env = {
        **os.environ,
        "AIRFLOW__QWEN__STORAGE_BASE": f"file://{tmp_path / 'storage'}",
        "AIRFLOW_CONN_QWEN_DEFAULT": qwen_emulator.conn_json(),
    }

    def ran() -> list[str]:
        return tools_log.read_text().splitlines() if tools_log.exists() else []

    def in_flight() -> bool:
        return qwen_emulator._state.in_flight > 0

    child = _child(1, tools_log, env)
    try:
        _wait(lambda: ran() == ["step_one", "step_two"], "try 1 did not get through turns 1 and 2")
        qwen_emulator.latency = 3.0  # turn 3 is generated slowly: the kill lands while it is in flight
        tools_log.with_suffix(".go").touch()
        _wait(in_flight, "try 1 did not send turn 3")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        _wait(lambda: not in_flight(), "the emulator did not finish turn 3")  # billed, as the service does
    finally:
        qwen_emulator.latency = 0.0
        if child.poll() is None:
            child.kill()
    assert tools_log.read_text().splitlines() == ["step_one", "step_two"]
    sent_in_try_1 = len(qwen_emulator.chat_requests())

    retry = _child(2, tools_log, env)
    out, err = retry.communicate(timeout=120)
    assert retry.returncode == 0, err[-3000:]
    outcome = json.loads(out.strip().splitlines()[-1])

    assert tools_log.read_text().splitlines() == ["step_one", "step_two", "step_three"]  # each ran once
    retried = qwen_emulator.chat_requests()[sent_in_try_1:]
    assert len(retried) == 2  # turn 3 again (its answer was lost with the kill), then the final answer
    assert len(retried[0].messages) == 5  # the prompt, turns 1-2 and their results from the journal
    assert "step_three is done." in outcome["result"]
    summary = outcome["xcom"]["qwen_agent"]
    assert summary["turns"] == 4
    assert [t["tool_calls"][0]["name"] for t in summary["per_turn"][:3]] == [
        "step_one",
        "step_two",
        "step_three",
    ]
    assert outcome["xcom"]["qwen_cost"]["requests"] == 2  # this try paid two turns; try 1 never finished


def test_parallel_calls_run_side_by_side_and_an_output_model_is_validated(run_dag, qwen_emulator):
    from pydantic import BaseModel

    from airflow_provider_qwen.operators import QwenAgentOperator

    class Weather(BaseModel):
        city: str
        summary: str

    def get_weather(city: str) -> str:
        """Today's weather of a city."""
        return f"Sunny in {city}."

    async def get_time(city: str) -> str:
        """The local time of a city."""
        return f"It is 14:05 in {city}."

    with DAG("qwen_agent_parallel", schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC")) as dag:
        QwenAgentOperator(
            task_id="agent",
            prompt='Use get_weather with {"city": "Oslo"} and get_time with {"city": "Oslo"}.',
            tools=[get_weather, get_time],
            output_model=Weather,
            max_completion_tokens=400,
        )

    result = run_dag(dag)

    assert result.state == "success", result.task_states
    bodies = _chat_bodies(qwen_emulator)
    for body in bodies:
        assert_valid_request(body)
    (first_answer,) = [m for m in bodies[1]["messages"] if m["role"] == "assistant"]
    assert [c["function"]["name"] for c in first_answer["tool_calls"]] == ["get_weather", "get_time"]
    results = {m["tool_call_id"]: m["content"] for m in bodies[1]["messages"] if m["role"] == "tool"}
    assert sorted(results.values()) == ["It is 14:05 in Oslo.", "Sunny in Oslo."]
    assert bodies[-1]["tool_choice"] == {"type": "function", "function": {"name": "Weather"}}
    value = result.xcom("agent")
    assert set(value) == {"city", "summary"}  # validated against the model
    summary = result.xcom("agent", "qwen_agent")
    assert summary["turns"] == len(bodies)
    assert result.xcom("agent", "qwen_cost")["requests"] == len(bodies)
