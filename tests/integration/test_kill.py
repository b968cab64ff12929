"""Kills and timeouts against the emulator: a real ``execution_timeout`` under ``dag.test()`` (the
task runner's SIGALRM and its ``on_kill``), and SIGTERM sent to a process running a task (the task
runner's handler calls ``on_kill``). A stopped try cancels what is in flight, keeps its checkpoint
or journal, and is counted; the retry sends only what is left and its ``qwen_cost`` covers both."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_qwen.operators import QwenAgentOperator, QwenBatchOperator, QwenChatOperator
from airflow_provider_qwen.testing.faults import Fault

REPO = Path(__file__).resolve().parents[2]
START = pendulum.datetime(2025, 1, 1, tz="UTC")
TIMEOUT = timedelta(seconds=2)
SLOW = 5.0  # seconds a slow answer takes: well past the timeout
PROMPTLY = 3.5  # seconds a try that times out at TIMEOUT may take, its cleanup included


@pytest.fixture
def storage(tmp_path, monkeypatch) -> Path:
    base = tmp_path / "storage"
    monkeypatch.setenv("AIRFLOW__QWEN__STORAGE_BASE", f"file://{base}")
    return base


def _wait(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _journal_records(storage: Path) -> list[dict]:
    return [json.loads(line) for p in storage.rglob("journal/*.jsonl") for line in p.read_text().splitlines()]


def _first_try_s(result, task_id: str, emulator) -> float:
    """How long try 1 of ``task_id`` ran from its first request to its end (the task instance
    history; the task's own start includes the in-process API server's first start)."""
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(TaskInstanceHistory)
            .filter_by(dag_id=result.dag_id, run_id=result.run_id, task_id=task_id, try_number=1)
            .one()
        )
        ended = row.end_date.timestamp()
    return ended - min(r.time for r in emulator.chat_requests())


def _tries(cost: dict) -> dict[int, dict]:
    return {t["try_number"]: t for t in cost["tries"]}


def _kinds(record: dict) -> list[str]:
    return [e["kind"] for e in record["estimates"]]


def test_a_batch_that_times_out_keeps_its_answers_counts_the_calls_in_flight_and_the_retry_sends_the_rest(
    run_dag, qwen_emulator, storage
):
    qwen_emulator.add_faults(*[Fault.latency(0)] * 3, *[Fault.latency(SLOW)] * 3)  # 3 answer, 3 hang
    with DAG("kill_batch", schedule=None, start_date=START) as dag:
        QwenBatchOperator(
            task_id="batch",
            items=[f"doc {i}" for i in range(6)],
            prompt="Summarise {{ item }}",
            max_concurrency=6,
            max_completion_tokens=40,
            execution_timeout=TIMEOUT,
            retries=1,
            retry_delay=timedelta(0),
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    assert _first_try_s(result, "batch", qwen_emulator) < PROMPTLY  # at its timeout, not at the answers
    requests = qwen_emulator.chat_requests()
    assert len(requests) == 9  # 6 in try 1, then only the 3 unfinished items
    retried = sorted(r.body["messages"][-1]["content"] for r in requests[6:])
    first = sorted(r.body["messages"][-1]["content"] for r in requests[:3])
    assert set(retried).isdisjoint(first)
    assert len(set(retried) | set(first)) == 6
    records = _journal_records(storage)
    assert len(records) == 6  # try 1's 3 answers, try 2's 3: nothing twice, nothing lost
    assert len({r["index"] for r in records}) == 6

    assert result.xcom("batch") == [f"Summarise doc {i}" for i in range(6)]
    assert result.xcom("batch", "qwen_batch")["resumed"] == 3
    cost = result.xcom("batch", "qwen_cost")
    tries = _tries(cost)
    assert tries[1]["requests"] == 6
    assert _kinds(tries[1]) == ["unconfirmed"] * 3
    assert tries[2]["requests"] == 3
    assert tries[2]["estimates"] == []
    assert cost["requests"] == 9
    assert cost["estimated"] is True
    _wait(lambda: qwen_emulator._state.in_flight == 0, "the emulator did not finish the slow answers")
    _, usd = qwen_emulator.total_charged()
    assert Decimal(cost["usd_spent"]) >= usd  # what was billed, and the in-flight ones at worst


def test_a_chat_call_blocked_in_a_slow_sync_request_times_out_promptly_and_is_counted(
    run_dag, qwen_emulator, storage
):
    qwen_emulator.add_faults(Fault.latency(SLOW))  # try 1's answer would come after the timeout
    with DAG("kill_chat", schedule=None, start_date=START) as dag:
        QwenChatOperator(
            task_id="chat",
            prompt="Say hi",
            max_completion_tokens=40,
            execution_timeout=TIMEOUT,
            retries=1,
            retry_delay=timedelta(0),
        )
    result = run_dag(dag)
    assert result.state == "success", result.task_states
    assert _first_try_s(result, "chat", qwen_emulator) < PROMPTLY
    cost = result.xcom("chat", "qwen_cost")
    tries = _tries(cost)
    assert tries[1]["requests"] == 1
    assert _kinds(tries[1]) == ["unconfirmed"]
    assert Decimal(tries[1]["usd_spent"]) > 0  # its prompt and output cap at worst
    assert tries[2]["requests"] == 1
    assert not tries[2]["estimated"]
    assert cost["requests"] == 2


AGENT_PROMPT = "Use step_one, then step_two, and report what they said."


def _agent_dag(dag_id: str, log: Path, slow_tool: threading.Event | None = None) -> DAG:
    runs: list[int] = []

    def step_one() -> str:
        """The first step."""
        with log.open("a") as out:
            out.write("step_one\n")
        return "step_one is done."

    def step_two() -> str:
        """The second step."""
        runs.append(1)
        if slow_tool is not None and len(runs) == 1:  # try 1: still running at the timeout
            slow_tool.wait(SLOW)
            with log.open("a") as out:
                out.write("step_two abandoned\n")
            return "too late"
        with log.open("a") as out:
            out.write("step_two\n")
        return "step_two is done."

    with DAG(dag_id, schedule=None, start_date=START) as dag:
        QwenAgentOperator(
            task_id="agent",
            prompt=AGENT_PROMPT,
            tools=[step_one, step_two],
            parallel_tool_calls=False,
            max_completion_tokens=200,
            execution_timeout=TIMEOUT,
            retries=1,
            retry_delay=timedelta(0),
        )
    return dag


def test_an_agent_that_times_out_mid_turn_keeps_its_journal_and_the_retry_pays_no_turn_twice(
    run_dag, qwen_emulator, storage, tmp_path
):
    log = tmp_path / "tools.log"
    qwen_emulator.add_faults(Fault.latency(0), Fault.latency(0), Fault.latency(SLOW))  # turn 3 hangs
    result = run_dag(_agent_dag("kill_agent_turn", log))
    assert result.state == "success", result.task_states
    assert _first_try_s(result, "agent", qwen_emulator) < PROMPTLY
    assert log.read_text().splitlines() == ["step_one", "step_two"]  # each tool ran once
    requests = qwen_emulator.chat_requests()
    assert len(requests) == 4  # turns 1-3 in try 1; the retry sends turn 3 only, from the journal
    assert len(requests[3].messages) == len(requests[2].messages) == 5
    assert "step_two is done." in result.xcom("agent")
    cost = result.xcom("agent", "qwen_cost")
    tries = _tries(cost)
    assert tries[1]["requests"] == 3
    assert _kinds(tries[1]) == ["unconfirmed"]
    assert tries[2]["requests"] == 1
    assert not tries[2]["estimated"]


def test_an_agent_that_times_out_while_a_tool_runs_stops_the_task_not_just_the_tool(
    run_dag, qwen_emulator, storage, tmp_path
):
    log = tmp_path / "tools.log"
    slow = threading.Event()
    try:
        result = run_dag(_agent_dag("kill_agent_tool", log, slow_tool=slow))
    finally:
        slow.set()
    assert result.state == "success", result.task_states
    assert _first_try_s(result, "agent", qwen_emulator) < PROMPTLY
    _wait(lambda: "step_two abandoned" in log.read_text(), "the abandoned tool did not end")
    lines = log.read_text().splitlines()
    assert lines.count("step_one") == 1  # journaled in try 1: not run again
    assert lines.count("step_two") == 1  # run again by the retry: try 1's never finished
    summary = result.xcom("agent", "qwen_agent")
    calls = [c for turn in summary["per_turn"] for c in turn["tool_calls"]]
    assert [c["outcome"] for c in calls] == ["ok", "ok"]  # the timeout was no tool error of the model's
    requests = qwen_emulator.chat_requests()
    assert len(requests) == 3  # turns 1-2 in try 1; the retry sends only the final turn
    tries = _tries(result.xcom("agent", "qwen_cost"))
    assert (tries[1]["requests"], tries[1]["estimated"]) == (2, False)  # nothing was in flight
    assert tries[2]["requests"] == 1


# -- SIGTERM to a process running a task --------------------------------------------------------


def _child(kind: str, try_number: int, work: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.kill_child", kind, str(try_number), str(work)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _outcome(child: subprocess.Popen[str], timeout: float = 60.0) -> dict:
    out, err = child.communicate(timeout=timeout)
    lines = out.strip().splitlines()
    assert lines, err[-3000:]
    return json.loads(lines[-1])


def test_sigterm_cancels_the_batch_requests_in_flight_flushes_its_checkpoint_and_records_the_try(
    qwen_emulator, tmp_path
):
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "AIRFLOW__QWEN__STORAGE_BASE": f"file://{tmp_path / 'storage'}",
        "AIRFLOW_CONN_QWEN_DEFAULT": qwen_emulator.conn_json(),
    }
    qwen_emulator.add_faults(*[Fault.latency(0)] * 2, *[Fault.latency(SLOW * 2)] * 3)
    child = _child("batch", 1, work, env)
    try:
        _wait(lambda: qwen_emulator._state.in_flight == 3, "try 1 did not send its 5 requests", 60)
        _wait(lambda: len(_journal_records(tmp_path / "storage")) == 2, "the quick answers are not journaled")
        killed = time.monotonic()
        child.send_signal(signal.SIGTERM)
        outcome = _outcome(child)
        assert time.monotonic() - killed < 5  # not when the slow answers would have come
    finally:
        if child.poll() is None:
            child.kill()
    assert outcome["error"] == "QwenTaskKilled"
    assert outcome["open_connections"] == 0  # the requests in flight were cancelled, their sockets closed
    try_1 = outcome["xcom"]["qwen_cost"]
    assert try_1["requests"] == 5
    assert _kinds(try_1) == ["unconfirmed"] * 3
    assert len(_journal_records(tmp_path / "storage")) == 2

    qwen_emulator.reset()
    retry = _child("batch", 2, work, env)
    outcome = _outcome(retry)
    assert outcome["error"] is None, outcome
    assert len(qwen_emulator.chat_requests()) == 3  # only the unfinished items
    cost = outcome["xcom"]["qwen_cost"]
    assert cost["requests"] == 8
    assert [t["requests"] for t in cost["tries"]] == [5, 3]
    assert outcome["result"] == [f"Summarise doc {i}" for i in range(5)]
