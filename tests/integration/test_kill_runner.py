"""SIGTERM to a process whose task runs under Airflow's own task runner (``dag.test()`` in a child
process, as the supervisor signals a task a user marked failed): the try in flight is cancelled
(the emulator sees its connections closed while it is still generating the answers), what
finished is kept (the batch checkpoint, the agent journal), the killed try is counted with its
calls in flight as possibly paid, and the retry sends only what is left, its ``qwen_cost`` covering
both tries. See tests/integration/kill_runner_child.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import psutil
import pytest

from airflow_provider_qwen.testing.faults import Fault

REPO = Path(__file__).resolve().parents[2]
SLOW = 6.0  # seconds a slow answer takes: long past the kill


def _wait(condition, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def _ports_to(child: subprocess.Popen[str], port: int) -> set[int]:
    """The child's local ports of its connections to the emulator."""
    try:
        found = psutil.Process(child.pid).net_connections(kind="tcp")
    except psutil.Error:
        return set()
    return {c.laddr.port for c in found if c.raddr and c.raddr.port == port}


def _served(emulator, ports: set[int]) -> set[int]:
    """Which of ``ports`` the emulator still holds a connection from."""
    peers = set()
    for protocol in list(emulator._server.server_state.connections):
        transport = getattr(protocol, "transport", None)
        peer = transport.get_extra_info("peername") if transport is not None else None
        if peer:
            peers.add(peer[1])
    return peers & ports


def _tries(cost: dict) -> dict[int, dict]:
    return {t["try_number"]: t for t in cost["tries"]}


def _unconfirmed(record: dict) -> int:
    return sum(e["kind"] == "unconfirmed" for e in record["estimates"])


CASES = {
    # kind: (faults queued, requests in flight at the kill, requests of try 1, requests of the retry)
    "chat": ([Fault.latency(SLOW)], 1, 1, 1),
    "agent": ([Fault.latency(0), Fault.latency(0), Fault.latency(SLOW)], 1, 3, 2),  # turn 3 in flight
    "batch": ([*[Fault.latency(0)] * 2, *[Fault.latency(SLOW)] * 3], 3, 5, 3),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_sigterm_to_a_task_runner_cancels_flushes_records_and_the_retry_pays_nothing_twice(
    kind, airflow_db, qwen_emulator, tmp_path
):
    faults, in_flight, first, retried = CASES[kind]
    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "AIRFLOW__QWEN__STORAGE_BASE": f"file://{tmp_path / 'storage'}",
        "AIRFLOW_CONN_QWEN_DEFAULT": qwen_emulator.conn_json(),
    }
    qwen_emulator.add_faults(*faults)
    port = int(qwen_emulator.base_url.split(":")[-1].split("/")[0])
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.kill_runner_child", kind, str(work)],
        cwd=REPO,
        env=env,
        stdout=(tmp_path / "out.log").open("w"),  # files, not pipes: dag.test logs more than a pipe holds
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(
            lambda: (
                qwen_emulator._state.in_flight == in_flight and len(qwen_emulator.chat_requests()) == first
            ),
            f"try 1 did not get its {in_flight} slow request(s) in flight",
            120,
        )
        ports = _ports_to(child, port)
        assert _served(qwen_emulator, ports)  # the requests in flight hold their connections
        killed = time.monotonic()
        child.send_signal(signal.SIGTERM)  # what the supervisor does to a task marked failed
        _wait(lambda: (work / "retry.json").exists(), "the killed try did not unwind", 10)
        assert time.monotonic() - killed < 4  # not when the slow answers would have come
        assert json.loads((work / "retry.json").read_text())["open_connections"] == 0
        assert qwen_emulator._state.in_flight == in_flight  # still generating: the task did not wait
        assert not _served(qwen_emulator, ports)  # ... and the emulator saw the connections closed
        (work / "go").touch()
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    out = (tmp_path / "out.log").read_text()
    assert child.returncode == 0, out[-3000:]
    outcome = json.loads([line for line in out.splitlines() if line.startswith('{"state"')][-1])
    assert outcome["state"] == "success", out[-3000:]

    requests = qwen_emulator.chat_requests()
    assert len(requests) == first + retried  # the retry sent only what the killed try had not finished
    cost = outcome["xcom"]["qwen_cost"]
    tries = _tries(cost)
    assert tries[1]["requests"] == first
    assert _unconfirmed(tries[1]) == in_flight
    assert tries[2]["requests"] == retried
    assert tries[2]["estimated"] is False
    assert cost["requests"] == first + retried
    _wait(lambda: qwen_emulator._state.in_flight == 0, "the emulator did not finish the slow answers", 30)
    _, usd = qwen_emulator.total_charged()
    assert Decimal(cost["usd_spent"]) >= usd  # every answer billed, the lost ones at their worst case
    if kind == "agent":
        assert (work / "tools.log").read_text().splitlines() == ["step_one", "step_two", "step_three"]
        assert len(requests[-1].messages) > len(requests[first - 1].messages)  # resumed from the journal
        assert "step_three is done." in outcome["xcom"]["return_value"]
    if kind == "batch":
        assert outcome["xcom"]["return_value"] == [f"Summarise doc {i}" for i in range(5)]
        retried_items = {r.body["messages"][-1]["content"] for r in requests[first:]}
        answered = {r.body["messages"][-1]["content"] for r in requests[:2]}
        assert retried_items.isdisjoint(answered)
        assert len(retried_items) == 3
